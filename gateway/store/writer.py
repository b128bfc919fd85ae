"""The record writer: attempt, task and outcome rows written off the hot path, in batches, never
lost.

Request handlers call ``submit_*`` (non-blocking, no I/O). A background task drains the queue
every ``flush_interval`` or when ``batch_size`` rows are waiting and writes them in one
transaction. If the store is unreachable the batch is appended to a local spool file
(JSON lines, fsynced) and a replay loop writes spooled batches back when the store returns.
Inserts are idempotent (``ON CONFLICT`` on the row id), so a batch whose commit outcome was
unknown can be replayed safely; a final attempt row replaces an ``interrupted`` one of the same
id (recovered from a dead replica's journal) and nothing else. Every accepted row, and every
upstream call as it starts, is also in the write-ahead journal (``gateway.store.journal``)
until it is durable, so a replica killed with ``kill -9`` loses no row and no paid call.
Outcome rows (validator and judge verdicts) are an idempotent replace of the row of the same
id; of two writes of one id the later ``updated_at`` wins, so a replayed spool never undoes a
newer verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.journal import Journal, Segment, decode_row, encode_row, read_orphan
from gateway.store.models import outcomes as outcomes_table
from gateway.store.models import requests as requests_table
from gateway.store.models import tasks as tasks_table

log = logging.getLogger("tollgate.store")
INTERRUPTED = "interrupted"
_ATTEMPT_DEFAULTS = {"cache_hit": False}  # NOT NULL columns added after rows were spooled
_COLS = {c.name: _ATTEMPT_DEFAULTS.get(c.name) for c in requests_table.columns}
Rows = Sequence[dict[str, Any]]


@dataclass
class WriterStats:
    written: int = 0
    spooled: int = 0
    replayed: int = 0
    failures: int = 0
    recovered: int = 0  # attempt rows recovered from dead writers' journals
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
        journal: bool = True,
        max_spool_bytes: int = 1 << 30,
    ) -> None:
        self.engine = engine
        self.spool_dir = Path(spool_dir)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.replay_interval_s = replay_interval_s
        self.stats = WriterStats()
        self._attempts: deque[tuple[Segment | None, dict[str, Any]]] = deque()
        self._tasks: dict[str, dict[str, Any]] = {}
        self._task_segments: dict[str, list[Segment]] = {}
        self._outcomes: dict[str, dict[str, Any]] = {}
        self._outcome_segments: dict[str, list[Segment]] = {}
        self.use_journal = journal
        self.max_spool_bytes = max_spool_bytes
        self.spool_bytes = 0
        self.journal: Journal | None = None
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._replayer: asyncio.Task[None] | None = None
        self._closing = False
        self._write_lock = asyncio.Lock()

    # -- producer side (hot path: no awaits, no I/O) -------------------------------------
    def begin_attempt(self, stub: dict[str, Any]) -> None:
        """An upstream call starts: journal the row to record (``status: interrupted``) should
        this replica die before ``submit_attempt`` brings the final row of the same id."""
        if self.journal is not None:
            self.journal.started(stub)

    def submit_attempt(self, row: dict[str, Any]) -> None:
        segment = self.journal.row("attempt", row) if self.journal is not None else None
        self._attempts.append((segment, row))
        if len(self._attempts) >= self.batch_size:
            self._wake.set()

    def submit_task(self, row: dict[str, Any]) -> None:
        """Upsert a task row; repeated submissions of one task keep the latest last_seen_at."""
        if self.journal is not None:
            self._task_segments.setdefault(row["id"], []).append(self.journal.row("task", row))
        current = self._tasks.get(row["id"])
        if current is None or row["last_seen_at"] > current["last_seen_at"]:
            merged = dict(row)
            if current is not None:
                merged["created_at"] = min(current["created_at"], row["created_at"])
            self._tasks[row["id"]] = merged

    def submit_outcome(self, row: dict[str, Any]) -> None:
        """Replace the outcome row ``row["id"]`` (a verdict); of repeated submissions of one id
        the latest ``updated_at`` is written."""
        if self.journal is not None:
            segment = self.journal.row("outcome", row)
            self._outcome_segments.setdefault(row["id"], []).append(segment)
        current = self._outcomes.get(row["id"])
        if current is None or row["updated_at"] >= current["updated_at"]:
            self._outcomes[row["id"]] = row
        if len(self._outcomes) >= self.batch_size:
            self._wake.set()

    @property
    def spool_full(self) -> bool:
        """The spool reached its bound: the gateway must stop taking new billable work (a 503)
        rather than lose rows or fill the disk; it reopens as the spool drains."""
        return self.spool_bytes >= self.max_spool_bytes

    @property
    def pending(self) -> int:
        return len(self._attempts) + len(self._tasks) + len(self._outcomes)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.spool_bytes = sum(p.stat().st_size for p in self.spool_files())
        if self.use_journal:
            self.journal = Journal(self.spool_dir / "journal")
            await self.recover_journals()
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
        if self.journal is not None:
            self.journal.close()

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
                while max(len(self._attempts), len(self._outcomes)) >= self.batch_size:
                    await self._flush_once()
                if self.journal is not None:
                    self.journal.rotate()
            except Exception:  # never let the writer die; rows are already spooled
                log.exception("record writer loop error")

    def _take_batch(self) -> tuple[Rows, Rows, Rows, list[Segment]]:
        taken = [self._attempts.popleft() for _ in range(min(self.batch_size, len(self._attempts)))]
        task_ids = list(self._tasks)[: self.batch_size]
        tasks = [self._tasks.pop(t) for t in task_ids]
        outcome_ids = list(self._outcomes)[: self.batch_size]
        outcomes = [self._outcomes.pop(o) for o in outcome_ids]
        segments = [seg for seg, _ in taken if seg is not None]
        for t in task_ids:
            segments.extend(self._task_segments.pop(t, ()))
        for o in outcome_ids:
            segments.extend(self._outcome_segments.pop(o, ()))
        return [row for _, row in taken], tasks, outcomes, segments

    def _durable(self, segments: list[Segment]) -> None:
        if self.journal is not None:
            for seg in segments:
                self.journal.durable(seg)

    async def _flush_once(self) -> None:
        attempts, tasks, outcomes, segments = self._take_batch()
        if not attempts and not tasks and not outcomes:
            return
        try:
            await self._write(attempts, tasks, outcomes)
            self._durable(segments)
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
            self._spool_or_requeue(attempts, tasks, outcomes, segments)
            if not isinstance(exc, Exception):
                raise

    def _spool_or_requeue(
        self, attempts: Rows, tasks: Rows, outcomes: Rows, segments: list[Segment]
    ) -> None:
        try:
            self._spool(attempts, tasks, outcomes)
            self._durable(segments)
        except OSError:
            log.exception("cannot spool to %s; keeping the rows in memory", self.spool_dir)
            # still journaled in their segments (not durable yet): requeue without re-journaling
            self._attempts.extendleft((None, row) for row in reversed(attempts))
            for row in tasks:
                self._tasks.setdefault(row["id"], row)
            for row in outcomes:
                self._outcomes.setdefault(row["id"], row)

    async def _write(self, attempts: Rows, tasks: Rows, outcomes: Rows = ()) -> None:
        async with self._write_lock, self.engine.begin() as conn:
            if tasks:
                await conn.execute(self._upsert_tasks, tasks)
            if attempts:
                # one shape per batch: a row spooled or journaled before a column existed
                # (requests.tags 0006, cache columns 0007) gets its default; today's goes as is
                attempts = [
                    r if r.keys() == _COLS.keys() else {c: r.get(c, d) for c, d in _COLS.items()}
                    for r in attempts
                ]
                await conn.execute(self._upsert_attempts, attempts)
            if outcomes:
                await conn.execute(self._upsert_outcomes, list(outcomes))

    @functools.cached_property
    def _upsert_tasks(self) -> Any:
        """Insert tasks; on conflict keep the later last_seen_at (one statement per batch, built
        once per writer like the two below: rebuilding them on every flush cost 0.5 ms)."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(tasks_table)
        latest = (func.greatest if dialect is postgresql else func.max)(
            tasks_table.c.last_seen_at, stmt.excluded.last_seen_at
        )
        return stmt.on_conflict_do_update(index_elements=["id"], set_={"last_seen_at": latest})

    @functools.cached_property
    def _upsert_attempts(self) -> Any:
        """Insert attempts; a repeated row changes nothing, except that a final row replaces an
        ``interrupted`` one recovered from a journal."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(requests_table)
        cols = [c.name for c in requests_table.columns if c.name != "id"]
        return stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={c: stmt.excluded[c] for c in cols},
            where=(requests_table.c.status == INTERRUPTED) & (stmt.excluded.status != INTERRUPTED),
        )

    @functools.cached_property
    def _upsert_outcomes(self) -> Any:
        """Insert outcomes; on conflict replace the row unless it is newer than this write."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(outcomes_table)
        cols = [c.name for c in outcomes_table.columns if c.name not in ("id", "created_at")]
        return stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={c: stmt.excluded[c] for c in cols},
            where=outcomes_table.c.updated_at <= stmt.excluded.updated_at,
        )

    async def recover_journals(self) -> int:
        """Write what dead writers journaled on this spool directory (their final rows, and an
        ``interrupted`` row for each call they started and never finished); spooled if the
        store is down. Returns the attempt rows recovered."""
        if self.journal is None:
            return 0
        paths = self.journal.orphans()
        if not paths:
            return 0
        attempts: dict[str, dict[str, Any]] = {}
        tasks: dict[str, dict[str, Any]] = {}
        outcomes: dict[str, dict[str, Any]] = {}
        for path in paths:
            found, found_tasks, found_outcomes = read_orphan(path)
            for row in found:  # a final row wins over a stub carried in another segment
                if row["id"] not in attempts or attempts[row["id"]]["status"] == INTERRUPTED:
                    attempts[row["id"]] = row
            tasks.update({t["id"]: t for t in found_tasks})
            outcomes.update({o["id"]: o for o in found_outcomes})
        rows, task_rows = list(attempts.values()), list(tasks.values())
        try:
            await self._write(rows, task_rows, list(outcomes.values()))
        except Exception:  # an OSError spooling leaves the journals for the next try
            self._spool(rows, task_rows, list(outcomes.values()))
        for path in paths:
            path.unlink(missing_ok=True)
        lost = sum(1 for r in rows if r["status"] == INTERRUPTED)
        self.stats.recovered += len(rows)
        log.warning(
            "recovered %d attempt rows from %d journal(s) of a dead writer (%d calls it never "
            "finished recorded as interrupted)",
            len(rows),
            len(paths),
            lost,
        )
        return len(rows)

    def _spool(self, attempts: Rows, tasks: Rows, outcomes: Rows = ()) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.jsonl"
        tmp = self.spool_dir / (name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for kind, rows in (("task", tasks), ("attempt", attempts), ("outcome", outcomes)):
                for row in rows:
                    fh.write(json.dumps({"k": kind, "r": encode_row(row)}))
                    fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        size = tmp.stat().st_size
        tmp.rename(self.spool_dir / name)  # atomic: a replayer never sees half a file
        self.stats.spooled += len(attempts)
        self.spool_bytes += size
        if self.spool_full:
            log.error(
                "spool %s is full (%d bytes >= %d): refusing new requests until the store is back",
                self.spool_dir,
                self.spool_bytes,
                self.max_spool_bytes,
            )

    def spool_files(self) -> list[Path]:
        return sorted(self.spool_dir.glob("*.jsonl")) if self.spool_dir.exists() else []

    async def replay_spool(self) -> int:
        """Write spooled batches to the store; returns attempt rows replayed."""
        replayed = 0
        for path in self.spool_files():
            rows: dict[str, list[dict[str, Any]]] = {"task": [], "attempt": [], "outcome": []}
            for line in path.read_text(encoding="utf-8").split("\n"):
                if not line.strip():
                    continue
                item = json.loads(line)
                rows[item["k"]].append(decode_row(item["r"]))
            attempts = rows["attempt"]  # _write raises while the store is still down
            await self._write(attempts, rows["task"], rows["outcome"])
            size = path.stat().st_size
            path.unlink()
            self.spool_bytes = max(0, self.spool_bytes - size)
            replayed += len(attempts)
            self.stats.replayed += len(attempts)
        if replayed:
            log.info("replayed %d spooled attempt rows into the store", replayed)
            self.stats.store_up = True
        return replayed

    async def _replay_loop(self) -> None:
        while True:
            await asyncio.sleep(self.replay_interval_s)
            try:
                await self.recover_journals()  # a peer on this spool directory died
            except Exception as exc:
                log.debug("journal recovery deferred: %s", exc)
            if not self.spool_files():
                continue
            try:
                await self.replay_spool()
            except Exception as exc:
                log.debug("spool replay deferred: %s", exc)
