"""The README's own set-up serves concurrent ``model: auto`` requests: the shipped config.yaml,
no API keys in the environment (only ``local-moe`` can be called), the fake upstream standing
in for vLLM, a real ``tollgate serve`` and a key from ``tollgate keys create``.

Run once with the shipped predictor (it must answer: every decision predicted) and once with
a predictor that can never answer in time (``predictor.timeout_ms`` far below one decision):
then ``predictor_fallback: [cheap-api, local-moe]`` must serve every request from local-moe and
say so (header, stored decision, ``/metrics``) — never a 503.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.devtools.fake_upstream import FakeUpstream, free_port

REPO = Path(__file__).resolve().parents[2]
TOLLGATE = [sys.executable, "-c", "from gateway.cli.main import main; main()"]
CONCURRENT = 16
PROMPTS = [
    "Say hello",
    "What is the capital of Australia?",
    "Write a haiku about routers.",
    "Solve 17 * 23 and show your steps.",
]


def env_without_keys(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    for var in ("TOLLGATE_REDIS_URL", "TOLLGATE_CONFIG", "TOLLGATE_ADMIN_KEY"):
        env.pop(var, None)
    env["TOLLGATE_DATABASE_URL"] = f"sqlite:///{db}"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(latency_ms=20) as fake:
        yield fake


def shipped_config(tmp: Path, upstream: FakeUpstream, **predictor: Any) -> Path:
    """config.yaml as shipped; only local-moe's address moves from :8000 to the fake's port."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    for b in cfg["backends"]:
        if b["name"] == "local-moe":
            b["api_base"] = upstream.base_url
    cfg["store"]["spool_dir"] = str(tmp / "spool")
    cfg["predictor"].update(predictor)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class Gateway:
    def __init__(self, tmp: Path, config: Path) -> None:
        self.db = tmp / "tollgate.db"
        self.env = env_without_keys(self.db)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (tmp / "serve.log").open("wb")
        self.proc = subprocess.Popen(
            [*TOLLGATE, "serve", "--config", str(config), "--port", str(self.port)],
            env=self.env,
            cwd=tmp,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.config = config
        self.tmp = tmp

    def wait_ready(self, timeout_s: float = 400) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.tmp / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError("gateway not ready\n" + (self.tmp / "serve.log").read_text()[-3000:])

    def create_key(self) -> str:
        out = subprocess.run(
            [*TOLLGATE, "keys", "create", "--tenant", "demo"],
            env={**self.env, "TOLLGATE_CONFIG": str(self.config)},
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        return out.stdout.strip().splitlines()[-1].strip()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()

    def stored_predictor_outcomes(self, request_ids: list[str]) -> list[dict[str, Any]]:
        with sqlite3.connect(self.db) as conn:
            marks = ",".join("?" * len(request_ids))
            rows = conn.execute(
                f"SELECT decision FROM requests WHERE attempt = 1 AND request_id IN ({marks})",
                request_ids,
            ).fetchall()
        return [json.loads(r[0])["predictor"] for r in rows]


async def fire(url: str, key: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60, trust_env=False) as client:

        async def one(i: int) -> httpx.Response:
            return await client.post(
                f"{url}/v1/chat/completions",
                headers={"authorization": f"Bearer {key}"},
                json={
                    "model": "auto",
                    "messages": [{"role": "user", "content": f"{PROMPTS[i % 4]} (#{i})"}],
                },
            )

        return await asyncio.gather(*(one(i) for i in range(CONCURRENT)))


def run_setup(
    tmp: Path, upstream: FakeUpstream, **predictor: Any
) -> tuple[Gateway, list[httpx.Response]]:
    gw = Gateway(tmp, shipped_config(tmp, upstream, **predictor))
    try:
        gw.wait_ready()
        key = gw.create_key()
        responses = asyncio.run(fire(gw.url, key))
        # the writer flushes on a request for the attempts; then the rows are in the file
        httpx.get(
            f"{gw.url}/v1/requests/{responses[-1].headers.get('x-tollgate-request-id')}",
            headers={"authorization": f"Bearer {key}"},
            timeout=30,
        )
        metrics = httpx.get(f"{gw.url}/metrics", timeout=30).text
        gw.metrics = metrics  # type: ignore[attr-defined]
    except BaseException:
        gw.stop()
        raise
    gw.stop()
    return gw, responses


def counter(metrics: str, name: str, label: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name) and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_concurrent_auto_requests_with_the_shipped_predictor(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    gw, responses = run_setup(tmp_path, upstream, timeout_ms=5000)
    assert [r.status_code for r in responses] == [200] * CONCURRENT, [r.text for r in responses]
    assert {r.headers["x-tollgate-backend"] for r in responses} == {"local-moe"}
    assert {r.headers["x-tollgate-predictor"] for r in responses} == {"ok"}
    outcomes = gw.stored_predictor_outcomes([r.headers["x-tollgate-request-id"] for r in responses])
    assert len(outcomes) == CONCURRENT and {o["status"] for o in outcomes} == {"ok"}


def test_when_the_predictor_never_answers_in_time_the_fallback_list_serves(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    shutil.rmtree(tmp_path / "spool", ignore_errors=True)
    gw, responses = run_setup(tmp_path, upstream, timeout_ms=0.001)
    assert [r.status_code for r in responses] == [200] * CONCURRENT, [r.text for r in responses]
    assert {r.headers["x-tollgate-backend"] for r in responses} == {"local-moe"}
    assert {r.headers["x-tollgate-predictor"] for r in responses} == {"fallback:timeout"}
    assert {r.headers["x-tollgate-decision"] for r in responses} == {"predictor_unavailable"}
    outcomes = gw.stored_predictor_outcomes([r.headers["x-tollgate-request-id"] for r in responses])
    assert {(o["status"], o["reason"]) for o in outcomes} == {("fallback", "timeout")}
    metrics: str = gw.metrics  # type: ignore[attr-defined]
    assert counter(metrics, "tollgate_predictor_fallbacks_total", 'reason="timeout"') == CONCURRENT
