"""Service tests of the reports (``GET /v1/spend``, ``gateway.analytics.reports``) on SQLite and
real PostgreSQL: recorded traffic with retries, fallbacks and feedback, checked against figures
recomputed here straight from the store's rows."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.analytics.reports import histogram_percentile, latency_bucket, parse_when
from gateway.store.database import create_engine
from gateway.store.models import LATENCY_BUCKETS, outcomes, requests
from tests.support.fakes import FakeCaller, Script
from tests.support.harness import (
    app_client,
    backend,
    chat_body,
    config_dict,
    create_key,
    settings_for,
)

ADMIN = {"authorization": "Bearer admin-secret-for-tests"}
P_IN, P_OUT = Decimal("0.00001"), Decimal("0.00003")


def _config(tmp_path: Path) -> dict[str, Any]:
    cfg = config_dict(
        tmp_path,
        backends=[
            backend("cheap", tags=["local"]),
            backend(
                "premium",
                input_cost_per_token=str(P_IN),
                output_cost_per_token=str(P_OUT),
                tags=["api"],
            ),
        ],
    )
    # backends only: these reports do not depend on how policies are written
    cfg.pop("policies", None)
    cfg.pop("routing", None)
    cfg.pop("aliases", None)
    return cfg


def _rows(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    async def read() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                reqs = [dict(r) for r in (await conn.execute(select(requests))).mappings()]
                outs = [dict(r) for r in (await conn.execute(select(outcomes))).mappings()]
                return reqs, outs
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _traffic(client: TestClient) -> dict[str, str]:
    """acme: four tasks (one retried then escalated, one of two requests, one unknown);
    globex: one."""
    acme, globex = create_key(client, "acme"), create_key(client, "globex")
    a = {"authorization": f"Bearer {acme}"}

    def ask(model: str, task: str, key: dict[str, str] = a, words: str = "one two three") -> str:
        resp = client.post(
            "/v1/chat/completions",
            json=chat_body(model=model, text=words),
            headers={**key, "x-tollgate-task-id": task},
        )
        assert resp.status_code == 200, resp.text
        return resp.headers["x-tollgate-request-id"]

    ask("cheap", "fallback")  # cheap fails (scripted), its retry answers: 2 attempts
    ask("premium", "fallback", words="escalated question here")
    ask("cheap", "wrong", words="a b c d e f")
    ask("cheap", "two-step")
    ask("premium", "two-step", words="escalated question here")
    ask("premium", "good")
    ask("premium", "other", key={"authorization": f"Bearer {globex}"})
    for task, ok, key in (
        ("fallback", True, a),
        ("wrong", False, a),
        ("good", True, a),
        ("other", True, {"authorization": f"Bearer {globex}"}),
    ):
        fb = client.post("/v1/feedback", json={"task_id": task, "success": ok}, headers=key)
        assert fb.status_code == 201, fb.text
    # a correction of "good" to a failure, then back: only the latest verdict counts
    client.post("/v1/feedback", json={"task_id": "good", "success": False}, headers=a)
    client.post("/v1/feedback", json={"task_id": "good", "success": True}, headers=a)
    return {"acme": acme, "globex": globex}


def _final(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """A task's final attempt: its last successful one, else its last one."""
    ok = [a for a in attempts if a["status"] == "ok"] or attempts
    return max(ok, key=lambda a: (a["created_at"], a["attempt"]))


def _expected(
    reqs: list[dict[str, Any]], outs: list[dict[str, Any]], tenant: str | None, key: Any
) -> dict[str, dict[str, Any]]:
    """The report recomputed from raw rows: attempts grouped by ``key(attempt)``, tasks by
    ``key(final attempt)``."""
    verdict = {o["task_id"]: bool(o["success"]) for o in outs}  # one feedback row per task here
    mine = [r for r in reqs if tenant is None or r["tenant_id"] == tenant]
    groups: dict[str, dict[str, Any]] = {}

    def group(name: str) -> dict[str, Any]:
        return groups.setdefault(
            name,
            {
                "attempts": 0,
                "errors": 0,
                "spend": Decimal(0),
                "tasks": 0,
                "ok": 0,
                "bad": 0,
                "lat": [],
                "requests": 0,
                "pt": 0,
                "task_spend": Decimal(0),
            },
        )

    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in mine:
        g = group(key(r))
        g["attempts"] += 1
        g["requests"] += r["attempt"] == 1
        g["errors"] += r["status"] != "ok"
        g["spend"] += Decimal(str(r["cost_usd"]))
        g["pt"] += r["prompt_tokens"] or 0
        if r["status"] == "ok":
            g["lat"].append(r["latency_ms"])
        by_task.setdefault(r["task_id"], []).append(r)
    for task_id, attempts in by_task.items():
        g = group(key(_final(attempts)))
        g["tasks"] += 1
        g["ok"] += verdict.get(task_id) is True
        g["bad"] += verdict.get(task_id) is False
        g["task_spend"] += sum(Decimal(str(a["cost_usd"])) for a in attempts)
    for g in groups.values():
        hist = [0] * LATENCY_BUCKETS
        for ms in g["lat"]:
            hist[latency_bucket(ms)] += 1
        g["p50"] = histogram_percentile(hist, 0.5)
    return groups


