"""Schema migrations: run Alembic (scripts in the top-level ``migrations`` package) in-process."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig

from gateway.store.database import ensure_sqlite_dir, to_async_url


def _scripts_dir() -> Path:
    """The ``migrations`` package's directory. Alembic runs its scripts, and they import the
    store's tables: the store only points Alembic at them, without importing the package
    (which would make store and migrations import each other)."""
    spec = importlib.util.find_spec("migrations")
    if spec is None or spec.origin is None:
        raise RuntimeError("the migrations package is not installed next to the gateway")
    return Path(spec.origin).parent


def alembic_config(database_url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_scripts_dir()))
    cfg.set_main_option("sqlalchemy.url", to_async_url(database_url).replace("%", "%%"))
    return cfg


def upgrade_database(database_url: str, revision: str = "head") -> None:
    """Create or migrate the schema at ``database_url`` (blocking: use a thread in async code)."""
    ensure_sqlite_dir(to_async_url(database_url))
    command.upgrade(alembic_config(database_url), revision)


def current_revision(database_url: str) -> str | None:
    """The schema revision the database is at (None: not migrated)."""
    import asyncio

    from alembic.runtime.migration import MigrationContext

    from gateway.store.database import create_engine

    async def read() -> str | None:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda c: MigrationContext.configure(c).get_current_revision()
                )
        finally:
            await engine.dispose()

    return asyncio.run(read())
