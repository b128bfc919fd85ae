"""Spend and task reports over the store: the SQL behind ``tollgate report``, ``GET /v1/spend``
and ``/dashboard``, and the daily roll-ups that keep them fast on millions of rows.

Everything here is SQLAlchemy Core that runs on SQLite and PostgreSQL alike (window functions
included); only the day bucket differs by dialect.

Definitions (docs/reports.md explains them with examples):

* A task's **outcome** is decided from its ``outcomes`` rows: client feedback first, then the
  judge, then validators; within a source a task-level verdict beats a per-request one, and the
  latest wins. A task with no outcome row is **unknown** — never counted as a success.
* Attempt figures (requests, attempts, tokens, spend, errors, latency) are counted where the
  attempt happened: its day, tenant, key, policy and backend. Task figures (tasks, succeeded,
  failed, whole-task spend) are counted once per task, in the cell of the day the task was first
  seen and of its *final* attempt (the last successful one, else the last one) — so grouping
  by backend counts a task for the backend that answered it.
* **Cost per successful task** = money spent ÷ tasks that succeeded, ``None`` when no task is
  known to have succeeded. In the *spend* report the money is the group's attempt spend (a
  backend's failed attempts included); in the *tasks* report it is the whole spend of the
  group's tasks (every attempt, retry and fallback, on any backend).
* **Success rate** = succeeded ÷ tasks with a known outcome (``None`` when none is known);
  ``unknown`` says how many tasks it leaves out.
* **Fallback rate** = extra attempts (retries and fallbacks: attempt number > 1) ÷ attempts;
  **error rate** = failed attempts ÷ attempts. Latency percentiles are over successful
  attempts, from log-scale buckets (each 1.25 times wider: within about ±12%).
* **Judge spend** (spend reports): the judge's verdicts recorded in the range and what its calls
  cost. It is evaluation overhead, recorded with the verdicts (``outcomes.cost_usd``), never as
  attempts: traffic spend and cost per successful task do not include it.
* **Savings**: what the recorded traffic would have cost on a baseline backend, priced from the
  recorded token counts of each successful attempt at the baseline's prices (the baseline
  defaults to the most expensive backend), against what it did cost.

Roll-ups: closed UTC days (before today) are summarised into ``report_attempts_daily`` and
``report_tasks_daily``, one row per (day, tenant, key, policy, backend) cell. A report reads
whole days in its range from the roll-ups and the rest (today, partial days at the edges) from
the raw rows, with the same cell queries, so both paths give the same figures. Before each
report, :func:`refresh_rollups` rolls up days not yet summarised, re-summarises days whose tasks
got a new outcome since the last refresh, and days whose tasks got attempts on a later day.
Attempt rows replayed from a spool into an already summarised day are picked up by
``tollgate report refresh --rebuild``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, get_args

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    case,
    delete,
    false,
    func,
    literal,
    select,
    text,
    true,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.pricing import Price, format_usd
from gateway.store.models import (
    LATENCY_BUCKETS,
    api_keys,
    outcomes,
    report_attempts_daily,
    report_rollup_days,
    report_rollup_state,
    report_tasks_daily,
    tasks,
    tenants,
)
from gateway.store.models import requests as R

GroupBy = Literal["backend", "policy", "tenant", "key", "tag", "day"]
GROUP_BYS: tuple[str, ...] = get_args(GroupBy)
ReportKind = Literal["spend", "tasks"]
TOTAL = "(total)"
NONE_LABEL = "(none)"
BUCKET_RATIO = 1.25
#: upper bound (ms, exclusive) of latency bucket k; the last bucket is open
BUCKET_UPPER = [BUCKET_RATIO ** (k + 1) for k in range(LATENCY_BUCKETS - 1)]
ROLLUP_LOCK = 746_455_373
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


@dataclass(frozen=True)
class ReportQuery:
    """What to report on: a time range [start, end), one tenant or all, and the grouping."""

    group_by: GroupBy = "backend"
    start: datetime | None = None
    end: datetime | None = None
    tenant_id: str | None = None  # None: every tenant (admin)
    tags: dict[str, tuple[str, ...]] = field(default_factory=dict)  # tag -> backends


@dataclass
class GroupStats:
    """One row of a report (a group, or the total)."""

    group: str
    label: str
    kind: ReportKind = "spend"
    requests: int = 0
    attempts: int = 0
    errors: int = 0
    extra_attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    spend: Decimal = Decimal(0)
    unpriced_attempts: int = 0
    tasks: int = 0
    succeeded: int = 0
    failed: int = 0
    task_spend: Decimal = Decimal(0)
    ok_prompt_tokens: int = 0
    ok_completion_tokens: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * LATENCY_BUCKETS)
    baseline_cost: Decimal | None = None

    @property
    def unknown(self) -> int:
        return self.tasks - self.succeeded - self.failed

    @property
    def success_rate(self) -> float | None:
        known = self.succeeded + self.failed
        return self.succeeded / known if known else None

    @property
    def cost_per_successful_task(self) -> Decimal | None:
        money = self.task_spend if self.kind == "tasks" else self.spend
        return money / self.succeeded if self.succeeded else None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.attempts if self.attempts else None

    @property
    def fallback_rate(self) -> float | None:
        return self.extra_attempts / self.attempts if self.attempts else None

    @property
    def p50_latency_ms(self) -> float | None:
        return histogram_percentile(self.latency, 0.5)

    @property
    def p95_latency_ms(self) -> float | None:
        return histogram_percentile(self.latency, 0.95)

    def add(self, sums: dict[str, Any], prefix: str = "") -> None:
        """Add summed cell columns (from ATTEMPT_SUMS / TASK_SUMS)."""
        for col, value in sums.items():
            if value is None:
                continue
            if col in ("spend", "task_spend"):
                current = getattr(self, col)
                setattr(self, col, current + Decimal(str(value)))
            elif col.startswith("l") and col[1:].isdigit():
                self.latency[int(col[1:])] += int(value)
            else:
                attr = _ATTR.get(col, col)
                setattr(self, attr, getattr(self, attr) + int(value))

    def as_dict(self) -> dict[str, Any]:
        cpst = self.cost_per_successful_task
        return {
            "group": self.group,
            "label": self.label,
            "requests": self.requests,
            "attempts": self.attempts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "spend_usd": format_usd(self.spend),
            "task_spend_usd": format_usd(self.task_spend),
            "unpriced_attempts": self.unpriced_attempts,
            "tasks": self.tasks,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "unknown": self.unknown,
            "success_rate": _round(self.success_rate),
            "cost_per_successful_task_usd": format_usd(cpst) if cpst is not None else None,
            "p50_latency_ms": _round(self.p50_latency_ms, 1),
            "p95_latency_ms": _round(self.p95_latency_ms, 1),
            "error_rate": _round(self.error_rate),
            "fallback_rate": _round(self.fallback_rate),
            "baseline_cost_usd": format_usd(self.baseline_cost)
            if self.baseline_cost is not None
            else None,
        }


_ATTR = {
    "extra": "extra_attempts",
    "pt": "prompt_tokens",
    "ct": "completion_tokens",
    "ok_pt": "ok_prompt_tokens",
    "ok_ct": "ok_completion_tokens",
    "unpriced": "unpriced_attempts",
}


@dataclass
class Savings:
    """The recorded traffic priced on a baseline backend, against what it did cost."""

    baseline: str
    actual_spend: Decimal
    baseline_cost: Decimal
    actual_success_rate: float | None
    baseline_success_rate: float | None  # of tasks the baseline itself answered, where known
    baseline_tasks_known: int

    @property
    def saved(self) -> Decimal:
        return self.baseline_cost - self.actual_spend

    @property
    def saved_fraction(self) -> float | None:
        return float(self.saved / self.baseline_cost) if self.baseline_cost else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "actual_spend_usd": format_usd(self.actual_spend),
            "baseline_cost_usd": format_usd(self.baseline_cost),
            "saved_usd": format_usd(self.saved),
            "saved_fraction": _round(self.saved_fraction),
            "actual_success_rate": _round(self.actual_success_rate),
            "baseline_success_rate": _round(self.baseline_success_rate),
            "baseline_tasks_with_known_outcome": self.baseline_tasks_known,
        }


@dataclass
class JudgeSpend:
    """The judge's verdicts and what they cost over a report's range: evaluation overhead, kept
    apart from traffic spend (judge calls are never attempt rows)."""

    verdicts: int = 0
    passed: int = 0
    failed: int = 0
    spend: Decimal = Decimal(0)
    unpriced: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdicts": self.verdicts,
            "passed": self.passed,
            "failed": self.failed,
            "spend_usd": format_usd(self.spend),
            "unpriced_verdicts": self.unpriced,
        }


@dataclass
class Report:
    kind: ReportKind
    query: ReportQuery
    rows: list[GroupStats]
    total: GroupStats
    savings: Savings | None = None
    judge: JudgeSpend | None = None  # spend reports only

    def as_dict(self) -> dict[str, Any]:
        q = self.query
        return {
            "object": "tollgate.report",
            "kind": self.kind,
            "group_by": q.group_by,
            "start": q.start.isoformat() if q.start else None,
            "end": q.end.isoformat() if q.end else None,
            "rows": [r.as_dict() for r in self.rows],
            "total": self.total.as_dict(),
            "savings": self.savings.as_dict() if self.savings else None,
            "judge": self.judge.as_dict() if self.judge else None,
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def histogram_percentile(counts: list[int], q: float) -> float | None:
    """The q-quantile of a latency histogram, interpolated linearly inside its bucket."""
    n = sum(counts)
    if n == 0:
        return None
    rank = q * (n - 1)
    seen = 0
    for k, c in enumerate(counts):
        if c and rank < seen + c:
            lo = BUCKET_UPPER[k - 1] if k > 0 else 0.0
            hi = BUCKET_UPPER[k] if k < len(BUCKET_UPPER) else lo * BUCKET_RATIO
            return lo + (hi - lo) * ((rank - seen + 0.5) / c)
        seen += c
    return None


def latency_bucket(ms: float) -> int:
    """The bucket of a latency (the same rule as the SQL in the cell queries)."""
    for k, upper in enumerate(BUCKET_UPPER):
        if ms < upper:
            return k
    return LATENCY_BUCKETS - 1


# -- building blocks ---------------------------------------------------------------------------
def _count_if(cond: ColumnElement[bool]) -> Any:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


def day_expr(dialect: str, column: Any) -> Any:
    """The UTC day of a timestamp as 'YYYY-MM-DD'."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)


