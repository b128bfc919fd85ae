"""The latest failures for the dashboard: failed attempts and failed task outcomes, newest
first, one list."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import false, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.models import outcomes, tasks
from gateway.store.models import requests as R


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
