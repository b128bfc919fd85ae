"""Budgets with windows and scopes over real HTTP (issue 13, issue 11): `tollgate serve`
processes on the shared Redis (a unique prefix) in front of the fake upstream.

* a daily tenant budget (Europe/Paris) refuses past its limit with the 429 `budget_exceeded`
  of today's key budgets, and a replica whose clock reads the next Paris day admits again
  (``TOLLGATE_CLOCK_OFFSET_S``: the clock is injected, nobody sleeps a day); the day's counter
  in Redis expires after its window;
* a policy budget (set with `tollgate budgets set`) and a tag budget (set with the admin API)
  are each enforced on their requests only;
* 100 concurrent requests against a small budget never overshoot it (recorded costs in SQL);
* issue 11: `max_completion_tokens` cannot slip past a `max_tokens: 1` reservation, an
  uncapped request is capped at what was reserved, absurd `max_tokens` and report ages are 400.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import redis

from bench.gateway_process import GatewayProcess
from gateway.devtools.fake_upstream import FakeUpstream
from tests.support.harness import REDIS_URL

pytestmark = pytest.mark.integration

ADMIN = {"authorization": "Bearer admin-secret-0123456789"}
DAILY_LIMIT = Decimal("0.0002")
CONC_LIMIT = Decimal("0.0005")
TENANTS = ("daily-t", "pol-t", "tag-t", "conc-t", "cap-t")


def gateway_config(upstream: FakeUpstream, work: Path, prefix: str) -> dict[str, Any]:
    def entry(name: str, model: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": f"openai/{model}",
            "api_base": upstream.base_url,
            "api_key": "os.environ/FAKE_KEY",
            "input_cost_per_token": "0.000001",
            "output_cost_per_token": "0.000002",
            "max_retries": 0,
            "timeout_s": 20,
        }

    return {
        "backends": [entry("fake", "fake-model"), entry("long", "long-model")],
        "policies": {
            "default": {
                "candidates": ["fake"],
                "objective": {"kind": "cheapest_adequate", "min_success": 0.1},
                "predictor_fallback": "first_candidate",
            }
        },
        "routing": {"default": "default"},
        "predictor": {"enabled": False},
        "store": {"spool_dir": str(work / "spool"), "flush_interval_ms": 20},
        "redis": {"key_prefix": prefix},
        "server": {"key_cache_ttl_s": 0, "reserve_output_tokens": 50},
        "budgets": {
            "timezone": "Europe/Paris",
            "db_cache_s": 0,
            "limits": [
                {
                    "scope": "tenant",
                    "name": "daily-t",
                    "max_usd": str(DAILY_LIMIT),
                    "window": "day",
                },
                {"scope": "tenant", "name": "conc-t", "max_usd": str(CONC_LIMIT), "window": "day"},
            ],
        },
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("budgets")
    prefix = f"tgtest:{uuid.uuid4().hex[:8]}:"
    models = {"long-model": {"completion_tokens": 5000}}
    with FakeUpstream(port=0, completion_tokens=10, latency_ms=50, models=models) as upstream:
        env = {
            "FAKE_KEY": "upstream-secret",
            "TOLLGATE_DATABASE_URL": f"sqlite:///{work}/tollgate.db",
            "TOLLGATE_REDIS_URL": REDIS_URL,
            "TOLLGATE_ADMIN_KEY": ADMIN["authorization"].removeprefix("Bearer "),
        }
        config = gateway_config(upstream, work, prefix)
        gw = GatewayProcess(config, work, env)
        keys = {}
        for tenant in TENANTS:
            budget = ["--max-budget-usd", "0.001"] if tenant == "cap-t" else []
            made = gw.cli("keys", "create", "--tenant", tenant, *budget)
            assert made.returncode == 0, made.stderr
            keys[tenant] = made.stdout.strip().splitlines()[-1]
        client = redis.Redis.from_url(REDIS_URL)
        try:
            with gw:
                yield {
                    "gw": gw,
                    "upstream": upstream,
                    "keys": keys,
                    "config": config,
                    "env": env,
                    "work": work,
                    "redis": client,
                    "prefix": prefix,
                }
        finally:
            stale = list(client.scan_iter(match=prefix + "*"))
            if stale:
                client.delete(*stale)
            client.close()


def chat(stack: dict[str, Any], tenant: str, url: str | None = None, **kw: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {stack['keys'][tenant]}", **kw.pop("headers", {})}
    body = {
        "model": kw.pop("model", "fake"),
        "messages": [{"role": "user", "content": "hello there world"}],
        "max_tokens": 10,
        **kw,
    }
    return httpx.post(
        f"{url or stack['gw'].url}/v1/chat/completions", json=body, headers=headers, timeout=30
    )


def until_refused(stack: dict[str, Any], tenant: str, n: int = 60, **kw: Any) -> int:
    for i in range(n):
        resp = chat(stack, tenant, **kw)
        if resp.status_code != 200:
            assert resp.status_code == 429, resp.text
            assert resp.json()["error"]["code"] == "budget_exceeded"
            return i
    raise AssertionError(f"{tenant} was never refused")


def recorded(stack: dict[str, Any], sql: str, *args: Any) -> Decimal:
    time.sleep(0.3)  # the writer flushes every 20 ms
    with sqlite3.connect(stack["work"] / "tollgate.db") as db:
        (value,) = db.execute(sql, args).fetchone()
    return Decimal(str(value or 0))


def tenant_spend(stack: dict[str, Any], tenant: str) -> Decimal:
    return recorded(
        stack,
        "SELECT SUM(CAST(r.cost_usd AS TEXT)) FROM requests r JOIN tenants t "
        "ON t.id = r.tenant_id WHERE t.name = ?",
        tenant,
    )


def test_daily_tenant_budget_refuses_then_rolls_over(stack: dict[str, Any]) -> None:
    admitted = until_refused(stack, "daily-t")
    assert admitted >= 3
    assert tenant_spend(stack, "daily-t") <= DAILY_LIMIT
    assert chat(stack, "pol-t").status_code == 200  # another tenant is not held by it
    rows = httpx.get(f"{stack['gw'].url}/admin/budgets", headers=ADMIN).json()["data"]
    row = next(r for r in rows if r["name"] == "daily-t")
    today = datetime.now(ZoneInfo("Europe/Paris")).strftime("%Y-%m-%d")
    assert row["ledger_scope"].endswith(f":day:{today}")
    ttl = stack["redis"].pttl(f"{stack['prefix']}budget:{row['ledger_scope']}:spent")
    assert 0 < ttl <= (timedelta(days=2) + timedelta(hours=1)).total_seconds() * 1000
    # a replica whose clock reads 00:01 tomorrow in Paris: a new day, a new budget
    paris = datetime.now(ZoneInfo("Europe/Paris"))
    midnight = (paris + timedelta(days=1)).replace(hour=0, minute=1, second=0, microsecond=0)
    offset = (midnight - paris).total_seconds()
    env = {**stack["env"], "TOLLGATE_CLOCK_OFFSET_S": str(offset)}
    with GatewayProcess(stack["config"], stack["work"], env) as tomorrow:
        assert chat(stack, "daily-t", url=tomorrow.url).status_code == 200
        assert chat(stack, "daily-t").status_code == 429  # today's replica still refuses


def test_policy_budget_set_with_the_cli(stack: dict[str, Any]) -> None:
    gw = stack["gw"]
    made = gw.cli(
        "budgets",
        "set",
        "--scope",
        "policy",
        "--name",
        "default",
        "--max-usd",
        "0.0001",
        "--window",
        "month",
    )
    assert made.returncode == 0, made.stderr
    listing = gw.cli("budgets", "list")
    assert "policy" in listing.stdout and "default" in listing.stdout
    try:
        assert until_refused(stack, "pol-t", model="tollgate/default") >= 2
        assert chat(stack, "pol-t").status_code == 200  # pinned: no policy, not this budget
        spent = recorded(
            stack, "SELECT SUM(CAST(cost_usd AS TEXT)) FROM requests WHERE policy = 'default'"
        )
        assert 0 < spent <= Decimal("0.0001")
    finally:
        assert gw.cli("budgets", "delete", "--scope", "policy", "--name", "default").returncode == 0


def test_tag_budget_set_with_the_admin_api(stack: dict[str, Any]) -> None:
    url = stack["gw"].url
    put = httpx.put(
        f"{url}/admin/budgets",
        json={"scope": "tag", "name": "feature-x", "max_usd": "0.0001", "window": "day"},
        headers=ADMIN,
    )
    assert put.status_code == 201, put.text
    tagged = {"headers": {"x-tollgate-tags": "feature-x"}}
    assert until_refused(stack, "tag-t", **tagged) >= 2
    assert chat(stack, "tag-t", metadata={"tags": ["feature-x"]}).status_code == 429
    assert chat(stack, "tag-t").status_code == 200  # untagged requests are not held by it
    spent = recorded(
        stack, "SELECT SUM(CAST(cost_usd AS TEXT)) FROM requests WHERE tags LIKE '%,feature-x,%'"
    )
    assert 0 < spent <= Decimal("0.0001")
    assert httpx.delete(f"{url}/admin/budgets/tag/feature-x", headers=ADMIN).status_code == 200


def test_100_concurrent_requests_never_overshoot_a_small_budget(stack: dict[str, Any]) -> None:
    url, key = stack["gw"].url, stack["keys"]["conc-t"]
    body = {
        "model": "fake",
        "messages": [{"role": "user", "content": "hello there world"}],
        "max_tokens": 10,
    }

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            calls = [
                client.post(
                    f"{url}/v1/chat/completions",
                    json=body,
                    headers={"authorization": f"Bearer {key}"},
                )
                for _ in range(100)
            ]
            return [r.status_code for r in await asyncio.gather(*calls)]

    codes = asyncio.run(burst())
    ok, refused = codes.count(200), codes.count(429)
    assert ok + refused == 100, codes
    assert ok > 0 and refused > 0
    spent = tenant_spend(stack, "conc-t")
    print(f"\n100 concurrent: {ok} admitted, {refused} refused, spent ${spent} of ${CONC_LIMIT}")
    assert spent <= CONC_LIMIT


def test_reservation_bounds_every_output_cap_and_caps_the_upstream(stack: dict[str, Any]) -> None:
    # max_tokens 1 + max_completion_tokens 5000: reserved for 5000 tokens ($0.01) > $0.001
    resp = chat(stack, "cap-t", max_tokens=1, max_completion_tokens=5000)
    assert resp.status_code == 429, resp.text
    # no max_tokens on an upstream writing 5000 tokens: capped at the 50 reserved
    resp = chat(stack, "cap-t", model="long", max_tokens=None)
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["completion_tokens"] == 50
    sent = stack["upstream"].stats()["requests"][-1]["body"]
    assert sent["max_tokens"] == 50


@pytest.mark.parametrize(
    "raw",
    [
        '"max_tokens": 1e30',
        '"max_tokens": 1000000000000000000000000000000',
        '"max_tokens": NaN',
        '"max_tokens": -5',
        '"max_completion_tokens": Infinity',
    ],
)
def test_absurd_max_tokens_is_a_400(stack: dict[str, Any], raw: str) -> None:
    content = '{"model": "fake", "messages": [{"role": "user", "content": "hi"}], ' + raw + "}"
    resp = httpx.post(
        f"{stack['gw'].url}/v1/chat/completions",
        content=content,
        headers={
            "authorization": f"Bearer {stack['keys']['cap-t']}",
            "content-type": "application/json",
        },
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "query", ["start=99999999d", "end=99999999999999999999m", "start=9999999w", "start=not-a-date"]
)
def test_absurd_report_params_are_a_400(stack: dict[str, Any], query: str) -> None:
    resp = httpx.get(
        f"{stack['gw'].url}/v1/spend?{query}",
        headers={"authorization": f"Bearer {stack['keys']['cap-t']}"},
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["type"] == "invalid_request_error"