def _window(column: Any, start: datetime | None, end: datetime | None) -> list[Any]:
    conds = []
    if start is not None:
        conds.append(column >= start)
    if end is not None:
        conds.append(column < end)
    return conds


def verdicts(tenant_id: str | None, task_ids: Any = None, since: datetime | None = None) -> Any:
    """Subquery (task_id, success, source): each task's deciding outcome row."""
    O = outcomes  # noqa: E741
    source_rank = case((O.c.source == "feedback", 0), (O.c.source == "judge", 1), else_=2)
    scope_rank = case((O.c.scope == "", 0), else_=1)
    rn = func.row_number().over(
        partition_by=O.c.task_id, order_by=(source_rank, scope_rank, O.c.updated_at.desc())
    )
    inner = select(O.c.task_id, O.c.success, O.c.source, rn.label("rn"))
    if tenant_id is not None:
        inner = inner.where(O.c.tenant_id == tenant_id)
    if task_ids is not None:
        inner = inner.where(O.c.task_id.in_(task_ids))
    if since is not None:
        inner = inner.where(O.c.updated_at >= since)
    sub = inner.subquery("ranked_outcomes")
    return (
        select(sub.c.task_id, sub.c.success, sub.c.source).where(sub.c.rn == 1).subquery("verdict")
    )


