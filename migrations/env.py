"""Alembic environment: runs migrations over the async engine (SQLite or PostgreSQL).

On PostgreSQL a transaction-scoped advisory lock serialises concurrent upgrades, so several
replicas starting at once with ``auto_migrate`` do not race each other.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from gateway.store.models import metadata

MIGRATION_LOCK_ID = 746_455_372  # arbitrary constant shared by every replica


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})"))
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


def run_offline(url: str) -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


url = context.config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url must be set (tollgate db upgrade does this)"
if context.is_offline_mode():
    run_offline(url)
else:
    asyncio.run(_run_async(url))
