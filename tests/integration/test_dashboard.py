"""The dashboard in real headless Chromium: a gateway with recorded traffic (in-process test
backends, SQLite store), the page loaded over HTTP with the admin key and with a tenant key;
the figures it shows are checked against sums taken straight from the store's rows, and a
screenshot is saved (bench/out/dashboard.png).

Needs Debian's ``chromium`` at /usr/bin/chromium (skipped with a reason otherwise)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gateway.app import create_app
from gateway.backends.replay import ThreadedServer
from gateway.config import Config
from gateway.store.database import create_engine
from gateway.store.models import outcomes, requests, tenants
from tests.support.fakes import FakeCaller, Script
from tests.support.harness import ROOT, backend, config_dict, settings_for

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
ADMIN = "admin-secret-for-tests"
P_IN, P_OUT = Decimal("0.00001"), Decimal("0.00003")


def _policies() -> dict[str, Any]:
    """Two policies in whichever schema the gateway's config has."""
    if "routing" not in Config.model_fields:
        return {
            "policies": {
                "thrifty": {"candidates": ["cheap", "premium"]},
                "best": {"candidates": ["premium"]},
            }
        }

    def engine(cands: list[str]) -> dict[str, Any]:
        return {
            "candidates": cands,
            "predictor_fallback": cands[0],
            "objective": {
                "kind": "cheapest_adequate",
                "min_success": 0.0,
                "on_no_adequate": "most_capable",
            },
        }

    return {
        "policies": {"thrifty": engine(["cheap", "premium"]), "best": engine(["premium"])},
        "routing": {"default": "thrifty"},
        "predictor": {"enabled": False},
    }


