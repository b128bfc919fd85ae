"""The SQL the running gateway asks of its store outside the record writer: a liveness ping,
a budget scope's recorded spend, one request's attempts, finding a tenant's task, a tenant by
name, and writing a task outcome (an idempotent replace). ``peer_visible`` waits for a row a
peer replica answered a moment ago (read-your-writes behind a load balancer). Route handlers
and services call these; they never build SQL themselves. Report queries live in
``gateway.analytics``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.models import outcomes, requests, tasks, tenants

T = TypeVar("T")
PEER_WAIT_S = 2.0  # a peer's writer flushes every store.flush_interval_ms (default 200 ms)


async def peer_visible(fetch: Callable[[], Awaitable[T]], wait_s: float = PEER_WAIT_S) -> T:
    """``fetch()`` until it finds something or ``wait_s`` passes: a request answered by another
    replica reaches the store with that replica's next batch, so a client that asks this
    replica right after the answer (feedback, ``GET /v1/requests/{id}``) still finds it."""
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        found = await fetch()
        if found or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.4)


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the store answers."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def recorded_spend(
    engine: AsyncEngine,
    *,
    key_id: str | None = None,
    tenant_id: str | None = None,
    policy: str | None = None,
    tag: str | None = None,
    since: datetime | None = None,
) -> Decimal:
    """The cost of the recorded attempts of one budget scope: every filter given must hold (a
    key, a tenant, a policy, a request tag), and with ``since`` only attempts created then or
    later (a windowed budget's period)."""
    stmt = select(func.coalesce(func.sum(requests.c.cost_usd), 0))
    if key_id is not None:
        stmt = stmt.where(requests.c.key_id == key_id)
    if tenant_id is not None:
        stmt = stmt.where(requests.c.tenant_id == tenant_id)
    if policy is not None:
        stmt = stmt.where(requests.c.policy == policy)
    if tag is not None:  # tags are stored as ",a,b,"; LIKE wildcards in the tag are escaped
        pattern = "%," + tag.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ",%"
        stmt = stmt.where(requests.c.tags.like(pattern, escape="\\"))
    if since is not None:
        stmt = stmt.where(requests.c.created_at >= since)
    async with engine.connect() as conn:
        return Decimal(str(await conn.scalar(stmt) or 0))


async def request_attempts(
    engine: AsyncEngine, tenant_id: str, request_id: str
) -> list[dict[str, Any]]:
    """Every recorded attempt row of one of the tenant's requests, in order (none: [])."""
    stmt = (
        select(requests)
        .where(requests.c.request_id == request_id)
        .where(requests.c.tenant_id == tenant_id)
        .order_by(requests.c.attempt)
    )
    async with engine.connect() as conn:
        return [dict(row) for row in (await conn.execute(stmt)).mappings().all()]


async def task_of_request(
    engine: AsyncEngine, tenant_id: str, request_id: str
) -> tuple[str, str] | None:
    """(internal task id, client task id) of one of the tenant's requests, or None."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(requests.c.task_id)
                .where(requests.c.request_id == request_id)
                .where(requests.c.tenant_id == tenant_id)
                .limit(1)
            )
        ).first()
        if row is None:
            return None
        internal = str(row[0])
        ref = (
            await conn.execute(select(tasks.c.external_id).where(tasks.c.id == internal))
        ).scalar()
    return internal, str(ref) if ref is not None else ""


async def tenant_has_task(engine: AsyncEngine, tenant_id: str, task_id: str) -> bool:
    """Whether the tenant has a task with this internal id."""
    async with engine.connect() as conn:
        found = (
            await conn.execute(
                select(tasks.c.id)
                .where(tasks.c.id == task_id)
                .where(tasks.c.tenant_id == tenant_id)
            )
        ).first()
    return found is not None


async def tenant_id_by_name(engine: AsyncEngine, name: str) -> str | None:
    async with engine.connect() as conn:
        tid = (await conn.execute(select(tenants.c.id).where(tenants.c.name == name))).scalar()
    return str(tid) if tid is not None else None


def _same(row: Any, values: dict[str, Any]) -> bool:
    for col, new in values.items():
        if col in ("id", "created_at", "updated_at"):
            continue
        old = row[col]
        if col == "cost_usd" and old is not None and new is not None:
            if Decimal(str(old)) != Decimal(str(new)):
                return False
        elif old != new:
            return False
    return True


async def save_outcome(engine: AsyncEngine, values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Insert or replace the outcome row ``values["id"]``: returns (created | updated |
    unchanged, the stored row). A write equal to the stored row changes nothing."""
    async with engine.begin() as conn:
        existing = (
            (await conn.execute(select(outcomes).where(outcomes.c.id == values["id"])))
            .mappings()
            .first()
        )
        if existing is not None and _same(existing, values):
            return "unchanged", dict(existing)
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(outcomes).values(values)
        update = {k: v for k, v in values.items() if k not in ("id", "created_at")}
        # a concurrent first write of the same id is a replace too, never a duplicate row
        await conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=update))
        row = (
            (await conn.execute(select(outcomes).where(outcomes.c.id == values["id"])))
            .mappings()
            .one()
        )
    return ("created" if existing is None else "updated"), dict(row)
