"""How often routing decided without the predictor: first attempts of routed requests by the
predictor outcome their stored decision records (``decision.predictor``: ``ok`` or
``fallback`` with a reason), for the dashboard."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.models import requests as R


async def predictor_use(
    engine: AsyncEngine,
    tenant_id: str | None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, Any]:
    """``{"decisions", "predicted", "fallbacks", "fallback_rate", "by_reason": {reason: n}}``
    over routed requests in ``[start, end)``; decisions stored before the predictor outcome was
    recorded count as ``unrecorded``."""
    status = R.c.decision["predictor"]["status"].as_string()
    reason = R.c.decision["predictor"]["reason"].as_string()
    q = (
        select(status, reason, func.count())
        .where(R.c.attempt == 1, R.c.policy.is_not(None))
        .group_by(status, reason)
    )
    if tenant_id is not None:
        q = q.where(R.c.tenant_id == tenant_id)
    if start is not None:
        q = q.where(R.c.created_at >= start)
    if end is not None:
        q = q.where(R.c.created_at < end)
    async with engine.connect() as conn:
        rows = (await conn.execute(q)).all()
    by_reason: dict[str, int] = {}
    predicted = fallbacks = unrecorded = 0
    for st, why, n in rows:
        if st == "ok":
            predicted += n
        elif st == "fallback":
            fallbacks += n
            by_reason[why or "unknown"] = by_reason.get(why or "unknown", 0) + n
        else:
            unrecorded += n
    decided = predicted + fallbacks
    return {
        "decisions": decided,
        "predicted": predicted,
        "fallbacks": fallbacks,
        "fallback_rate": fallbacks / decided if decided else None,
        "by_reason": dict(sorted(by_reason.items(), key=lambda kv: -kv[1])),
        "unrecorded": unrecorded,
    }
