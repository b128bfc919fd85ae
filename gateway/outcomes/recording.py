"""Recording task outcomes: a verdict on whether a task succeeded, from one of three sources —
the client's feedback, an automatic validator, or a judge model — stored in ``outcomes``, one
row per (task, source, scope) where scope is the request the outcome is about ("" = the whole
task).

Idempotency: an outcome row's id is derived from (task, source, scope), and a write replaces
the row. Writing the same verdict twice (a client retry) leaves one row and reports
``unchanged``; a different verdict for the same task or request is a correction and replaces
the earlier one (``updated``). An outcome can never be counted twice.

Client feedback is written at once (``record_outcome``: the client waits for its result).
Validator verdicts and judge verdicts never touch the store on the request path: they go to
the record writer (``schedule_outcome``), which writes them in batches with the attempt rows,
journals them and spools them while the store is down — one transaction per batch instead of
one per request (issues 9/11: per-request transactions made SQLite answer "database is
locked" under routed load). Judge calls run off the request path (``off_request_path``);
``drain_outcomes`` waits for those in flight and flushes the writer (shutdown, tests).
How a task's outcome is decided from its rows lives in
``gateway.analytics.reports`` (client feedback first, then the judge, then validators; within a
source the latest wins).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from gateway.store import queries
from policies import ValidationResult

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from gateway.store.writer import RecordWriter

Source = Literal["feedback", "validator", "judge"]
SOURCES: tuple[Source, ...] = ("feedback", "judge", "validator")  # precedence order
OUTCOME_NAMESPACE = uuid.UUID("0b7c2a55-3f1e-4f7a-8d0c-5e6a9b1d2c34")
MAX_COMMENT = 4000


def outcome_id(task_id: str, source: str, scope: str) -> str:
    return uuid.uuid5(OUTCOME_NAMESPACE, f"{task_id}\x00{source}\x00{scope}").hex


@dataclass(frozen=True)
class Outcome:
    """One verdict about a task (or one request of it) to record."""

    tenant_id: str
    task_id: str  # internal task id (``task_uuid``)
    source: Source
    success: bool
    request_id: str | None = None
    score: float | None = None
    comment: str | None = None
    detail: dict[str, Any] | None = None
    backend: str | None = None
    cost_usd: Decimal | None = None

    @property
    def scope(self) -> str:
        return self.request_id or ""

    @property
    def id(self) -> str:
        return outcome_id(self.task_id, self.source, self.scope)


def outcome_row(outcome: Outcome) -> dict[str, Any]:
    """The ``outcomes`` row of a verdict, stamped now."""
    now = datetime.now(UTC)
    return {
        "id": outcome.id,
        "tenant_id": outcome.tenant_id,
        "task_id": outcome.task_id,
        "request_id": outcome.request_id,
        "scope": outcome.scope,
        "source": outcome.source,
        "success": outcome.success,
        "score": outcome.score,
        "comment": outcome.comment,
        "detail": outcome.detail,
        "backend": outcome.backend,
        "cost_usd": outcome.cost_usd,
        "created_at": now,
        "updated_at": now,
    }


async def record_outcome(engine: AsyncEngine, outcome: Outcome) -> tuple[str, dict[str, Any]]:
    """Insert or replace an outcome now (client feedback); returns (created|updated|unchanged,
    the stored row)."""
    return await queries.save_outcome(engine, outcome_row(outcome))


_pending: set[asyncio.Task[Any]] = set()
log = logging.getLogger("tollgate.feedback")  # the name operators know


def off_request_path(work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    """Run ``work`` (recording an outcome, a judge call) as a task of its own that the client's
    response never waits for; ``drain_outcomes()`` waits for it. ``work`` handles its errors."""
    task = asyncio.create_task(work, name=name)
    _pending.add(task)
    task.add_done_callback(_pending.discard)
    return task


def schedule_outcome(writer: RecordWriter, outcome: Outcome) -> None:
    """Record a validator's or the judge's verdict through the record writer: no I/O but a
    journal line, never blocks or fails the caller; written with the writer's next batch
    (spooled while the store is down)."""
    writer.submit_outcome(outcome_row(outcome))


async def drain_outcomes(
    timeout_s: float | None = None, writer: RecordWriter | None = None
) -> None:
    """Wait for the judge calls in flight on this event loop (tests, and shutdown before the
    store closes; those still running after ``timeout_s`` are cancelled), then flush
    ``writer`` so the verdicts it holds are in the store (or spooled)."""
    await _drain_tasks(timeout_s)
    if writer is not None:
        await writer.flush()


async def _drain_tasks(timeout_s: float | None) -> None:
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    while True:
        mine = [t for t in _pending if t.get_loop() is loop and not t.done()]
        if not mine:
            return
        left = None if deadline is None else max(0.0, deadline - loop.time())
        _, late = await asyncio.wait(mine, timeout=left)
        if late:
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            log.warning("shutdown: cancelled %d outcome/judge task(s) still running", len(late))
            return


def validator_outcome(
    tenant_id: str, task_id: str, request_id: str, results: list[ValidationResult]
) -> Outcome:
    """The outcome of a policy's validators on one answer (``policies.run_validators``)."""
    failed = [r for r in results if not r.ok]
    return Outcome(
        tenant_id=tenant_id,
        task_id=task_id,
        source="validator",
        success=not failed,
        request_id=request_id,
        comment="; ".join(f"{r.validator}: {r.reason}" for r in failed)[:MAX_COMMENT] or None,
        detail={
            "checks": [{"validator": r.validator, "ok": r.ok, "reason": r.reason} for r in results]
        },
    )
