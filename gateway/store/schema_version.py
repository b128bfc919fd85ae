"""Whether a store's schema is current, answered without Alembic (slow to import).

The head revision is read from the migration scripts' ``revision = "…"`` / ``down_revision =
"…"`` lines (the one revision no script revises; ``tests/unit/test_schema_version.py`` checks
it against Alembic's own answer), the store's from its ``alembic_version`` table. Commands that
read a store bring it up to date (``gateway.store.migrate``) only when it is behind, so a
report on a current store never loads Alembic.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import re
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

_ASSIGN = re.compile(r"""^(revision|down_revision)\s*(?::[^=]*)?=\s*(None|["']([^"']+)["'])""")


@functools.cache
def head_revision() -> str | None:
    """The newest migration's revision; ``None`` when the scripts do not say it plainly (several
    heads, a merge, a revision that is not a literal): then Alembic decides."""
    spec = importlib.util.find_spec("migrations")
    if spec is None or spec.origin is None:
        return None
    revised: set[str] = set()
    revisions: set[str] = set()
    for path in sorted((Path(spec.origin).parent / "versions").glob("*.py")):
        found: dict[str, str | None] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            match = _ASSIGN.match(line)
            if match:
                found[match.group(1)] = match.group(3)
        if "revision" not in found:
            continue  # not a migration script (``__init__``)
        if found["revision"] is None or "down_revision" not in found:
            return None
        revisions.add(str(found["revision"]))
        if found["down_revision"] is not None:
            revised.add(str(found["down_revision"]))
    heads = revisions - revised
    return next(iter(heads)) if len(heads) == 1 else None


async def store_revision(engine: AsyncEngine) -> str | None:
    """The revision the store is at (``None``: not migrated, or unreadable)."""
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    except DBAPIError:
        return None
    return str(rows[0][0]) if len(rows) == 1 else None


async def ensure_current(engine: AsyncEngine, url: str) -> None:
    """Upgrade the store at ``url`` (``engine`` reads it) unless it is at the head revision."""
    head = head_revision()
    if head is not None and await store_revision(engine) == head:
        return
    from gateway.store.migrate import upgrade_database

    await asyncio.to_thread(upgrade_database, url)
