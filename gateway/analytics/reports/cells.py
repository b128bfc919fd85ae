"""The cell queries: attempts and tasks summed per cell (day, tenant, key, policy, backend).

A report and the daily roll-ups read the same cells (the roll-ups store them for closed days),
so both paths give the same figures. Attempt figures are counted where the attempt happened;
task figures once per task, in the cell of the day it was first seen and of its *final*
attempt (the last successful one, else the last one). SQLAlchemy Core that runs on SQLite and
PostgreSQL alike; only the day bucket and the latency bucket differ by dialect.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, case, false, func, select, text, true
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.analytics.reports.latency import latency_bucket_expr
from gateway.analytics.reports.task_outcome import verdicts
from gateway.store.models import LATENCY_BUCKETS, tasks
from gateway.store.models import requests as R

ATTEMPT_SUMS = (
    "attempts",
    "requests",
    "errors",
    "extra",
    "pt",
    "ct",
    "ok_pt",
    "ok_ct",
    "spend",
    "unpriced",
    *(f"l{k}" for k in range(LATENCY_BUCKETS)),
)
TASK_SUMS = ("tasks", "succeeded", "failed", "task_spend")
CELL = ("day", "tenant_id", "key_id", "policy", "backend")
CLOCK_SKEW = timedelta(hours=1)


def count_if(cond: ColumnElement[bool]) -> Any:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


def day_expr(dialect: str, column: Any) -> Any:
    """The UTC day of a timestamp as 'YYYY-MM-DD'."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)


def in_window(column: Any, start: datetime | None, end: datetime | None) -> list[Any]:
    conds = []
    if start is not None:
        conds.append(column >= start)
    if end is not None:
        conds.append(column < end)
    return conds


async def no_jit(conn: AsyncConnection) -> None:
    """Planner settings for these analytic queries on PostgreSQL (this transaction only).

    JIT spends seconds compiling the wide aggregates for no gain; and the row estimate after a
    ``row_number() = 1`` filter is so low (a handful of rows for thousands) that the planner
    picks nested loops that re-scan a subquery per row — hash joins are always right here.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SET LOCAL jit = off"))
        await conn.execute(text("SET LOCAL enable_nestloop = off"))


def attempt_cells(
    dialect: str, tenant_id: str | None, start: datetime | None, end: datetime | None
) -> Select[Any]:
    """Attempt sums per cell for attempts created in [start, end) (raw rows)."""
    bucket = latency_bucket_expr(dialect, R.c.latency_ms)
    conds = in_window(R.c.created_at, start, end)
    if tenant_id is not None:
        conds.append(R.c.tenant_id == tenant_id)
    a = (
        select(
            day_expr(dialect, R.c.created_at).label("day"),
            R.c.tenant_id,
            func.coalesce(R.c.key_id, "").label("key_id"),
            func.coalesce(R.c.policy, "").label("policy"),
            R.c.backend,
            R.c.attempt,
            R.c.status,
            R.c.prompt_tokens,
            R.c.completion_tokens,
            R.c.cost_usd,
            case((R.c.latency_ms.is_(None), -1), else_=bucket).label("bucket"),
        )
        .where(*conds)
        .subquery("a")
    )
    ok = a.c.status == "ok"
    cell = [a.c.day, a.c.tenant_id, a.c.key_id, a.c.policy, a.c.backend]
    return select(
        *cell,
        func.count().label("attempts"),
        count_if(a.c.attempt == 1).label("requests"),
        count_if(a.c.status != "ok").label("errors"),
        count_if(a.c.attempt > 1).label("extra"),
        func.coalesce(func.sum(a.c.prompt_tokens), 0).label("pt"),
        func.coalesce(func.sum(a.c.completion_tokens), 0).label("ct"),
        func.coalesce(func.sum(case((ok, a.c.prompt_tokens), else_=0)), 0).label("ok_pt"),
        func.coalesce(func.sum(case((ok, a.c.completion_tokens), else_=0)), 0).label("ok_ct"),
        func.coalesce(func.sum(a.c.cost_usd), 0).label("spend"),
        count_if(a.c.cost_usd.is_(None)).label("unpriced"),
        *[count_if(ok & (a.c.bucket == k)).label(f"l{k}") for k in range(LATENCY_BUCKETS)],
    ).group_by(*cell)


def task_cells(
    dialect: str, tenant_id: str | None, start: datetime | None, end: datetime | None
) -> Select[Any]:
    """Task sums per cell for tasks first seen in [start, end), with all their attempts."""
    conds = in_window(tasks.c.created_at, start, end)
    if tenant_id is not None:
        conds.append(tasks.c.tenant_id == tenant_id)
    t = (  # a CTE: used three times below, computed once
        select(tasks.c.id, tasks.c.tenant_id, day_expr(dialect, tasks.c.created_at).label("day"))
        .where(*conds)
        .cte("t")
    )
    ids = select(t.c.id)
    # a task's attempts and outcomes come after it was first seen: bound their scans by time
    # (an index range instead of the whole table), with a margin for replicas' clock skew
    since = start - CLOCK_SKEW if start is not None else None
    final_first = (
        case((R.c.status == "ok", 0), else_=1),
        R.c.created_at.desc(),
        R.c.attempt.desc(),
    )
    a = (
        select(
            R.c.task_id,
            R.c.key_id,
            R.c.policy,
            R.c.backend,
            func.row_number().over(partition_by=R.c.task_id, order_by=final_first).label("rn"),
            func.sum(R.c.cost_usd).over(partition_by=R.c.task_id).label("task_spend"),
        )
        .where(R.c.task_id.in_(ids), *in_window(R.c.created_at, since, None))
        .subquery("task_attempts")
    )
    final = select(a).where(a.c.rn == 1).subquery("final")
    v = verdicts(tenant_id, ids, since)
    cell = [
        t.c.day,
        t.c.tenant_id,
        func.coalesce(final.c.key_id, "").label("key_id"),
        func.coalesce(final.c.policy, "").label("policy"),
        final.c.backend,
    ]
    return (
        select(
            *cell,
            func.count().label("tasks"),
            count_if(v.c.success.is_(true())).label("succeeded"),
            count_if(v.c.success.is_(false())).label("failed"),
            func.coalesce(func.sum(final.c.task_spend), 0).label("task_spend"),
        )
        .select_from(t.join(final, final.c.task_id == t.c.id).outerjoin(v, v.c.task_id == t.c.id))
        .group_by(*cell)
    )
