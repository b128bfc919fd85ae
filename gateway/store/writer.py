"""The record writer: attempt and task rows written off the hot path, in batches, never lost.

Request handlers call ``submit_*`` (non-blocking, no I/O). A background task drains the queue
every ``flush_interval`` or when ``batch_size`` rows are waiting and writes them in one
transaction. If the store is unreachable the batch is appended to a local spool file
(JSON lines, fsynced) and a replay loop writes spooled batches back when the store returns.
Inserts are idempotent (``ON CONFLICT DO NOTHING`` on the row id), so a batch whose commit
outcome was unknown can be replayed safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Table, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.models import requests as requests_table
from gateway.store.models import tasks as tasks_table

log = logging.getLogger("tollgate.store")

_DATETIME_COLS = {"created_at", "finished_at", "last_seen_at"}
_DECIMAL_COLS = {"cost_usd"}


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _decode_row(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for col in _DATETIME_COLS & out.keys():
        if isinstance(out[col], str):
            out[col] = datetime.fromisoformat(out[col])
    for col in _DECIMAL_COLS & out.keys():
        if out[col] is not None:
            out[col] = Decimal(out[col])
    return out


@dataclass
class WriterStats:
    written: int = 0
    spooled: int = 0
    replayed: int = 0
    failures: int = 0
    store_up: bool = True


class RecordWriter:
    """Batches attempt/task rows into the SQL store, spooling to disk while it is down."""

    def __init__(
        self,
        engine: AsyncEngine,
        spool_dir: str | Path,
        *,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
        replay_interval_s: float = 2.0,
    ) -> None:
        self.engine = engine
        self.spool_dir = Path(spool_dir)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.replay_interval_s = replay_interval_s
        self.stats = WriterStats()
        self._attempts: deque[dict[str, Any]] = deque()
        self._tasks: dict[str, dict[str, Any]] = {}
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._replayer: asyncio.Task[None] | None = None
        self._closing = False
        self._write_lock = asyncio.Lock()

    # -- producer side (hot path: no awaits, no I/O) -------------------------------------
    def submit_attempt(self, row: dict[str, Any]) -> None:
        self._attempts.append(row)
        if len(self._attempts) >= self.batch_size:
            self._wake.set()

    def submit_task(self, row: dict[str, Any]) -> None:
        """Upsert a task row; repeated submissions of one task keep the latest last_seen_at."""
        current = self._tasks.get(row["id"])
        if current is None or row["last_seen_at"] > current["last_seen_at"]:
            merged = dict(row)
            if current is not None:
                merged["created_at"] = min(current["created_at"], row["created_at"])
            self._tasks[row["id"]] = merged

    @property
    def pending(self) -> int:
        return len(self._attempts) + len(self._tasks)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._runner = asyncio.create_task(self._run(), name="tollgate-writer")
        self._replayer = asyncio.create_task(self._replay_loop(), name="tollgate-replayer")

    async def close(self) -> None:
        """Flush everything; whatever cannot reach the store is spooled, never dropped."""
        self._closing = True
        self._wake.set()
        for task in (self._runner, self._replayer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.flush()
        with contextlib.suppress(Exception):  # a batch spooled by the cancel goes in now
            await self.replay_spool()

    async def flush(self) -> None:
        """Write every pending row now, and wait for a batch the background loop may be
        writing at this moment (so a read after flush() sees every submitted row)."""
        while self.pending:
            await self._flush_once()
        await self._write_lock.acquire()  # returns once the loop's batch in flight committed
        self._write_lock.release()

    # -- internals ---------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel (hangs close())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                # One batch per tick; keep going at once only while full batches are waiting.
                # (Draining "while pending" would write one tiny transaction per request under
                # a steady trickle, since rows keep arriving during each write.)
                await self._flush_once()
                while len(self._attempts) >= self.batch_size:
                    await self._flush_once()
            except Exception:  # never let the writer die; rows are already spooled
                log.exception("record writer loop error")

    def _take_batch(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        attempts = [
            self._attempts.popleft() for _ in range(min(self.batch_size, len(self._attempts)))
        ]
        task_ids = list(self._tasks)[: self.batch_size]
        tasks = [self._tasks.pop(t) for t in task_ids]
        return attempts, tasks

    async def _flush_once(self) -> None:
        attempts, tasks = self._take_batch()
        if not attempts and not tasks:
            return
        try:
            await self._write(attempts, tasks)
            self.stats.written += len(attempts)
            self.stats.store_up = True
        except BaseException as exc:
            # Store down, or cancelled mid-write (shutdown): the batch is already off the
            # queue, so it goes to the spool (replay is idempotent if the commit did happen).
            if isinstance(exc, Exception):
                self.stats.failures += 1
                if self.stats.store_up:
                    log.warning(
                        "store unreachable (%s); spooling rows to %s",
                        type(exc).__name__,
                        self.spool_dir,
                    )
                self.stats.store_up = False
            self._spool_or_requeue(attempts, tasks)
            if not isinstance(exc, Exception):
                raise

    def _spool_or_requeue(
        self, attempts: list[dict[str, Any]], tasks: list[dict[str, Any]]
    ) -> None:
        try:
            self._spool(attempts, tasks)
        except OSError:
            log.exception("cannot spool to %s; keeping the rows in memory", self.spool_dir)
            self._attempts.extendleft(reversed(attempts))
            for row in tasks:
                self.submit_task(row)

    async def _write(self, attempts: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> None:
        async with self._write_lock, self.engine.begin() as conn:
            if tasks:
                await conn.execute(self._upsert_tasks(), tasks)
            if attempts:
                await conn.execute(self._insert_ignore(requests_table), attempts)

    def _upsert_tasks(self) -> Any:
        """Insert tasks; on conflict keep the later last_seen_at (one statement per batch)."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(tasks_table)
        latest = (func.greatest if dialect is postgresql else func.max)(
            tasks_table.c.last_seen_at, stmt.excluded.last_seen_at
        )
        return stmt.on_conflict_do_update(index_elements=["id"], set_={"last_seen_at": latest})

    def _insert_ignore(self, table: Table) -> Any:
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing(index_elements=["id"])
        if self.engine.dialect.name == "sqlite":
            return sqlite.insert(table).on_conflict_do_nothing(index_elements=["id"])
        return table.insert()

    def _spool(self, attempts: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.jsonl"
        tmp = self.spool_dir / (name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for kind, rows in (("task", tasks), ("attempt", attempts)):
                for row in rows:
                    fh.write(json.dumps({"k": kind, "r": {c: _encode(v) for c, v in row.items()}}))
                    fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(self.spool_dir / name)  # atomic: a replayer never sees half a file
        self.stats.spooled += len(attempts)

    def spool_files(self) -> list[Path]:
        return sorted(self.spool_dir.glob("*.jsonl")) if self.spool_dir.exists() else []

    async def replay_spool(self) -> int:
        """Write spooled batches to the store; returns attempt rows replayed."""
        replayed = 0
        for path in self.spool_files():
            attempts: list[dict[str, Any]] = []
            tasks: list[dict[str, Any]] = []
            for line in path.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                (tasks if item["k"] == "task" else attempts).append(_decode_row(item["r"]))
            await self._write(attempts, tasks)  # raises while the store is still down
            path.unlink()
            replayed += len(attempts)
            self.stats.replayed += len(attempts)
        if replayed:
            log.info("replayed %d spooled attempt rows into the store", replayed)
            self.stats.store_up = True
        return replayed

    async def _replay_loop(self) -> None:
        while True:
            await asyncio.sleep(self.replay_interval_s)
            if not self.spool_files():
                continue
            try:
                await self.replay_spool()
            except Exception as exc:
                log.debug("spool replay deferred: %s", exc)
