"""The production stack: PostgreSQL store (outage and spool replay), Redis-shared budgets and
circuit breakers across replicas, and migrations on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, inspect, select

from bench.gateway_process import GatewayProcess
from gateway.devtools.fake_upstream import FakeUpstream
from gateway.store.models import requests as requests_table
from tests.support.fakes import FakeCaller, Script
from tests.support.harness import (
    app_client,
    chat_body,
    config_dict,
    create_key,
    settings_for,
)
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


def sync_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://")


def count_rows(url: str) -> int:
    async def run() -> int:
        from gateway.store.database import create_engine as create_async

        engine = create_async(url)
        try:
            async with engine.connect() as conn:
                return int(await conn.scalar(select(func.count()).select_from(requests_table)) or 0)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_db_upgrade_on_postgres(pg_url: str, tmp_path: Path) -> None:
    gw = GatewayProcess(
        {"backends": [{"name": "a", "model": "openai/x"}]},
        tmp_path,
        {"TOLLGATE_DATABASE_URL": pg_url},
    )
    done = gw.cli("db", "upgrade")
    assert done.returncode == 0, done.stderr
    assert "at revision" in done.stdout

    async def tables() -> set[str]:
        from gateway.store.database import create_engine as create_async

        engine = create_async(pg_url)
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        await engine.dispose()
        return names

    assert {"tenants", "api_keys", "tasks", "requests", "alembic_version"} <= asyncio.run(tables())


def test_store_outage_during_traffic_loses_nothing(pg_url: str, tmp_path: Path) -> None:
    """Cut PostgreSQL mid-traffic: requests keep succeeding, rows spool to disk and are
    replayed when the database returns; every request ends up with its row."""
    proxy = TcpProxy("127.0.0.1", 5432)
    proxy.up()
    db_name = pg_url.rsplit("/", 1)[1]
    proxied = f"postgresql://postgres@127.0.0.1:{proxy.port}/{db_name}"
    try:
        with FakeUpstream(port=0) as upstream:
            cfg = {
                "backends": [
                    {
                        "name": "fake",
                        "model": "openai/fake-model",
                        "api_base": upstream.base_url,
                        "input_cost_per_token": "0.000001",
                        "output_cost_per_token": "0.000002",
                    }
                ],
                "store": {"spool_dir": str(tmp_path / "spool"), "flush_interval_ms": 20},
            }
            env = {"TOLLGATE_DATABASE_URL": proxied, "TOLLGATE_ADMIN_KEY": "adm-prod-stack-key"}
            gw = GatewayProcess(cfg, tmp_path, env)
            key = gw.cli("keys", "create", "--tenant", "t").stdout.strip().splitlines()[-1]
            with gw:
                sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
                sent = 0

                def burst(n: int) -> None:
                    nonlocal sent
                    for _ in range(n):
                        sdk.chat.completions.create(
                            model="fake", messages=[{"role": "user", "content": "x"}]
                        )
                        sent += 1

                burst(20)
                proxy.down()  # the database disappears during traffic
                burst(40)
                spool = list((tmp_path / "spool").glob("*.jsonl"))
                assert spool, "rows written while the store was down must be spooled"
                ready = httpx.get(gw.url + "/readyz").json()
                assert ready["store"]["ok"] is False
                proxy.up()  # back again: the replay loop drains the spool
                burst(20)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and count_rows(pg_url) < sent:
                    time.sleep(0.25)
                assert count_rows(pg_url) == sent == 80
                assert not list((tmp_path / "spool").glob("*.jsonl"))
    finally:
        proxy.close()


@pytest.fixture
def two_replicas(
    pg_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> Iterator[list[Any]]:
    cfg = config_dict(tmp_path, redis={"key_prefix": redis_prefix})
    scripts = {"cheap": Script(answer_tokens=8, delay_s=0.02)}
    with (
        app_client(settings_for(cfg, pg_url, redis_url=redis_url), FakeCaller(dict(scripts))) as a,
        app_client(settings_for(cfg, pg_url, redis_url=redis_url), FakeCaller(dict(scripts))) as b,
    ):
        yield [a, b]


def test_budget_holds_across_replicas_under_concurrency(two_replicas: list[Any]) -> None:
    (client_a, _), (client_b, _) = two_replicas
    per_request = Decimal("0.000001") * 3 + Decimal("0.000002") * 8  # 1.9e-5 actual
    reserve = Decimal("0.000001") * 3 + Decimal("0.000002") * 8  # max_tokens=8: same bound
    budget = per_request * 10
    key = create_key(client_a, budget=float(budget))
    auth = {"authorization": f"Bearer {key}"}
    import concurrent.futures

    def fire(i: int) -> int:
        c = client_a if i % 2 else client_b
        return c.post(
            "/v1/chat/completions", json=chat_body(max_tokens=8), headers=auth
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(fire, range(40)))
    assert statuses.count(200) == int(budget / reserve) == 10
    assert set(statuses) == {200, 429}


def test_circuit_breaker_is_shared_by_replicas(
    pg_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    cfg = config_dict(tmp_path, redis={"key_prefix": redis_prefix})
    broken = FakeCaller({"cheap": Script(fail=[500] * 100)})
    healthy = FakeCaller()
    with (
        app_client(settings_for(cfg, pg_url, redis_url=redis_url), broken) as (a, _),
        app_client(settings_for(cfg, pg_url, redis_url=redis_url), healthy) as (b, _),
    ):
        key = create_key(a)
        auth = {"authorization": f"Bearer {key}"}
        for _ in range(2):  # 2 requests x 2 tries >= threshold 3: replica A opens the circuit
            assert (
                a.post(
                    "/v1/chat/completions", json=chat_body(model="auto"), headers=auth
                ).status_code
                == 200
            )
        resp = b.post("/v1/chat/completions", json=chat_body(model="auto"), headers=auth)
        assert resp.headers["x-tollgate-backend"] == "premium"
        assert healthy.calls.get("cheap", 0) == 0, "replica B must skip the backend A saw failing"
        assert b.get("/readyz").json()["backends"]["cheap"]["circuit"] == "open"


def test_budget_survives_redis_reset(
    pg_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """Spend is seeded from the SQL store when Redis has no ledger (e.g. after a restart)."""
    cfg = config_dict(tmp_path, redis={"key_prefix": redis_prefix})
    with app_client(settings_for(cfg, pg_url, redis_url=redis_url)) as (client, _):
        key = create_key(client, budget=0.00004)
        auth = {"authorization": f"Bearer {key}"}
        assert (
            client.post(
                "/v1/chat/completions", json=chat_body(max_tokens=8), headers=auth
            ).status_code
            == 200
        )

    async def wipe() -> None:
        import redis.asyncio as aioredis

        r = aioredis.from_url(redis_url)
        keys = [k async for k in r.scan_iter(match=redis_prefix + "*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()

    asyncio.run(wipe())
    with app_client(settings_for(cfg, pg_url, redis_url=redis_url)) as (client, _):
        codes = [
            client.post(
                "/v1/chat/completions", json=chat_body(max_tokens=8), headers=auth
            ).status_code
            for _ in range(3)
        ]
    # 4e-5 budget, 1.9e-5 per request: one before the wipe, one after, then refused
    assert codes == [200, 429, 429]
