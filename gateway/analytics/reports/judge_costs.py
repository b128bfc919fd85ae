"""The judge's spend over a report's range: its verdicts and what its calls cost. It is
evaluation overhead, recorded with the verdicts (``outcomes.cost_usd``), never as attempts, so
traffic spend and cost per successful task do not include it."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import false, func, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.analytics.reports.cells import count_if, in_window
from gateway.analytics.reports.query import ReportQuery
from gateway.analytics.reports.results import JudgeSpend
from gateway.store.models import outcomes


async def judge_spend(engine: AsyncEngine, q: ReportQuery) -> JudgeSpend:
    """The judge's verdicts recorded in [start, end) and their cost (the query's tenant, or all).

    Judge rows are written once, when the judge has answered, so ``updated_at`` is when the
    judge call was paid for (and the tenant index covers it).
    """
    O = outcomes  # noqa: E741
    conds = [O.c.source == "judge", *in_window(O.c.updated_at, q.start, q.end)]
    if q.tenant_id is not None:
        conds.append(O.c.tenant_id == q.tenant_id)
    stmt = select(
        func.count().label("verdicts"),
        count_if(O.c.success.is_(true())).label("passed"),
        count_if(O.c.success.is_(false())).label("failed"),
        func.coalesce(func.sum(O.c.cost_usd), 0).label("spend"),
        count_if(O.c.cost_usd.is_(None)).label("unpriced"),
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