def latency_bucket_expr(dialect: str, ms: Any) -> Any:
    """SQL for :func:`latency_bucket`: ``floor(log_1.25(ms))`` clamped to the buckets."""
    if dialect == "postgresql":  # ln() is much faster there than a 63-branch CASE
        k = func.floor(func.ln(func.greatest(ms, 1.0)) / math.log(BUCKET_RATIO))
        return func.least(LATENCY_BUCKETS - 1, func.greatest(0, k)).cast(Integer)
    return case(
        *[(ms < upper, k) for k, upper in enumerate(BUCKET_UPPER)], else_=LATENCY_BUCKETS - 1
    )


async def _no_jit(conn: AsyncConnection) -> None:
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
    conds = _window(R.c.created_at, start, end)
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
        _count_if(a.c.attempt == 1).label("requests"),
        _count_if(a.c.status != "ok").label("errors"),
        _count_if(a.c.attempt > 1).label("extra"),
        func.coalesce(func.sum(a.c.prompt_tokens), 0).label("pt"),
        func.coalesce(func.sum(a.c.completion_tokens), 0).label("ct"),
        func.coalesce(func.sum(case((ok, a.c.prompt_tokens), else_=0)), 0).label("ok_pt"),
        func.coalesce(func.sum(case((ok, a.c.completion_tokens), else_=0)), 0).label("ok_ct"),
        func.coalesce(func.sum(a.c.cost_usd), 0).label("spend"),
        _count_if(a.c.cost_usd.is_(None)).label("unpriced"),
        *[_count_if(ok & (a.c.bucket == k)).label(f"l{k}") for k in range(LATENCY_BUCKETS)],
    ).group_by(*cell)


