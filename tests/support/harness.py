"""Test harness: config builders, the in-process app client, real Postgres databases and Redis
prefixes. A gateway run as a real ``tollgate serve`` subprocess is
``bench.gateway_process.GatewayProcess`` (the benches start it too).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import Config
from gateway.settings import Settings
from tests.support.fakes import FakeCaller

PG_SERVER = os.environ.get("TOLLGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("TOLLGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

PRICE_IN = "0.000001"
PRICE_OUT = "0.000002"


def backend(name: str, **kw: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "model": f"openai/{name}-model",
        "api_base": "http://127.0.0.1:9/v1",
        "input_cost_per_token": PRICE_IN,
        "output_cost_per_token": PRICE_OUT,
        "retry_backoff_s": 0.001,
        "max_retries": 1,
    }
    entry.update(kw)
    return entry


def config_dict(
    tmp_path: Path, backends: list[dict[str, Any]] | None = None, **sections: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "backends": backends or [backend("cheap"), backend("premium")],
        "policies": {
            "default": {
                "candidates": ["cheap", "premium"],
                "objective": {
                    "kind": "cheapest_adequate",
                    "min_success": 0.5,
                    "on_no_adequate": "most_capable",
                },
                "predictor_fallback": "first_candidate",
            }
        },
        "routing": {"default": "default"},
        "predictor": {"enabled": False},
        "aliases": {"auto": "tollgate/auto"},
        "store": {"spool_dir": str(tmp_path / "spool"), "flush_interval_ms": 20},
        "circuit_breaker": {"failure_threshold": 3, "window_s": 30, "cooldown_s": 30},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def settings_for(
    config: dict[str, Any],
    database_url: str,
    *,
    admin_key: str | None = "admin-secret-for-tests",
    redis_url: str | None = None,
) -> Settings:
    return Settings(
        config=Config.model_validate(config),
        database_url=database_url,
        redis_url=redis_url,
        admin_key=admin_key,
    )


@contextlib.contextmanager
def app_client(
    settings: Settings, caller: FakeCaller | None = None, predictor: Any = None
) -> Iterator[tuple[TestClient, FakeCaller]]:
    fake = caller or FakeCaller()
    with TestClient(create_app(settings, caller=fake, predictor=predictor)) as client:
        yield client, fake


def create_key(client: TestClient, tenant: str = "acme", budget: float | None = None) -> str:
    body: dict[str, Any] = {"tenant": tenant}
    if budget is not None:
        body["max_budget_usd"] = budget
    resp = client.post(
        "/admin/keys", json=body, headers={"authorization": "Bearer admin-secret-for-tests"}
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


def chat_body(model: str = "cheap", text: str = "hello there world", **kw: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **kw}


# -- PostgreSQL ------------------------------------------------------------------------------
async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_SERVER.replace("postgresql://", "postgres://") + "/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty database on the real PostgreSQL server; dropped afterwards."""
    name = f"tg_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
