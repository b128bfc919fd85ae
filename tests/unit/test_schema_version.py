"""The head revision read from the migration scripts is Alembic's head; a store at the head is
left alone (no Alembic), a new or older one is upgraded."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.script import ScriptDirectory

from gateway.store.database import create_engine
from gateway.store.migrate import alembic_config, upgrade_database
from gateway.store.schema_version import ensure_current, head_revision, store_revision


def test_head_revision_is_alembics(tmp_path: Path) -> None:
    script = ScriptDirectory.from_config(alembic_config(f"sqlite:///{tmp_path}/x.db"))
    assert head_revision() is not None
    assert head_revision() == script.get_current_head()


def test_ensure_current_upgrades_only_a_store_behind(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sub/store.db"  # the directory does not exist yet

    async def go() -> list[str | None]:
        engine = create_engine(url)
        try:
            seen = [await store_revision(engine)]
            await ensure_current(engine, url)
            seen.append(await store_revision(engine))
            await ensure_current(engine, url)  # already current: nothing to do
            seen.append(await store_revision(engine))
            return seen
        finally:
            await engine.dispose()

    first = asyncio.run(go())
    assert first == [None, head_revision(), head_revision()]
    older = f"sqlite:///{tmp_path}/older.db"
    upgrade_database(older, "0002")

    async def upgrade_older() -> tuple[str | None, str | None]:
        engine = create_engine(older)
        try:
            before = await store_revision(engine)
            await ensure_current(engine, older)
            return before, await store_revision(engine)
        finally:
            await engine.dispose()

    assert asyncio.run(upgrade_older()) == ("0002", head_revision())