def task_cells(
    dialect: str, tenant_id: str | None, start: datetime | None, end: datetime | None
) -> Select[Any]:
    """Task sums per cell for tasks first seen in [start, end), with all their attempts."""
    conds = _window(tasks.c.created_at, start, end)
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
        .where(R.c.task_id.in_(ids), *_window(R.c.created_at, since, None))
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
            _count_if(v.c.success.is_(true())).label("succeeded"),
            _count_if(v.c.success.is_(false())).label("failed"),
            func.coalesce(func.sum(final.c.task_spend), 0).label("task_spend"),
        )
        .select_from(t.join(final, final.c.task_id == t.c.id).outerjoin(v, v.c.task_id == t.c.id))
        .group_by(*cell)
    )


# -- roll-ups ----------------------------------------------------------------------------------
def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _resummarise(conn: AsyncConnection, dialect: str, day: date) -> None:
    start, end = _day_bounds(day)
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
        start, end = _day_bounds(d)
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
        await _no_jit(conn)
        if not rebuild and not await _days_to_refresh(conn, dialect, today, rebuild):
            return []
    async with engine.begin() as conn:
        if dialect == "postgresql":  # one refresher at a time across replicas
            await conn.execute(text(f"SELECT pg_advisory_xact_lock({ROLLUP_LOCK})"))
        await _no_jit(conn)
        todo = await _days_to_refresh(conn, dialect, today, rebuild)  # again, under the lock
        for d in todo:
            await _resummarise(conn, dialect, d)
        await conn.execute(
            delete(report_rollup_state).where(report_rollup_state.c.name == "outcomes")
        )
        await conn.execute(report_rollup_state.insert().values(name="outcomes", at=started))
    return [d.isoformat() for d in todo]


# -- grouping and assembly ---------------------------------------------------------------------
def _group_col(source: Any, group_by: GroupBy | None, tag: str | None) -> Any:
    if group_by is None:
        return literal(TOTAL)
    if group_by == "tag":
        return literal(tag)
    return source.c[
        {
            "backend": "backend",
            "policy": "policy",
            "tenant": "tenant_id",
            "key": "key_id",
            "day": "day",
        }[group_by]
    ]


