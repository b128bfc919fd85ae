"""The response cache over a report's range: hits (attempt rows marked ``cache_hit``, each
recorded at zero cost) and what they saved — the cost of the reused answers when they were
made (``cache_saved_usd``). Read from the raw attempt rows of the range (the roll-ups do not
carry it); hits also count as requests and attempts in the report's groups, at zero spend."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.analytics.reports.cells import count_if, in_window
from gateway.analytics.reports.query import ReportQuery
from gateway.analytics.reports.results import CacheSavings
from gateway.store.models import requests as R


async def cache_savings(engine: AsyncEngine, q: ReportQuery) -> CacheSavings:
    """Cache hits in [start, end) and what they saved (the query's tenant, or all); requests
    counts the first attempts of the range, so the hit rate is hits ÷ requests."""
    conds = in_window(R.c.created_at, q.start, q.end)
    if q.tenant_id is not None:
        conds.append(R.c.tenant_id == q.tenant_id)
    hit = R.c.cache_hit.is_(true())
    stmt = select(
        count_if(hit).label("hits"),
        count_if(R.c.attempt == 1).label("requests"),
        func.coalesce(func.sum(R.c.cache_saved_usd), 0).label("saved"),
        count_if(hit & R.c.cache_saved_usd.is_(None)).label("unpriced"),
    ).where(*conds)
    async with engine.connect() as conn:
        row = (await conn.execute(stmt)).mappings().one()
    return CacheSavings(
        hits=int(row["hits"] or 0),
        requests=int(row["requests"] or 0),
        saved=Decimal(str(row["saved"] or 0)),
        unpriced=int(row["unpriced"] or 0),
    )
