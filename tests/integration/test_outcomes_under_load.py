"""A real ``tollgate serve`` on SQLite under concurrent routed load through a policy with
validators, with one worker and with two on one SQLite file (issues 9/11): every request
succeeds, the log has no "database is locked", and every validator verdict lands in the store
(written by the record writer in batches)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from bench.gateway_process import GatewayProcess
from gateway.devtools.fake_upstream import FakeUpstream
from gateway.store.database import create_engine
from gateway.store.migrate import upgrade_database
from gateway.store.writer import RecordWriter
from tests.support.harness import REDIS_URL

REQUESTS = 200
CONCURRENCY = 32
ADMIN = {"authorization": "Bearer admin-secret-for-tests"}


def _validator_rows(db: Path) -> set[str]:
    con = sqlite3.connect(db, timeout=10)
    try:
        rows = con.execute("select request_id from outcomes where source = 'validator'")
        return {str(r[0]) for r in rows}
    finally:
        con.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_routed_load_on_sqlite_records_every_verdict_without_locks(
    tmp_path: Path, workers: int, redis_prefix: str
) -> None:
    with FakeUpstream(port=0) as upstream:
        cfg = {
            "backends": [
                {
                    "name": "fake",
                    "model": "openai/fake-model",
                    "api_base": upstream.base_url,
                    "api_key": "os.environ/FAKE_KEY",
                    "input_cost_per_token": "0.0000002",
                    "output_cost_per_token": "0.0000006",
                    "max_retries": 0,
                }
            ],
            "policies": {
                "default": {
                    "candidates": ["fake"],
                    "objective": {"kind": "cheapest_adequate", "min_success": 0.1},
                    "predictor_fallback": "first_candidate",
                    "escalation": {
                        "validators": [
                            {"kind": "non_empty"},
                            {"kind": "max_length", "chars": 9000},
                        ],
                        "max_escalations": 0,
                    },
                }
            },
            "routing": {"default": "default"},
            "aliases": {"auto": "tollgate/auto"},
            "predictor": {"enabled": False},
            "store": {"spool_dir": str(tmp_path / "spool"), "flush_interval_ms": 50},
            "redis": {"key_prefix": redis_prefix},
        }
        db = tmp_path / "tollgate.db"
        env = {
            "FAKE_KEY": "upstream-secret",
            "TOLLGATE_DATABASE_URL": f"sqlite:///{db}",
            "TOLLGATE_REDIS_URL": REDIS_URL if workers > 1 else "",
            "TOLLGATE_ADMIN_KEY": "admin-secret-for-tests",
        }
        with GatewayProcess(cfg, tmp_path, env, ("--workers", str(workers))) as gw:
            made = httpx.post(gw.url + "/admin/keys", json={"tenant": "t"}, headers=ADMIN)
            key = made.json()["key"]

            async def load() -> tuple[list[httpx.Response], float]:
                gate = asyncio.Semaphore(CONCURRENCY)
                limits = httpx.Limits(max_connections=CONCURRENCY)
                async with httpx.AsyncClient(base_url=gw.url, limits=limits, timeout=60) as http:

                    async def one(i: int) -> httpx.Response:
                        async with gate:
                            return await http.post(
                                "/v1/chat/completions",
                                json={
                                    "model": "auto",
                                    "messages": [{"role": "user", "content": f"question {i}"}],
                                },
                                headers={"authorization": f"Bearer {key}"},
                            )

                    started = time.perf_counter()
                    got = await asyncio.gather(*(one(i) for i in range(REQUESTS)))
                    return got, time.perf_counter() - started

            responses, elapsed = asyncio.run(load())
            statuses = [r.status_code for r in responses]
            assert statuses == [200] * REQUESTS, {s: statuses.count(s) for s in set(statuses)}
            rids = {r.headers["x-tollgate-request-id"] for r in responses}
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not rids <= _validator_rows(db):
                time.sleep(0.2)
            assert rids <= _validator_rows(db), f"{len(rids - _validator_rows(db))} verdicts lost"
        log = gw.log_path.read_text()
        assert "database is locked" not in log
        assert "could not record" not in log
        rate = REQUESTS / elapsed
        print(
            f"{workers} worker(s), {REQUESTS} requests, {CONCURRENCY} concurrent: {rate:.0f} req/s"
        )


VICTIM = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from gateway.outcomes.recording import Outcome, schedule_outcome
    from gateway.store.database import create_engine
    from gateway.store.writer import RecordWriter

    async def main():
        writer = RecordWriter(create_engine({url!r}), {spool!r}, flush_interval_s=3600)
        await writer.start()
        for i in range(10):  # verdicts accepted, still in the in-memory batch
            schedule_outcome(writer, Outcome("t", f"task{{i}}", "validator", i % 2 == 0, f"r{{i}}"))
        print("ready", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def test_kill_9_loses_no_verdict(sqlite_url: str, tmp_path: Path) -> None:
    """A replica killed with verdicts in its writer's queue: the next writer on its spool
    directory recovers them from the journal."""
    upgrade_database(sqlite_url)
    spool = tmp_path / "spool"
    root = str(Path(__file__).resolve().parents[2])
    script = VICTIM.format(root=root, url=sqlite_url, spool=str(spool))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=root)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    assert _validator_rows(db) == set()  # nothing reached the store before the kill

    async def restart() -> None:
        writer = RecordWriter(create_engine(sqlite_url), spool)
        await writer.start()  # recovers the dead writer's journal
        await writer.close()
        await writer.engine.dispose()

    asyncio.run(restart())
    con = sqlite3.connect(db)
    try:
        rows = dict(con.execute("select request_id, success from outcomes").fetchall())
    finally:
        con.close()
    assert rows == {f"r{i}": int(i % 2 == 0) for i in range(10)}