async def _sum_groups(
    conn: AsyncConnection,
    source: Any,
    sums: tuple[str, ...],
    group_by: GroupBy | None,
    q: ReportQuery,
    days: tuple[str, str] | None,
) -> dict[str, dict[str, Any]]:
    """{group: {sum column: value}} over a cell source (a roll-up table or raw cell query)."""
    out: dict[str, dict[str, Any]] = {}
    tags: list[str | None] = [*sorted(q.tags)] if group_by == "tag" else [None]
    for tag in tags:
        g = _group_col(source, group_by, tag)
        stmt = select(g.label("g"), *[func.sum(source.c[s]).label(s) for s in sums]).group_by(g)
        if tag is not None:
            stmt = stmt.where(source.c.backend.in_(list(q.tags.get(tag, ()))))
        if days is not None:
            stmt = stmt.where(source.c.day >= days[0], source.c.day < days[1])
            if q.tenant_id is not None:
                stmt = stmt.where(source.c.tenant_id == q.tenant_id)
        for row in (await conn.execute(stmt)).mappings():
            acc = out.setdefault(str(row["g"]), {})
            for s in sums:
                if row[s] is not None:
                    acc[s] = acc.get(s, 0) + (
                        Decimal(str(row[s])) if s in ("spend", "task_spend") else int(row[s])
                    )
    return out


@dataclass(frozen=True)
class _Plan:
    rolled: tuple[str, str] | None  # [first day, end day) read from the roll-ups
    raw: tuple[tuple[datetime | None, datetime | None], ...]  # windows read from raw rows


async def _plan(conn: AsyncConnection, q: ReportQuery, use_rollups: bool) -> _Plan:
    if not use_rollups:
        return _Plan(None, ((q.start, q.end),))
    bounds = (
        await conn.execute(
            select(func.min(report_rollup_days.c.day), func.max(report_rollup_days.c.day))
        )
    ).one()
    if bounds[0] is None:
        return _Plan(None, ((q.start, q.end),))
    lo = date.fromisoformat(bounds[0])
    hi = date.fromisoformat(bounds[1]) + timedelta(days=1)  # exclusive
    if q.start is not None:
        s = q.start.astimezone(UTC)
        first = s.date() if s == _day_bounds(s.date())[0] else s.date() + timedelta(days=1)
        lo = max(lo, first)
    if q.end is not None:
        hi = min(hi, q.end.astimezone(UTC).date())
    if lo >= hi:
        return _Plan(None, ((q.start, q.end),))
    lo_t, hi_t = _day_bounds(lo)[0], _day_bounds(hi)[0]
    raw: list[tuple[datetime | None, datetime | None]] = []
    if q.start is None or q.start < lo_t:
        raw.append((q.start, lo_t))
    if q.end is None or q.end > hi_t:
        raw.append((hi_t, q.end))
    return _Plan((lo.isoformat(), hi.isoformat()), tuple(raw))


def _group_values(row: Any, group_by: GroupBy | None, q: ReportQuery) -> list[str]:
    """The groups one raw cell row falls in (several for overlapping tags)."""
    if group_by is None:
        return [TOTAL]
    if group_by == "tag":
        return [t for t, backends in sorted(q.tags.items()) if row["backend"] in backends]
    col = {
        "backend": "backend",
        "policy": "policy",
        "tenant": "tenant_id",
        "key": "key_id",
        "day": "day",
    }[group_by]
    return [str(row[col])]


async def _groups(
    engine: AsyncEngine,
    kind: ReportKind,
    q: ReportQuery,
    groupings: list[GroupBy | None],
    use_rollups: bool,
) -> list[dict[str, GroupStats]]:
    """One dict {group: stats} per grouping, read in one go: whole days from the roll-ups
    (summed in SQL per grouping), the rest as raw cells fetched once and grouped here."""
    dialect = engine.dialect.name
    results: list[dict[str, GroupStats]] = [{} for _ in groupings]

    def merge(result: dict[str, GroupStats], g: str, sums: dict[str, Any]) -> None:
        result.setdefault(g, GroupStats(group=g, label=g, kind=kind)).add(sums)

    async with engine.connect() as conn:
        await _no_jit(conn)
        plan = await _plan(conn, q, use_rollups)
        raw_rows: list[tuple[tuple[str, ...], Any]] = []
        for start, end in plan.raw:
            for cells, sums in (
                (attempt_cells(dialect, q.tenant_id, start, end), ATTEMPT_SUMS),
                (task_cells(dialect, q.tenant_id, start, end), TASK_SUMS),
            ):
                raw_rows.extend((sums, row) for row in (await conn.execute(cells)).mappings())
        for result, group_by in zip(results, groupings, strict=True):
            if plan.rolled is not None:
                for table, sums in (
                    (report_attempts_daily, ATTEMPT_SUMS),
                    (report_tasks_daily, TASK_SUMS),
                ):
                    found = await _sum_groups(conn, table, sums, group_by, q, plan.rolled)
                    for g, values in found.items():
                        merge(result, g, values)
            for sums, row in raw_rows:
                values = {
                    col: (Decimal(str(row[col])) if col in ("spend", "task_spend") else row[col])
                    for col in sums
                }
                for g in _group_values(row, group_by, q):
                    merge(result, g, values)
    return results