class _Figures(HTMLParser):
    """Every element with a data-testid: its data-* attributes and text."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[dict[str, Any]] = []
        self.ready: str | None = None
        self._open: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.ready = a.get("data-ready")
        if "data-testid" in a or "data-field" in a:
            item = {"tag": tag, **a, "text": ""}
            self.items.append(item)
            self._open.append(item)
        elif self._open:
            self._open.append({})

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for item in self._open:
            if item:
                item["text"] += data

    def one(self, testid: str) -> dict[str, Any]:
        (item,) = [i for i in self.items if i.get("data-testid") == testid]
        return item

    def all(self, testid: str) -> list[dict[str, Any]]:
        return [i for i in self.items if i.get("data-testid") == testid]


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=15000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _page(url: str) -> _Figures:
    run = _chromium("--dump-dom", url)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = _Figures()
    figures.feed(run.stdout)
    assert figures.ready == "1", run.stdout[-3000:]
    return figures


Rows = list[dict[str, Any]]


def _store(url: str) -> tuple[Rows, Rows, dict[str, str]]:
    async def read() -> tuple[Rows, Rows, dict[str, str]]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                reqs = [dict(r) for r in (await conn.execute(select(requests))).mappings()]
                outs = [dict(r) for r in (await conn.execute(select(outcomes))).mappings()]
                names = {
                    n: i for i, n in (await conn.execute(select(tenants.c.id, tenants.c.name)))
                }
                return reqs, outs, names
        finally:
            await engine.dispose()

    return asyncio.run(read())


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian chromium (apt-get install chromium)"
)
def test_dashboard_in_headless_chromium_matches_the_store(tmp_path: Path, sqlite_url: str) -> None:
    cfg = config_dict(
        tmp_path,
        backends=[
            backend("cheap"),
            backend("premium", input_cost_per_token=str(P_IN), output_cost_per_token=str(P_OUT)),
        ],
    )
    cfg.pop("aliases", None)
    cfg.update(_policies())
    caller = FakeCaller({"cheap": Script(fail=[503, 503])})  # below the breaker threshold
    server = ThreadedServer(
        create_app(settings_for(cfg, sqlite_url, admin_key=ADMIN), caller=caller)
    )
    with server.running():
        http = httpx.Client(base_url=server.url, timeout=30)

        def key(tenant: str) -> str:
            r = http.post(
                "/admin/keys", json={"tenant": tenant}, headers={"authorization": f"Bearer {ADMIN}"}
            )
            return str(r.json()["key"])

        acme, globex = key("acme"), key("globex")
        plan = [(acme, "tollgate/thrifty", f"a{i}", i % 3 != 0) for i in range(6)]
        plan += [(acme, "tollgate/best", f"b{i}", True) for i in range(3)]
        plan += [(globex, "tollgate/best", "g0", False), (acme, "tollgate/thrifty", "u0", None)]
        for k, model, task, ok in plan:
            auth = {"authorization": f"Bearer {k}"}
            resp = http.post(
                "/v1/chat/completions",
                headers={**auth, "x-tollgate-task-id": task},
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": "w " * (3 + len(task))}],
                },
            )
            assert resp.status_code == 200, resp.text
            if ok is not None:
                fb = http.post("/v1/feedback", json={"task_id": task, "success": ok}, headers=auth)
                assert fb.status_code == 201, fb.text
        admin_view = _page(f"{server.url}/dashboard#key={ADMIN}")
        tenant_view = _page(f"{server.url}/dashboard#key={globex}")
        shot = tmp_path / "dashboard.png"
        run = _chromium(
            f"--screenshot={shot}", "--window-size=1280,1700", f"{server.url}/dashboard#key={ADMIN}"
        )
        assert run.returncode == 0 and shot.stat().st_size > 10_000, run.stderr[-2000:]
        out = ROOT.parent / "bench" / "out"  # harness.ROOT is tests/; bench/out is git-ignored
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / "dashboard.png")

    reqs, outs, names = _store(sqlite_url)
    globex_tid = names["globex"]
    verdict = {o["task_id"]: bool(o["success"]) for o in outs}
    tasks = {r["task_id"] for r in reqs}
    spend = sum(Decimal(str(r["cost_usd"])) for r in reqs)
    ok_tasks = sum(1 for t in tasks if verdict.get(t) is True)
    assert Decimal(admin_view.one("kpi-spend")["data-value"]) == spend
    assert int(admin_view.one("kpi-tasks")["data-value"]) == len(tasks) == 11
    assert int(admin_view.one("kpi-succeeded")["data-value"]) == ok_tasks == 7
    assert int(admin_view.one("kpi-unknown")["data-value"]) == 1
    assert abs(Decimal(admin_view.one("kpi-cpst")["data-value"]) - spend / ok_tasks) < Decimal(
        "1e-9"
    )
    assert admin_view.one("kpi-cpst")["text"].startswith("$")
    assert int(admin_view.one("kpi-requests")["data-value"]) == len({r["request_id"] for r in reqs})

    # cost per successful task per policy, from the rows: all spend of the policy's tasks
    rows: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for item in admin_view.items:
        if item.get("data-testid", "").endswith("-row"):  # a table row starts
            current = {} if item["data-testid"] == "policy-row" else None
        elif current is not None and "data-field" in item:
            current[item["data-field"]] = item["data-value"]
            if item["data-field"] == "policy":
                rows[item["data-value"]] = current
    for policy in ("thrifty", "best"):
        mine = [r for r in reqs if r["policy"] == policy]
        p_tasks = {r["task_id"] for r in mine}
        p_ok = sum(1 for t in p_tasks if verdict.get(t) is True)
        p_spend = sum(Decimal(str(r["cost_usd"])) for r in mine)
        shown = rows[policy]
        assert int(shown["tasks"]) == len(p_tasks) and int(shown["succeeded"]) == p_ok
        assert Decimal(shown["spend"]) == p_spend
        assert abs(Decimal(shown["cpst"]) - p_spend / p_ok) < Decimal("1e-9")

    # backend mix bars carry each backend's spend; day bars sum to the total
    bars = {b["data-label"]: Decimal(b["data-value"]) for b in admin_view.all("backend-bar")}
    assert bars["cheap"] > 0 and bars["premium"] > 0
    for name in ("cheap", "premium"):
        assert bars[name] == sum(Decimal(str(r["cost_usd"])) for r in reqs if r["backend"] == name)
    assert sum(Decimal(b["data-value"]) for b in admin_view.all("day-bar")) == spend

    # savings: every answered request priced on premium, the most expensive backend
    answered = [r for r in reqs if r["status"] == "ok"]
    base = sum(P_IN * r["prompt_tokens"] + P_OUT * r["completion_tokens"] for r in answered)
    assert admin_view.one("baseline")["text"] == "premium"
    assert Decimal(admin_view.one("saved")["data-value"]) == base - spend

    # the two scripted 503s of "cheap" are listed among recent failures, and failed tasks too
    failures = [f["text"] for f in admin_view.all("failure-row")]
    assert sum("error" in f for f in failures) == 2
    assert any("failed (feedback)" in f for f in failures)
    assert len(admin_view.all("spender-row")) == 2  # the admin sees both tenants
    # a tenant key sees its own tenant only
    g_spend = sum(Decimal(str(r["cost_usd"])) for r in reqs if r["tenant_id"] == globex_tid)
    assert Decimal(tenant_view.one("kpi-spend")["data-value"]) == g_spend
    assert int(tenant_view.one("kpi-tasks")["data-value"]) == 1
    assert int(tenant_view.one("kpi-succeeded")["data-value"]) == 0
