"""The app's shutdown is bounded by ``server.shutdown_timeout_s``: a dependency that hangs while
closing (Redis, the database) never hangs the lifespan's end (a TestClient's teardown, a
replica's exit), every other part still closes, and the record writer's rows that the store
could not take in time stay on the spool, written by the next writer on that directory."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.state.memory import InProcessState
from gateway.store.database import create_engine
from gateway.store.models import requests
from gateway.store.writer import RecordWriter
from tests.support.harness import app_client, chat_body, config_dict, create_key, settings_for

BOUND_S = 1.0


async def _hang(*_args: Any) -> None:
    """A dependency that hangs: far past the bound (not forever, so that a shutdown that does
    not cut it fails these tests on their clock instead of hanging them)."""
    await asyncio.sleep(BOUND_S + 20)


def _attempts(url: str) -> int:
    async def count() -> int:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return (await conn.execute(select(func.count()).select_from(requests))).scalar_one()
        finally:
            await engine.dispose()

    return asyncio.run(count())


def test_a_hanging_state_close_is_cut_and_the_rest_still_closes(
    tmp_path: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    disposed: list[AsyncEngine] = []
    dispose = AsyncEngine.dispose

    async def spy_dispose(self: AsyncEngine, close: bool = True) -> None:
        disposed.append(self)
        await dispose(self, close)

    monkeypatch.setattr(InProcessState, "close", _hang)  # Redis gone mid-shutdown
    monkeypatch.setattr(AsyncEngine, "dispose", spy_dispose)
    cfg = config_dict(tmp_path, server={"shutdown_timeout_s": BOUND_S})
    caplog.set_level(logging.WARNING)
    with app_client(settings_for(cfg, sqlite_url)) as (client, _):
        key = create_key(client)
        resp = client.post(
            "/v1/chat/completions", json=chat_body(), headers={"authorization": f"Bearer {key}"}
        )
        assert resp.status_code == 200, resp.text
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        started = time.monotonic()
    elapsed = time.monotonic() - started
    assert elapsed < BOUND_S + 1.0, elapsed
    assert runtime.engine in disposed  # the engine closed although the state close hung
    assert runtime.writer._runner.done()  # the writer closed: its row is in the store
    assert _attempts(sqlite_url) == 1
    cut = [r.getMessage() for r in caplog.records if r.name == "tollgate.runtime"]
    assert cut == [
        "shutdown: shared state (in-process) did not stop in time (server.shutdown_timeout_s); "
        "cancelled"
    ]


def test_a_flush_the_store_cannot_take_in_time_stays_on_the_spool(
    tmp_path: Path, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # one row a batch: at the close one batch is in the writer loop's hanging write, one goes
    # in the close's last flush (which hangs too, cut by the bound) and one is still queued
    cfg = config_dict(tmp_path, server={"shutdown_timeout_s": BOUND_S}, store={"batch_size": 1})
    caplog.set_level(logging.WARNING)
    with app_client(settings_for(cfg, sqlite_url)) as (client, _):
        key = create_key(client)
        writer: RecordWriter = client.app.state.runtime.writer  # type: ignore[attr-defined]
        writer._write = _hang  # type: ignore[method-assign,assignment]  # the database hangs
        for i in range(3):
            resp = client.post(
                "/v1/chat/completions",
                json=chat_body(text=f"question {i}"),
                headers={"authorization": f"Bearer {key}"},
            )
            assert resp.status_code == 200, resp.text
        assert len(writer._attempts) == 2  # the first is being written (for ever)
        started = time.monotonic()
    elapsed = time.monotonic() - started
    assert elapsed < BOUND_S + 1.0, elapsed
    assert any("record writer did not stop in time" in r.getMessage() for r in caplog.records)
    assert _attempts(sqlite_url) == 0  # nothing reached the store ...
    spool = tmp_path / "spool"
    assert writer.spool_files() and not list((spool / "journal").glob("journal-*.jsonl"))

    async def restart() -> int:  # ... the next writer on that spool directory writes them
        again = RecordWriter(create_engine(sqlite_url), spool)
        await again.start()
        try:
            return await again.replay_spool()
        finally:
            await again.close()
            await again.engine.dispose()

    assert asyncio.run(restart()) == 3
    assert _attempts(sqlite_url) == 3
