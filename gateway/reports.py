"""Spend and task reports over the store: the SQL behind ``tollgate report``, ``GET /v1/spend``
and ``/dashboard``.

Everything here is SQLAlchemy Core that runs on SQLite and PostgreSQL alike (window functions
included); only the day bucket and the latency percentiles differ by dialect.

Definitions (docs/reports.md explains them with examples):

* A task's **outcome** is decided from its ``outcomes`` rows: client feedback first, then the
  judge, then validators; within a source a task-level verdict beats a per-request one, and the
  latest wins. A task with no outcome row is **unknown** — never counted as a success.
* **Cost per successful task** = all money spent on the group's tasks (every attempt, retry
  and fallback, tasks of unknown outcome included) ÷ tasks that succeeded. It is ``None`` when
  no task in the group is known to have succeeded.
* **Success rate** = succeeded ÷ tasks with a known outcome (``None`` when none is known);
  ``unknown`` says how many tasks it leaves out.
* The **spend** report groups attempts: a task belongs to every group it spent money in.
  The **tasks** report groups whole tasks by their *final* attempt (the last successful one,
  or the last one when none succeeded): "answered by" for the backend grouping.
* **Fallback rate** = extra attempts (retries and fallbacks: attempt number > 1) ÷ attempts;
  **error rate** = failed attempts ÷ attempts. Latency percentiles are over successful
  attempts, in milliseconds.
* **Savings**: what the recorded traffic would have cost on a baseline backend, priced from the
  recorded token counts of each successful attempt at the baseline's prices (the baseline
  defaults to the most expensive backend), against what it did cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, get_args

from sqlalchemy import (
    ColumnElement,
    Select,
    case,
    false,
    func,
    literal,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.pricing import Price, format_usd
from gateway.store.models import api_keys, outcomes, tasks, tenants
from gateway.store.models import requests as R

GroupBy = Literal["backend", "policy", "tenant", "key", "tag", "day"]
GROUP_BYS: tuple[str, ...] = get_args(GroupBy)
ReportKind = Literal["spend", "tasks"]
TOTAL = "(total)"
NONE_LABEL = "(none)"


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
    p50_latency_ms: float | None = None
    p95_latency_ms: float | None = None
    ok_prompt_tokens: int = 0
    ok_completion_tokens: int = 0
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
        return self.spend / self.succeeded if self.succeeded else None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.attempts if self.attempts else None

    @property
    def fallback_rate(self) -> float | None:
        return self.extra_attempts / self.attempts if self.attempts else None

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
class Report:
    kind: ReportKind
    query: ReportQuery
    rows: list[GroupStats]
    total: GroupStats
    savings: Savings | None = None

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
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


# -- building blocks ---------------------------------------------------------------------------
def _count_if(cond: ColumnElement[bool]) -> Any:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


def day_expr(dialect: str, column: Any) -> Any:
    """The UTC day of a timestamp as 'YYYY-MM-DD'."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)


def _group_expr(dialect: str, group_by: GroupBy | None, tag: str | None = None) -> Any:
    if group_by is None:
        return literal(TOTAL)
    if group_by == "tag":
        return literal(tag)
    if group_by == "day":
        return day_expr(dialect, R.c.created_at)
    column = {
        "backend": R.c.backend,
        "policy": R.c.policy,
        "tenant": R.c.tenant_id,
        "key": R.c.key_id,
    }[group_by]
    return func.coalesce(column, literal(NONE_LABEL))


def _filters(q: ReportQuery, tag: str | None = None) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if q.tenant_id is not None:
        conds.append(R.c.tenant_id == q.tenant_id)
    if q.start is not None:
        conds.append(R.c.created_at >= q.start)
    if q.end is not None:
        conds.append(R.c.created_at < q.end)
    if tag is not None:
        conds.append(R.c.backend.in_(list(q.tags.get(tag, ()))))
    return conds


def verdicts(tenant_id: str | None) -> Any:
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
    sub = inner.subquery("ranked_outcomes")
    return (
        select(sub.c.task_id, sub.c.success, sub.c.source).where(sub.c.rn == 1).subquery("verdict")
    )


