"""Building a report: which part of the range comes from the roll-ups and which from raw rows
(the plan), summing cells into groups (one pass of raw cells serves every grouping), labels
for tenants and keys, and the savings against a baseline backend.

Whole days in the range are read from the roll-ups (summed in SQL per grouping); the rest
(today, partial days at the edges) from the raw rows, with the same cell queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.analytics.reports.cache_savings import cache_savings
from gateway.analytics.reports.cells import (
    ATTEMPT_SUMS,
    TASK_SUMS,
    attempt_cells,
    no_jit,
    task_cells,
)
from gateway.analytics.reports.judge_costs import judge_spend
from gateway.analytics.reports.query import NONE_LABEL, TOTAL, GroupBy, ReportKind, ReportQuery
from gateway.analytics.reports.results import GroupStats, Report, Savings
from gateway.analytics.reports.rollups import day_bounds, refresh_rollups
from gateway.pricing import Price
from gateway.store.models import (
    api_keys,
    report_attempts_daily,
    report_rollup_days,
    report_tasks_daily,
    tenants,
)


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
        first = s.date() if s == day_bounds(s.date())[0] else s.date() + timedelta(days=1)
        lo = max(lo, first)
    if q.end is not None:
        hi = min(hi, q.end.astimezone(UTC).date())
    if lo >= hi:
        return _Plan(None, ((q.start, q.end),))
    lo_t, hi_t = day_bounds(lo)[0], day_bounds(hi)[0]
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
        await no_jit(conn)
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
    cached = await cache_savings(engine, q) if kind == "spend" else None
    return Report(kind, q, rows, total, savings, judge, cached)
