"""Daily report roll-ups: closed UTC days (before today) summarised into
``report_attempts_daily`` and ``report_tasks_daily``, one row per cell.

Before each report, :func:`refresh_rollups` rolls up days not yet summarised, re-summarises
days whose tasks got a new outcome since the last refresh, and days whose tasks got attempts on
a later day. Attempt rows replayed from a spool into an already summarised day are picked up by
``tollgate report refresh --rebuild``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.analytics.reports.cells import (
    ATTEMPT_SUMS,
    CELL,
    TASK_SUMS,
    attempt_cells,
    day_expr,
    no_jit,
    task_cells,
)
from gateway.store.models import (
    outcomes,
    report_attempts_daily,
    report_rollup_days,
    report_rollup_state,
    report_tasks_daily,
    tasks,
)
from gateway.store.models import requests as R

ROLLUP_LOCK = 746_455_373


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _resummarise(conn: AsyncConnection, dialect: str, day: date) -> None:
    start, end = day_bounds(day)
    key = day.isoformat()
    for table in (report_attempts_daily, report_tasks_daily):
        await conn.execute(delete(table).where(table.c.day == key))
    await conn.execute(
        report_attempts_daily.insert().from_select(
            [*CELL, *ATTEMPT_SUMS], attempt_cells(dialect, None, start, end)
        )
    )
    await conn.execute(
        report_tasks_daily.insert().from_select(
            [*CELL, *TASK_SUMS], task_cells(dialect, None, start, end)
        )
    )
    await conn.execute(delete(report_rollup_days).where(report_rollup_days.c.day == key))
    await conn.execute(report_rollup_days.insert().values(day=key, refreshed_at=datetime.now(UTC)))


async def _days_to_refresh(
    conn: AsyncConnection, dialect: str, today: date, rebuild: bool
) -> list[date]:
    done = {str(d) for d in (await conn.execute(select(report_rollup_days.c.day))).scalars()}
    first = (await conn.execute(select(func.min(R.c.created_at)))).scalar()
    if first is None:
        return []
    day, closed = _utc(first).date(), set()
    while day < today:
        closed.add(day)
        day += timedelta(days=1)
    missing = {d for d in closed if rebuild or d.isoformat() not in done}
    dirty = set(missing)
    mark = (
        await conn.execute(
            select(report_rollup_state.c.at).where(report_rollup_state.c.name == "outcomes")
        )
    ).scalar()
    first_day = day_expr(dialect, tasks.c.created_at)
    if mark is not None and not rebuild:
        changed = select(outcomes.c.task_id).where(outcomes.c.updated_at > _utc(mark))
        days = await conn.execute(select(first_day).where(tasks.c.id.in_(changed)).distinct())
        dirty |= {date.fromisoformat(d) for d in days.scalars() if d}
    for d in sorted(missing):  # tasks first seen earlier that had attempts on a new day
        start, end = day_bounds(d)
        later = select(R.c.task_id).where(R.c.created_at >= start, R.c.created_at < end)
        days = await conn.execute(
            select(first_day).where(tasks.c.id.in_(later), tasks.c.created_at < start).distinct()
        )
        dirty |= {date.fromisoformat(x) for x in days.scalars() if x}
    return sorted(d for d in dirty if d in closed)


async def refresh_rollups(
    engine: AsyncEngine, *, today: date | None = None, rebuild: bool = False
) -> list[str]:
    """Summarise closed days that need it (see the module docstring); returns the days done.

    A read-only check comes first, so that a report with nothing to refresh writes nothing.
    """
    today = today or datetime.now(UTC).date()
    dialect = engine.dialect.name
    started = datetime.now(UTC)
    async with engine.connect() as conn:
        await no_jit(conn)
        if not rebuild and not await _days_to_refresh(conn, dialect, today, rebuild):
            return []
    async with engine.begin() as conn:
        if dialect == "postgresql":  # one refresher at a time across replicas
            await conn.execute(text(f"SELECT pg_advisory_xact_lock({ROLLUP_LOCK})"))
        await no_jit(conn)
        todo = await _days_to_refresh(conn, dialect, today, rebuild)  # again, under the lock
        for d in todo:
            await _resummarise(conn, dialect, d)
        await conn.execute(
            delete(report_rollup_state).where(report_rollup_state.c.name == "outcomes")
        )
        await conn.execute(report_rollup_state.insert().values(name="outcomes", at=started))
    return [d.isoformat() for d in todo]