def _percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear interpolation, as PostgreSQL's percentile_cont."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


# -- the spend report --------------------------------------------------------------------------
def _spend_stmt(
    dialect: str, q: ReportQuery, group_by: GroupBy | None, tag: str | None
) -> Select[Any]:
    g = _group_expr(dialect, group_by, tag)
    ok = R.c.status == "ok"
    per_task = (
        select(
            g.label("g"),
            R.c.task_id,
            func.count().label("attempts"),
            _count_if(R.c.attempt == 1).label("requests"),
            _count_if(R.c.status != "ok").label("errors"),
            _count_if(R.c.attempt > 1).label("extra"),
            func.coalesce(func.sum(R.c.prompt_tokens), 0).label("pt"),
            func.coalesce(func.sum(R.c.completion_tokens), 0).label("ct"),
            func.coalesce(func.sum(case((ok, R.c.prompt_tokens), else_=0)), 0).label("ok_pt"),
            func.coalesce(func.sum(case((ok, R.c.completion_tokens), else_=0)), 0).label("ok_ct"),
            func.coalesce(func.sum(R.c.cost_usd), 0).label("spend"),
            _count_if(R.c.cost_usd.is_(None)).label("unpriced"),
        )
        .where(*_filters(q, tag))
        .group_by(g, R.c.task_id)
        .subquery("per_task")
    )
    v = verdicts(q.tenant_id)
    return (
        select(
            per_task.c.g,
            func.sum(per_task.c.requests),
            func.sum(per_task.c.attempts),
            func.sum(per_task.c.errors),
            func.sum(per_task.c.extra),
            func.sum(per_task.c.pt),
            func.sum(per_task.c.ct),
            func.sum(per_task.c.spend),
            func.sum(per_task.c.unpriced),
            func.count(),
            _count_if(v.c.success.is_(true())),
            _count_if(v.c.success.is_(false())),
            func.sum(per_task.c.ok_pt),
            func.sum(per_task.c.ok_ct),
        )
        .select_from(per_task.outerjoin(v, v.c.task_id == per_task.c.task_id))
        .group_by(per_task.c.g)
    )


def _stats_from(row: Any) -> GroupStats:
    (
        g,
        requests,
        attempts,
        errors,
        extra,
        pt,
        ct,
        spend,
        unpriced,
        n_tasks,
        ok_tasks,
        bad_tasks,
        ok_pt,
        ok_ct,
    ) = row
    return GroupStats(
        group=str(g),
        label=str(g),
        requests=int(requests or 0),
        attempts=int(attempts or 0),
        errors=int(errors or 0),
        extra_attempts=int(extra or 0),
        prompt_tokens=int(pt or 0),
        completion_tokens=int(ct or 0),
        spend=Decimal(str(spend or 0)),
        unpriced_attempts=int(unpriced or 0),
        tasks=int(n_tasks or 0),
        succeeded=int(ok_tasks or 0),
        failed=int(bad_tasks or 0),
        ok_prompt_tokens=int(ok_pt or 0),
        ok_completion_tokens=int(ok_ct or 0),
    )


async def _latencies(
    engine: AsyncEngine, q: ReportQuery, group_by: GroupBy | None, tag: str | None
) -> dict[str, tuple[float | None, float | None]]:
    dialect = engine.dialect.name
    g = _group_expr(dialect, group_by, tag)
    conds = [*_filters(q, tag), R.c.status == "ok", R.c.latency_ms.is_not(None)]
    async with engine.connect() as conn:
        if dialect == "postgresql":
            stmt = (
                select(
                    g,
                    func.percentile_cont(0.5).within_group(R.c.latency_ms),
                    func.percentile_cont(0.95).within_group(R.c.latency_ms),
                )
                .where(*conds)
                .group_by(g)
            )
            return {
                str(k): (float(p50), float(p95)) for k, p50, p95 in (await conn.execute(stmt)).all()
            }
        # SQLite has no percentile function: sort in Python (laptop-sized stores)
        rows = (await conn.execute(select(g, R.c.latency_ms).where(*conds))).all()
    by_group: dict[str, list[float]] = {}
    for k, value in rows:
        by_group.setdefault(str(k), []).append(float(value))
    out = {}
    for k, values in by_group.items():
        values.sort()
        out[k] = (_percentile(values, 0.5), _percentile(values, 0.95))
    return out


