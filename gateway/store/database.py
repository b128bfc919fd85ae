"""Database URLs and async engine creation (SQLite via aiosqlite, PostgreSQL via asyncpg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def to_async_url(url: str) -> str:
    """Map plain ``sqlite:///`` / ``postgresql://`` URLs to their async drivers."""
    for plain, driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql+psycopg2://", "postgresql+asyncpg://"),
        ("postgresql+psycopg://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


def redact_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def ensure_sqlite_dir(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def create_engine(
    url: str, *, pool_size: int = 10, max_overflow: int = 20, pool_timeout_s: float = 5.0
) -> AsyncEngine:
    """An async engine; the PostgreSQL pool is sized from the config (``store.pool_size``,
    ``max_overflow``, ``pool_timeout_s``): a burst past it waits, then fails as a 503."""
    async_url = to_async_url(url)
    ensure_sqlite_dir(async_url)
    if make_url(async_url).get_backend_name() == "sqlite":
        engine = create_async_engine(async_url, connect_args={"timeout": 5})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        async_url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_timeout=pool_timeout_s,
        connect_args={"timeout": 5, "command_timeout": 10},
    )


# driver errors (asyncpg, aiosqlite) that mean "unreachable or too busy", not "bad query"
_OUTAGE_ERRORS = {
    "ConnectionDoesNotExistError",
    "CannotConnectNowError",
    "TooManyConnectionsError",
    "ConnectionFailureError",
    "ConnectionRejectionError",
    "AdminShutdownError",
    "CrashShutdownError",
    "InterfaceError",
}


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` means the store could not be reached or was too busy (a connection
    refused or dropped, the pool exhausted, a timeout, SQLite locked), as opposed to a bug in a
    query: the caller answers 503 with ``retry-after`` instead of 500."""
    from sqlalchemy.exc import DBAPIError, DisconnectionError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, (PoolTimeout, DisconnectionError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        return (
            bool(exc.connection_invalidated)
            or isinstance(orig, (ConnectionError, OSError, TimeoutError))
            or any(cls.__name__ in _OUTAGE_ERRORS for cls in type(orig).__mro__)
            or "database is locked" in str(orig)
        )
    return isinstance(exc, OSError)
