"""kill -9 of a replica loses no row and no paid call: the writer's write-ahead journal is
recovered by the next writer on the same spool directory (the replica restarted, or a peer),
on SQLite and PostgreSQL. A final row replaces an ``interrupted`` one, never the reverse."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.store.database import create_engine
from gateway.store.migrate import upgrade_database
from gateway.store.models import requests
from gateway.store.writer import RecordWriter

pytestmark = pytest.mark.integration


def _row(attempt_id: str, status: str, cost: str | None) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": attempt_id,
        "request_id": "r-" + attempt_id,
        "task_id": "t1",
        "attempt": 1,
        "tenant_id": "tenant",
        "key_id": None,
        "endpoint": "chat",
        "policy": None,
        "backend": "b",
        "model": "m",
        "status": status,
        "error_type": "replica_died" if status == "interrupted" else None,
        "http_status": None,
        "prompt_tokens": None,
        "completion_tokens": None,
        "usage_source": None,
        "cost_usd": Decimal(cost) if cost else None,
        "latency_ms": 1.0,
        "ttft_ms": None,
        "streamed": False,
        "fallback_of": None,
        "decision": None,
        "created_at": now,
        "finished_at": now,
    }


VICTIM = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    sys.path.insert(0, {root!r})
    from gateway.store.database import create_engine
    from gateway.store.writer import RecordWriter
    from tests.integration.test_writer_journal import _row

    async def main():
        writer = RecordWriter(create_engine({url!r}), {spool!r}, flush_interval_s=3600)
        await writer.start()
        for i in range(20):  # answered and paid, still in the in-memory batch
            writer.begin_attempt(_row(f"done{{i}}", "interrupted", None))
            writer.submit_attempt(_row(f"done{{i}}", "ok", "0.001"))
        for i in range(5):  # upstream calls in flight
            writer.begin_attempt(_row(f"flying{{i}}", "interrupted", None))
        print("ready", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, sqlite_url: str) -> Any:
    if request.param == "sqlite":
        return sqlite_url
    return request.getfixturevalue("pg_url")


async def _rows(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                select(requests.c.id, requests.c.status, requests.c.cost_usd)
            )
            return {r.id: r for r in result}
    finally:
        await engine.dispose()


def test_kill_9_loses_no_row_and_no_paid_call(store_url: str, tmp_path: Path) -> None:
    upgrade_database(store_url)
    spool = tmp_path / "spool"
    root = str(Path(__file__).resolve().parents[2])
    script = VICTIM.format(root=root, url=store_url, spool=str(spool))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=root)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert asyncio.run(_rows(store_url)) == {}  # nothing reached the store before the kill

    async def restart() -> int:
        writer = RecordWriter(create_engine(store_url), spool)
        await writer.start()  # the restarted replica recovers the dead one's journal
        recovered = writer.stats.recovered
        await writer.close()
        await writer.engine.dispose()
        return recovered

    assert asyncio.run(restart()) == 25
    rows = asyncio.run(_rows(store_url))
    assert {i for i, r in rows.items() if r.status == "ok"} == {f"done{i}" for i in range(20)}
    assert {i for i, r in rows.items() if r.status == "interrupted"} == {
        f"flying{i}" for i in range(5)
    }
    assert sum(r.cost_usd for r in rows.values() if r.cost_usd) == Decimal("0.020")
    assert list((spool / "journal").glob("*.jsonl")) == []  # the clean close left nothing


def test_a_final_row_replaces_an_interrupted_one_never_the_reverse(
    sqlite_url: str, tmp_path: Path
) -> None:
    upgrade_database(sqlite_url)

    async def run() -> dict[str, Any]:
        writer = RecordWriter(create_engine(sqlite_url), tmp_path / "spool")
        await writer.start()
        await writer._write([_row("x", "interrupted", None), _row("y", "ok", "0.5")], [])
        await writer._write([_row("x", "ok", "0.25"), _row("y", "interrupted", None)], [])
        await writer.close()
        await writer.engine.dispose()
        return await _rows(sqlite_url)

    rows = asyncio.run(run())
    assert (rows["x"].status, rows["x"].cost_usd) == ("ok", Decimal("0.25"))
    assert (rows["y"].status, rows["y"].cost_usd) == ("ok", Decimal("0.5"))


def test_the_spool_is_bounded_and_drains(sqlite_url: str, tmp_path: Path) -> None:
    upgrade_database(sqlite_url)

    async def run() -> tuple[bool, bool, int]:
        writer = RecordWriter(create_engine(sqlite_url), tmp_path / "spool", max_spool_bytes=4000)
        await writer.start()
        real_write = writer._write

        async def store_down(*rows: Any) -> None:
            raise ConnectionError("store down")

        writer._write = store_down  # type: ignore[method-assign]
        for i in range(10):
            writer.submit_attempt(_row(f"s{i}", "ok", "0.001"))
            await writer._flush_once()
        full = writer.spool_full
        writer._write = real_write  # type: ignore[method-assign]
        await writer.replay_spool()
        drained = not writer.spool_full and writer.spool_bytes == 0
        await writer.close()
        await writer.engine.dispose()
        return full, drained, len(await _rows(sqlite_url))

    assert asyncio.run(run()) == (True, True, 10)
