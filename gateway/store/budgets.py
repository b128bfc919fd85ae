"""Budget limits stored in the database (set with ``tollgate budgets set`` or ``PUT
/admin/budgets``): list, upsert, delete. Every replica reads them (``gateway.budgets`` caches
them for ``budgets.db_cache_s``); the config file's ``budgets.limits`` add to them."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config.budgets import BudgetLimit
from gateway.store.keys import now
from gateway.store.models import budgets


async def list_limits(engine: AsyncEngine) -> list[BudgetLimit]:
    stmt = select(budgets).order_by(budgets.c.scope, budgets.c.name, budgets.c.period)
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).mappings().all()
    return [
        BudgetLimit(
            scope=row["scope"],
            name=row["name"],
            window=row["period"],
            max_usd=Decimal(str(row["max_usd"])),
        )
        for row in rows
    ]


async def put_limit(engine: AsyncEngine, limit: BudgetLimit) -> bool:
    """Create or replace the limit of (scope, name, window); True when it is new."""
    at = now()
    key = (limit.scope, limit.name, limit.window)
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    values = {
        "scope": limit.scope,
        "name": limit.name,
        "period": limit.window,
        "max_usd": limit.max_usd,
        "created_at": at,
        "updated_at": at,
    }
    async with engine.begin() as conn:
        found = (
            await conn.execute(
                select(budgets.c.scope).where(
                    (budgets.c.scope == key[0])
                    & (budgets.c.name == key[1])
                    & (budgets.c.period == key[2])
                )
            )
        ).first()
        stmt = dialect.insert(budgets).values(values)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["scope", "name", "period"],
                set_={"max_usd": limit.max_usd, "updated_at": at},
            )
        )
    return found is None


async def delete_limits(
    engine: AsyncEngine, scope: str, name: str, window: str | None = None
) -> int:
    """Delete the limit of (scope, name, window), or every window's without ``window``;
    returns how many were deleted."""
    cond = (budgets.c.scope == scope) & (budgets.c.name == name)
    if window is not None:
        cond = cond & (budgets.c.period == window)
    async with engine.begin() as conn:
        result = await conn.execute(delete(budgets).where(cond))
    return int(result.rowcount or 0)