def _check(row: dict[str, Any], exp: dict[str, Any], kind: str = "spend") -> None:
    assert row["attempts"] == exp["attempts"] and row["requests"] == exp["requests"]
    assert Decimal(row["spend_usd"]) == exp["spend"]
    assert Decimal(row["task_spend_usd"]) == exp["task_spend"]
    assert row["prompt_tokens"] == exp["pt"]
    assert (row["tasks"], row["succeeded"], row["failed"]) == (exp["tasks"], exp["ok"], exp["bad"])
    assert row["unknown"] == exp["tasks"] - exp["ok"] - exp["bad"]
    assert row["error_rate"] == round(exp["errors"] / exp["attempts"], 4)
    money = exp["task_spend"] if kind == "tasks" else exp["spend"]
    if exp["ok"]:
        cpst = money / exp["ok"]
        assert abs(Decimal(row["cost_per_successful_task_usd"]) - cpst) < Decimal("1e-9")
    else:
        assert row["cost_per_successful_task_usd"] is None
    if exp["p50"] is None:
        assert row["p50_latency_ms"] is None
    else:
        assert row["p50_latency_ms"] == pytest.approx(exp["p50"], abs=0.051)
        true_median = sorted(exp["lat"])[len(exp["lat"]) // 2]
        assert abs(row["p50_latency_ms"] - true_median) <= 0.25 * true_median + 1.25


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_spend_report_matches_the_store(
    db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("sqlite_url" if db == "sqlite" else "pg_url")
    caller = FakeCaller({"cheap": Script(fail=[503])})
    with app_client(settings_for(_config(tmp_path), url), caller) as (client, _):
        keys = _traffic(client)
        acme = {"authorization": f"Bearer {keys['acme']}"}
        by_backend = client.get("/v1/spend?group_by=backend", headers=acme).json()
        by_tag = client.get("/v1/spend?group_by=tag", headers=acme).json()
        by_day = client.get("/v1/spend?group_by=day", headers=acme).json()
        by_tenant = client.get("/v1/spend?group_by=tenant", headers=ADMIN).json()
        by_key = client.get("/v1/spend?group_by=key", headers=ADMIN).json()
        tasks = client.get("/v1/spend?kind=tasks&group_by=backend", headers=acme).json()
        future = client.get("/v1/spend?start=2999-01-01", headers=acme).json()
        vs_cheap = client.get("/v1/spend?baseline=cheap", headers=acme).json()

    reqs, outs = _rows(url)
    acme_tid = next(r["tenant_id"] for r in reqs if r["backend"] == "cheap")
    exp = _expected(reqs, outs, acme_tid, lambda r: r["backend"])
    assert {r["group"] for r in by_backend["rows"]} == {"cheap", "premium"}
    for row in by_backend["rows"]:
        _check(row, exp[row["group"]])
    tag_of = {"cheap": "local", "premium": "api"}
    exp_tag = _expected(reqs, outs, acme_tid, lambda r: tag_of[r["backend"]])
    for row in by_tag["rows"]:
        _check(row, exp_tag[row["group"]])
    (total_exp,) = _expected(reqs, outs, acme_tid, lambda r: "all").values()
    _check(by_backend["total"], total_exp)
    (day,) = by_day["rows"]
    _check(day, total_exp)

    # hand-checked: acme has 4 tasks, 2 succeeded, 1 failed, 2 unknown ("two-step" has no
    # feedback); its cost per successful task is all its spend over the 2 successes
    t = by_backend["total"]
    assert (t["tasks"], t["succeeded"], t["failed"], t["unknown"]) == (4, 2, 1, 1)
    assert t["requests"] == 6 and t["attempts"] == 7
    assert t["success_rate"] == round(2 / 3, 4)
    assert t["fallback_rate"] == round(1 / 7, 4) and t["error_rate"] == round(1 / 7, 4)

    # tenants: admin sees both; globex's row holds only its own traffic
    assert {r["label"] for r in by_tenant["rows"]} == {"acme", "globex"}
    exp_tenant = _expected(reqs, outs, None, lambda r: r["tenant_id"])
    for row in by_tenant["rows"]:
        _check(row, exp_tenant[row["group"]])
    assert {r["label"].split("/")[0] for r in by_key["rows"]} == {"acme", "globex"}

    # tasks report: a task is grouped by the backend that answered it last
    answered = {r["group"]: r for r in tasks["rows"]}
    assert answered["premium"]["tasks"] == 3  # fallback, two-step, good
    assert answered["cheap"]["tasks"] == 1 and answered["cheap"]["failed"] == 1
    for row in tasks["rows"]:
        _check(row, exp[row["group"]], "tasks")
    # whole tasks: premium's task spend includes the cheap attempts of the tasks it answered
    assert Decimal(answered["premium"]["task_spend_usd"]) > Decimal(
        answered["premium"]["spend_usd"]
    )
    assert Decimal(tasks["total"]["task_spend_usd"]) == total_exp["spend"]

    # savings: the ok attempts' tokens priced on the most expensive backend (premium)
    ok = [r for r in reqs if r["tenant_id"] == acme_tid and r["status"] == "ok"]
    base = sum(P_IN * r["prompt_tokens"] + P_OUT * r["completion_tokens"] for r in ok)
    s = by_backend["savings"]
    assert s["baseline"] == "premium"
    assert Decimal(s["baseline_cost_usd"]) == base
    assert Decimal(s["saved_usd"]) == base - total_exp["spend"]
    assert s["baseline_success_rate"] == 1.0  # premium answered fallback and good: both ok
    assert vs_cheap["savings"]["baseline"] == "cheap"
    assert Decimal(vs_cheap["savings"]["saved_usd"]) < 0  # all-cheap would have been cheaper

    assert future["rows"] == [] and future["total"]["tasks"] == 0


def _shift_days(url: str, days: int) -> None:
    """Move every attempt and task ``days`` into the past (as if recorded then)."""
    from gateway.store.models import tasks

    async def shift() -> None:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                for table in (requests, tasks):
                    rows = (await conn.execute(select(table.c.id, table.c.created_at))).all()
                    for rid, at in rows:
                        await conn.execute(
                            table.update()
                            .where(table.c.id == rid)
                            .values(created_at=at - timedelta(days=days))
                        )
        finally:
            await engine.dispose()

    asyncio.run(shift())


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_rollups_agree_with_raw_rows(
    db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Reports read from daily roll-ups equal the same reports computed from raw rows, and a
    roll-up picks up feedback given after the day was summarised."""
    from gateway.analytics.reports import ReportQuery, refresh_rollups, report

    url = request.getfixturevalue("sqlite_url" if db == "sqlite" else "pg_url")
    caller = FakeCaller({"cheap": Script(fail=[503])})
    with app_client(settings_for(_config(tmp_path), url), caller) as (client, _):
        keys = _traffic(client)
        _shift_days(url, 2)  # yesterday-but-one: a closed day
        # new traffic today, in an old task and a new one: raw rows beside the roll-ups
        acme = {"authorization": f"Bearer {keys['acme']}"}
        for task in ("two-step", "today"):
            resp = client.post(
                "/v1/chat/completions",
                json=chat_body(model="premium"),
                headers={**acme, "x-tollgate-task-id": task},
            )
            assert resp.status_code == 200

    prices = {"cheap": None, "premium": None}
    tags = {"local": ("cheap",), "api": ("premium",)}

    async def compare() -> list[str]:
        from gateway.analytics.reports import parse_when

        engine = create_engine(url)
        try:
            done = await refresh_rollups(engine)
            assert len(done) == 2  # the closed day with traffic, and yesterday (empty)
            acme_tid = _tenant_id(reqs_now, "cheap")
            cases = [(None, None, g) for g in ("backend", "policy", "tenant", "key", "tag", "day")]
            cases += [(acme_tid, parse_when("3d"), "backend"), (None, parse_when("50h"), "day")]
            for tenant, start, group_by in cases:
                for kind in ("spend", "tasks"):
                    q = ReportQuery(group_by, start, None, tenant, tags)  # type: ignore[arg-type]
                    raw = await report(engine, kind, q, prices=prices, rollups=False)
                    rolled = await report(engine, kind, q, prices=prices)
                    assert rolled.as_dict() == raw.as_dict(), (kind, group_by, start)
            # feedback for a task of the summarised day: the next report re-summarises it
            from gateway.outcomes.recording import Outcome, record_outcome

            two_step = next(
                r["task_id"]
                for r in reqs_now
                if r["backend"] == "cheap"
                and r["status"] == "ok"
                and r["attempt"] == 1
                and r["prompt_tokens"] == 3
                and r["task_id"] != wrong_task
            )
            await record_outcome(
                engine,
                Outcome(
                    tenant_id=_tenant_id(reqs_now, "cheap"),
                    task_id=two_step,
                    source="validator",
                    success=True,
                ),
            )
            q = ReportQuery("policy", None, None, None, tags)
            rolled = await report(engine, "tasks", q)
            raw = await report(engine, "tasks", q, rollups=False)
            assert rolled.as_dict() == raw.as_dict()
            return await refresh_rollups(engine)
        finally:
            await engine.dispose()

    reqs_now, outs_now = _rows(url)
    wrong_task = next(o["task_id"] for o in outs_now if not o["success"])
    assert asyncio.run(compare()) == []  # nothing left to do


def _tenant_id(reqs: list[dict[str, Any]], backend: str) -> str:
    return str(next(r["tenant_id"] for r in reqs if r["backend"] == backend))


def test_spend_scoping_and_errors(tmp_path: Path, sqlite_url: str) -> None:
    with app_client(settings_for(_config(tmp_path), sqlite_url)) as (client, _):
        keys = _traffic(client)
        globex = {"authorization": f"Bearer {keys['globex']}"}
        mine = client.get("/v1/spend?group_by=tenant", headers=globex).json()
        assert [r["label"] for r in mine["rows"]] == ["globex"] and mine["tenant"] == "globex"
        one = client.get("/v1/spend?tenant=acme", headers=ADMIN).json()
        assert one["tenant"] == "acme" and one["total"]["tasks"] == 4
        for path, status, param in (
            ("/v1/spend?tenant=acme", 400, "tenant"),
            ("/v1/spend?group_by=colour", 400, "group_by"),
            ("/v1/spend?kind=nope", 400, "kind"),
            ("/v1/spend?start=yesterdayish", 400, "start"),
            ("/v1/spend?baseline=gpt-9", 400, "baseline"),
        ):
            resp = client.get(path, headers=globex)
            assert resp.status_code == status, (path, resp.text)
            assert resp.json()["error"]["param"] == param
        assert client.get("/v1/spend?tenant=nobody", headers=ADMIN).status_code == 404
        assert client.get("/v1/spend").status_code == 401


def test_parse_when() -> None:
    now = parse_when("2026-03-10T12:00:00+00:00")
    assert now is not None
    assert parse_when("7d", now=now) == parse_when("2026-03-03T12:00:00Z")
    assert parse_when("2026-03-01") == parse_when("2026-03-01T00:00:00+00:00")
    assert parse_when(None) is None
    with pytest.raises(ValueError, match="ISO"):
        parse_when("last tuesday")


def test_cli_report_agrees_with_http(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import csv
    import io
    import json

    import yaml
    from typer.testing import CliRunner

    from gateway.cli.main import app

    cfg = _config(tmp_path)
    with app_client(settings_for(cfg, sqlite_url), FakeCaller({"cheap": Script(fail=[503])})) as (
        client,
        _,
    ):
        _traffic(client)
        http = client.get("/v1/spend?kind=tasks&group_by=policy&tenant=acme", headers=ADMIN).json()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("TOLLGATE_DATABASE_URL", sqlite_url)
    runner = CliRunner()
    base = ["report", "tasks", "--group-by", "policy", "--tenant", "acme", "-c", str(path)]
    as_json = runner.invoke(app, [*base, "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["rows"] == http["rows"] and data["total"] == http["total"]
    assert data["savings"] == http["savings"] and data["savings"]["baseline"] == "premium"
    as_csv = runner.invoke(app, [*base, "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["group"] for r in rows] == [*(r["label"] for r in http["rows"]), "TOTAL"]
    assert rows[-1]["cost_per_successful_task_usd"] == http["total"]["cost_per_successful_task_usd"]
    table = runner.invoke(app, [*base])
    assert table.exit_code == 0 and "TOTAL" in table.stdout and "savings vs always" in table.stdout
    bad = runner.invoke(app, ["report", "spend", "--group-by", "colour", "-c", str(path)])
    assert bad.exit_code == 2
    unknown = runner.invoke(app, ["report", "spend", "--tenant", "nobody", "-c", str(path)])
    assert unknown.exit_code == 1
    rebuilt = runner.invoke(app, ["report", "refresh", "--rebuild", "-c", str(path)])
    assert rebuilt.exit_code == 0 and "summarised 0 day(s)" in rebuilt.stderr  # all today


def test_report_cli_group_choices_are_the_reports() -> None:
    """``tollgate report --help`` spells the groupings out (to load no SQL); they must stay
    the reports' own."""
    from gateway.analytics.reports import GROUP_BYS
    from gateway.cli.report import GROUP_CHOICES

    assert GROUP_CHOICES == GROUP_BYS
