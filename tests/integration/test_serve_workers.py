"""`tollgate serve --workers N`: several worker processes on one port, refused without Redis
(in-process budgets and breakers would diverge), every request recorded in the shared store."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from gateway.devtools.fake_upstream import FakeUpstream, free_port
from gateway.store.database import create_engine
from gateway.store.models import requests as requests_table
from tests.support.harness import REDIS_URL, VENV_BIN

pytestmark = pytest.mark.integration


def write_config(tmp_path: Path, upstream: str, **extra: Any) -> Path:
    cfg = {
        "backends": [
            {
                "name": "fake",
                "model": "openai/fake-model",
                "api_base": upstream,
                "input_cost_per_token": "0.000001",
                "output_cost_per_token": "0.000002",
            }
        ],
        "predictor": {"enabled": False},
        "store": {"spool_dir": str(tmp_path / "spool"), "flush_interval_ms": 20},
        "server": {"anonymous_tenant": "workers"},
        **extra,
    }
    path = tmp_path / "tollgate.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def serve_cmd(config: Path, port: int, workers: int) -> list[str]:
    return [
        str(VENV_BIN / "tollgate"),
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_several_workers_need_redis(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9/v1")
    env = {k: v for k, v in os.environ.items() if k != "TOLLGATE_REDIS_URL"}
    env["TOLLGATE_DATABASE_URL"] = f"sqlite:///{tmp_path}/t.db"
    proc = subprocess.run(
        serve_cmd(config, free_port(), 2), env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "Redis" in proc.stderr and "budgets" in proc.stderr


def test_two_workers_serve_one_port_and_record_every_request(
    tmp_path: Path, pg_url: str, redis_prefix: str
) -> None:
    with FakeUpstream(latency_ms=5) as upstream:
        config = write_config(tmp_path, upstream.base_url, redis={"key_prefix": redis_prefix})
        env = {
            **os.environ,
            "TOLLGATE_DATABASE_URL": pg_url,
            "TOLLGATE_REDIS_URL": REDIS_URL,
        }
        port = free_port()
        log = (tmp_path / "serve.log").open("wb")
        proc = subprocess.Popen(
            serve_cmd(config, port, 2), env=env, stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 240  # two workers import litellm on a busy machine
            ready = False
            while time.monotonic() < deadline and proc.poll() is None and not ready:
                try:
                    ready = httpx.get(url + "/readyz", timeout=2).status_code == 200
                except httpx.HTTPError:
                    time.sleep(0.5)
            assert ready, (tmp_path / "serve.log").read_text()[-3000:]
            # uvicorn spawns its workers through multiprocessing
            workers = [pid for pid in children(proc.pid) if "spawn_main" in _cmdline(pid)]
            assert len(workers) >= 2, workers

            async def send_all() -> list[httpx.Response]:
                async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                    return await asyncio.gather(
                        *(
                            client.post(
                                "/v1/chat/completions",
                                json={
                                    "model": "fake",
                                    "messages": [{"role": "user", "content": f"hello {i}"}],
                                },
                            )
                            for i in range(30)
                        )
                    )

            answers = asyncio.run(send_all())
            assert [r.status_code for r in answers] == [200] * 30
            ids = {r.headers["x-tollgate-request-id"] for r in answers}
        finally:
            proc.send_signal(signal.SIGTERM)  # graceful: every worker flushes its writer
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()

    async def recorded() -> list[Any]:
        engine = create_engine(pg_url)
        try:
            async with engine.connect() as conn:
                result = await conn.execute(
                    select(requests_table.c.request_id, requests_table.c.status).where(
                        requests_table.c.request_id.in_(ids)
                    )
                )
                return list(result.all())
        finally:
            await engine.dispose()

    rows = asyncio.run(recorded())
    assert {r.request_id for r in rows} == ids and {r.status for r in rows} == {"ok"}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