async def _labels(engine: AsyncEngine, group_by: GroupBy, ids: list[str]) -> dict[str, str]:
    labels = {"": NONE_LABEL} if group_by in ("key", "policy") else {}
    if group_by not in ("tenant", "key") or not ids:
        return labels
    async with engine.connect() as conn:
        if group_by == "tenant":
            named = (
                await conn.execute(
                    select(tenants.c.id, tenants.c.name).where(tenants.c.id.in_(ids))
                )
            ).all()
            return {**labels, **{str(i): str(n) for i, n in named}}
        rows = (
            await conn.execute(
                select(api_keys.c.id, api_keys.c.name, api_keys.c.prefix, tenants.c.name)
                .join(tenants, tenants.c.id == api_keys.c.tenant_id)
                .where(api_keys.c.id.in_(ids))
            )
        ).all()
    return {**labels, **{str(i): f"{t}/{n or p + '…'}" for i, n, p, t in rows}}


def most_expensive(prices: dict[str, Price | None]) -> str | None:
    """The backend with the highest price (output price first, then input)."""
    priced = [(p.output_per_token, p.input_per_token, name) for name, p in prices.items() if p]
    return max(priced)[2] if priced else None


async def report(
    engine: AsyncEngine,
    kind: ReportKind,
    q: ReportQuery,
    *,
    prices: dict[str, Price | None] | None = None,
    baseline: str | None = None,
    rollups: bool = True,
    today: date | None = None,
) -> Report:
    """Build a report. ``prices`` (backend -> price) enables the savings section.

    ``rollups=False`` reads raw rows only (the reference the roll-ups are tested against);
    ``today`` overrides the day before which days count as closed (tests).
    """
    if rollups:
        await refresh_rollups(engine, today=today)
    base = (baseline or most_expensive(prices)) if prices else None
    groupings: list[GroupBy | None] = [q.group_by, None]
    if base is not None and q.group_by != "backend":
        groupings.append("backend")
    found, totals, *rest = await _groups(engine, kind, q, groupings, rollups)
    answered = found if q.group_by == "backend" else (rest[0] if rest else {})
    rows = list(found.values())
    total = totals.get(TOTAL) or GroupStats(group=TOTAL, label=TOTAL, kind=kind)
    labels = await _labels(engine, q.group_by, [r.group for r in rows])
    for r in rows:
        r.label = labels.get(r.group, r.group)
    rows.sort(key=lambda r: (r.group if q.group_by == "day" else "", -r.spend, r.group))
    savings = None
    price = prices.get(base) if prices and base else None
    if base is not None and price is not None:
        for r in [*rows, total]:
            r.baseline_cost = price.cost(r.ok_prompt_tokens, r.ok_completion_tokens)
        on_base = answered.get(base)
        assert total.baseline_cost is not None
        savings = Savings(
            baseline=base,
            actual_spend=total.spend,
            baseline_cost=total.baseline_cost,
            actual_success_rate=total.success_rate,
            baseline_success_rate=on_base.success_rate if on_base else None,
            baseline_tasks_known=(on_base.succeeded + on_base.failed) if on_base else 0,
        )
    judge = await judge_spend(engine, q) if kind == "spend" else None
    return Report(kind, q, rows, total, savings, judge)


