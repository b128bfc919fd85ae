"""Recording task outcomes: a verdict on whether a task succeeded, from one of three sources —
the client's feedback, an automatic validator, or a judge model — stored in ``outcomes``, one
row per (task, source, scope) where scope is the request the outcome is about ("" = the whole
task).

Idempotency: an outcome row's id is derived from (task, source, scope), and a write replaces
the row. Writing the same verdict twice (a client retry) leaves one row and reports
``unchanged``; a different verdict for the same task or request is a correction and replaces
the earlier one (``updated``). An outcome can never be counted twice.

Validator verdicts and judge calls are recorded off the request path (``off_request_path``):
the client's response never waits for them; ``drain_outcomes`` waits for those in flight
(shutdown, tests). How a task's outcome is decided from its rows lives in
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


async def record_outcome(engine: AsyncEngine, outcome: Outcome) -> tuple[str, dict[str, Any]]:
    """Insert or replace an outcome; returns (created|updated|unchanged, the stored row)."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
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
    return await queries.save_outcome(engine, values)


_pending: set[asyncio.Task[Any]] = set()
log = logging.getLogger("tollgate.feedback")  # the name operators know


def off_request_path(work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    """Run ``work`` (recording an outcome, a judge call) as a task of its own that the client's
    response never waits for; ``drain_outcomes()`` waits for it. ``work`` handles its errors."""
    task = asyncio.create_task(work, name=name)
    _pending.add(task)
    task.add_done_callback(_pending.discard)
    return task


def schedule_outcome(engine: AsyncEngine, outcome: Outcome) -> asyncio.Task[Any]:
    """Record an outcome off the request path (validators): fire and forget, logged on
    failure. ``await drain_outcomes()`` waits for those in flight (shutdown, tests)."""

    async def write() -> None:
        try:
            await record_outcome(engine, outcome)
        except Exception:
            log.exception(
                "could not record a %s outcome for task %s", outcome.source, outcome.task_id
            )

    return off_request_path(write(), f"tollgate-outcome-{outcome.id[:8]}")


async def drain_outcomes(timeout_s: float | None = None) -> None:
    """Wait for the outcome writes and judge calls in flight on this event loop (tests, and
    shutdown before the store closes); those still running after ``timeout_s`` are cancelled."""
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