async def _spend_groups(
    engine: AsyncEngine, q: ReportQuery, group_by: GroupBy | None
) -> list[GroupStats]:
    dialect = engine.dialect.name
    tags: list[str | None] = [*sorted(q.tags)] if group_by == "tag" else [None]
    result: list[GroupStats] = []
    for tag in tags:
        async with engine.connect() as conn:
            rows = (await conn.execute(_spend_stmt(dialect, q, group_by, tag))).all()
        lat = await _latencies(engine, q, group_by, tag)
        for row in rows:
            stats = _stats_from(row)
            stats.p50_latency_ms, stats.p95_latency_ms = lat.get(stats.group, (None, None))
            result.append(stats)
    return result


# -- the tasks report --------------------------------------------------------------------------
def _tasks_stmt(
    dialect: str, q: ReportQuery, group_by: GroupBy | None, tag: str | None
) -> Select[Any]:
    g = _group_expr(dialect, group_by, tag)
    final_first = (
        case((R.c.status == "ok", 0), else_=1),
        R.c.created_at.desc(),
        R.c.attempt.desc(),
    )
    attempts = (
        select(
            R.c.task_id,
            g.label("g"),
            func.row_number().over(partition_by=R.c.task_id, order_by=final_first).label("rn"),
            func.count().over(partition_by=R.c.task_id).label("attempts"),
            func.sum(case((R.c.attempt == 1, 1), else_=0))
            .over(partition_by=R.c.task_id)
            .label("requests"),
            func.sum(case((R.c.status != "ok", 1), else_=0))
            .over(partition_by=R.c.task_id)
            .label("errors"),
            func.sum(case((R.c.attempt > 1, 1), else_=0))
            .over(partition_by=R.c.task_id)
            .label("extra"),
            func.sum(R.c.prompt_tokens).over(partition_by=R.c.task_id).label("pt"),
            func.sum(R.c.completion_tokens).over(partition_by=R.c.task_id).label("ct"),
            func.sum(R.c.cost_usd).over(partition_by=R.c.task_id).label("spend"),
            func.sum(case((R.c.cost_usd.is_(None), 1), else_=0))
            .over(partition_by=R.c.task_id)
            .label("unpriced"),
            func.sum(case((R.c.status == "ok", R.c.prompt_tokens), else_=0))
            .over(partition_by=R.c.task_id)
            .label("ok_pt"),
            func.sum(case((R.c.status == "ok", R.c.completion_tokens), else_=0))
            .over(partition_by=R.c.task_id)
            .label("ok_ct"),
        )
        .where(*_filters(q))
        .subquery("task_attempts")
    )
    t = select(attempts).where(attempts.c.rn == 1).subquery("tasks_final")
    v = verdicts(q.tenant_id)
    return (
        select(
            t.c.g,
            func.sum(t.c.requests),
            func.sum(t.c.attempts),
            func.sum(t.c.errors),
            func.sum(t.c.extra),
            func.sum(t.c.pt),
            func.sum(t.c.ct),
            func.sum(t.c.spend),
            func.sum(t.c.unpriced),
            func.count(),
            _count_if(v.c.success.is_(true())),
            _count_if(v.c.success.is_(false())),
            func.sum(t.c.ok_pt),
            func.sum(t.c.ok_ct),
        )
        .select_from(t.outerjoin(v, v.c.task_id == t.c.task_id))
        .group_by(t.c.g)
    )