async def judge_spend(engine: AsyncEngine, q: ReportQuery) -> JudgeSpend:
    """The judge's verdicts recorded in [start, end) and their cost (the query's tenant, or all).

    Judge rows are written once, when the judge has answered, so ``updated_at`` is when the
    judge call was paid for (and the tenant index covers it).
    """
    O = outcomes  # noqa: E741
    conds = [O.c.source == "judge", *_window(O.c.updated_at, q.start, q.end)]
    if q.tenant_id is not None:
        conds.append(O.c.tenant_id == q.tenant_id)
    stmt = select(
        func.count().label("verdicts"),
        _count_if(O.c.success.is_(true())).label("passed"),
        _count_if(O.c.success.is_(false())).label("failed"),
        func.coalesce(func.sum(O.c.cost_usd), 0).label("spend"),
        _count_if(O.c.cost_usd.is_(None)).label("unpriced"),
    ).where(*conds)
    async with engine.connect() as conn:
        row = (await conn.execute(stmt)).mappings().one()
    return JudgeSpend(
        verdicts=int(row["verdicts"] or 0),
        passed=int(row["passed"] or 0),
        failed=int(row["failed"] or 0),
        spend=Decimal(str(row["spend"] or 0)),
        unpriced=int(row["unpriced"] or 0),
    )


async def recent_failures(
    engine: AsyncEngine, tenant_id: str | None, *, limit: int = 20
) -> list[dict[str, Any]]:
    """The latest failed attempts and failed task outcomes, newest first."""
    attempts = select(
        R.c.created_at, R.c.request_id, R.c.backend, R.c.policy, R.c.error_type, R.c.http_status
    ).where(R.c.status != "ok")
    failed = (
        select(
            outcomes.c.updated_at,
            outcomes.c.task_id,
            outcomes.c.request_id,
            outcomes.c.source,
            outcomes.c.comment,
            tasks.c.external_id,
        )
        .select_from(outcomes.outerjoin(tasks, tasks.c.id == outcomes.c.task_id))
        .where(outcomes.c.success.is_(false()))
    )
    if tenant_id is not None:
        attempts = attempts.where(R.c.tenant_id == tenant_id)
        failed = failed.where(outcomes.c.tenant_id == tenant_id)
    async with engine.connect() as conn:
        a_rows = (await conn.execute(attempts.order_by(R.c.created_at.desc()).limit(limit))).all()
        o_rows = (
            await conn.execute(failed.order_by(outcomes.c.updated_at.desc()).limit(limit))
        ).all()
    items: list[dict[str, Any]] = []
    for at, rid, backend, policy, etype, status in a_rows:
        items.append(
            {
                "at": _iso(at),
                "kind": "error",
                "request_id": rid,
                "backend": backend,
                "policy": policy,
                "detail": f"{etype or 'error'} ({status or '-'})",
            }
        )
    for at, _tid, rid, source, comment, ext in o_rows:
        items.append(
            {
                "at": _iso(at),
                "kind": f"failed ({source})",
                "request_id": rid,
                "task_id": ext,
                "detail": comment or "",
            }
        )
    items.sort(key=lambda i: i["at"], reverse=True)
    return items[:limit]


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def parse_when(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """'7d', '12h', '30m' (ago), 'today', or an ISO date/time (UTC when no zone is given)."""
    if text is None or text == "":
        return None
    now = now or datetime.now(UTC)
    t = text.strip().lower()
    units = {"d": "days", "h": "hours", "m": "minutes", "w": "weeks"}
    if t[-1:] in units and t[:-1].isdigit():
        return now - timedelta(**{units[t[-1]]: int(t[:-1])})
    if t == "today":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"cannot read time {text!r}: use an ISO date/time (2026-01-31, 2026-01-31T12:00) "
            "or an age such as 7d, 12h, 30m"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


__all__ = [
    "GROUP_BYS",
    "GroupBy",
    "GroupStats",
    "JudgeSpend",
    "Report",
    "ReportQuery",
    "Savings",
    "judge_spend",
    "most_expensive",
    "parse_when",
    "recent_failures",
    "report",
    "verdicts",
]
