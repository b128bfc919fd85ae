"""Test harness: config builders, the in-process app client, real Postgres databases, Redis
prefixes, and a gateway run as a real ``tollgate serve`` subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import Config
from gateway.devtools.fake_upstream import free_port
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


# -- a real gateway process ---------------------------------------------------------------------
class GatewayProcess:
    """``tollgate serve`` in a subprocess, on a free port, with its own config file."""

    def __init__(
        self,
        config: dict[str, Any],
        workdir: Path,
        env: dict[str, str],
        args: tuple[str, ...] = (),
    ) -> None:
        self.args = args  # more ``tollgate serve`` options (``--workers 2``)
        self.port = free_port()
        self.workdir = workdir
        self.config_path = workdir / f"gateway-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.env = {**os.environ, **env}
        self.log_path = workdir / f"gateway-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "tollgate"), *args, "--config", str(self.config_path)],
            env=self.env,
            capture_output=True,
            text=True,
            cwd=self.workdir,
            timeout=120,
        )

    def start(self, timeout_s: float = 180) -> GatewayProcess:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                str(VENV_BIN / "tollgate"),
                "serve",
                "--config",
                str(self.config_path),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *self.args,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gateway did not start: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