async def _task_groups(
    engine: AsyncEngine, q: ReportQuery, group_by: GroupBy | None
) -> list[GroupStats]:
    dialect = engine.dialect.name
    result: list[GroupStats] = []
    if group_by == "tag":
        # a task belongs to a tag when its final attempt's backend carries the tag
        by_backend = await _task_groups(engine, q, "backend")
        for tag in sorted(q.tags):
            members = [s for s in by_backend if s.group in q.tags[tag]]
            result.append(_merge(tag, members))
        return result
    async with engine.connect() as conn:
        rows = (await conn.execute(_tasks_stmt(dialect, q, group_by, None))).all()
    lat = await _latencies(engine, q, group_by, None)
    for row in rows:
        stats = _stats_from(row)
        stats.p50_latency_ms, stats.p95_latency_ms = lat.get(stats.group, (None, None))
        result.append(stats)
    return result


def _merge(name: str, parts: list[GroupStats]) -> GroupStats:
    """Sum disjoint groups (percentiles cannot be merged: left unknown)."""
    out = GroupStats(group=name, label=name)
    for p in parts:
        for attr in (
            "requests",
            "attempts",
            "errors",
            "extra_attempts",
            "prompt_tokens",
            "completion_tokens",
            "spend",
            "unpriced_attempts",
            "tasks",
            "succeeded",
            "failed",
            "ok_prompt_tokens",
            "ok_completion_tokens",
        ):
            setattr(out, attr, getattr(out, attr) + getattr(p, attr))
    if len(parts) == 1:
        out.p50_latency_ms, out.p95_latency_ms = parts[0].p50_latency_ms, parts[0].p95_latency_ms
    return out


# -- labels, baseline, entry points ---------------------------------------------------------------
async def _labels(engine: AsyncEngine, group_by: GroupBy, ids: list[str]) -> dict[str, str]:
    if group_by not in ("tenant", "key") or not ids:
        return {}
    async with engine.connect() as conn:
        if group_by == "tenant":
            named = (
                await conn.execute(
                    select(tenants.c.id, tenants.c.name).where(tenants.c.id.in_(ids))
                )
            ).all()
            return {str(i): str(n) for i, n in named}
        rows = (
            await conn.execute(
                select(api_keys.c.id, api_keys.c.name, api_keys.c.prefix, tenants.c.name)
                .join(tenants, tenants.c.id == api_keys.c.tenant_id)
                .where(api_keys.c.id.in_(ids))
            )
        ).all()
    return {str(i): f"{t}/{n or p + '…'}" for i, n, p, t in rows}


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
) -> Report:
    """Build a report. ``prices`` (backend -> price) enables the savings section."""
    run = _spend_groups if kind == "spend" else _task_groups
    rows = await run(engine, q, q.group_by)
    totals = await run(engine, q, None)
    total = totals[0] if totals else GroupStats(group=TOTAL, label=TOTAL)
    labels = await _labels(engine, q.group_by, [r.group for r in rows])
    for r in rows:
        r.label = labels.get(r.group, r.group)
    rows.sort(key=lambda r: (r.group if q.group_by == "day" else "", -r.spend, r.group))
    savings = None
    if prices:
        base = baseline or most_expensive(prices)
        price = prices.get(base) if base else None
        if base is not None and price is not None:
            for r in [*rows, total]:
                r.baseline_cost = price.cost(r.ok_prompt_tokens, r.ok_completion_tokens)
            answered = await _task_groups(
                engine, ReportQuery("backend", q.start, q.end, q.tenant_id), "backend"
            )
            on_base = next((s for s in answered if s.group == base), None)
            assert total.baseline_cost is not None
            savings = Savings(
                baseline=base,
                actual_spend=total.spend,
                baseline_cost=total.baseline_cost,
                actual_success_rate=total.success_rate,
                baseline_success_rate=on_base.success_rate if on_base else None,
                baseline_tasks_known=(on_base.succeeded + on_base.failed) if on_base else 0,
            )
    return Report(kind, q, rows, total, savings)


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
    "Report",
    "ReportQuery",
    "Savings",
    "most_expensive",
    "parse_when",
    "recent_failures",
    "report",
    "verdicts",
]
