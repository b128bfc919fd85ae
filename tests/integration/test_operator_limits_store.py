"""Migration 0005 and the key store's operator limits (issue 13), on SQLite and the real
PostgreSQL: a store at 0004 with keys keeps them (no limits, budget window ``total``) after the
upgrade, limits written through the key store come back with each key's record, and the
migration downgrades cleanly."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy import text

from gateway.store.database import create_engine
from gateway.store.keys import KeyStore, Limits
from gateway.store.migrate import alembic_config, upgrade_database

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    return str(request.getfixturevalue("pg_url"))


def test_upgrade_keeps_old_keys_and_stores_limits(store_url: str) -> None:
    upgrade_database(store_url, "0004")

    async def old_key() -> None:
        engine = create_engine(store_url)
        try:
            async with engine.begin() as conn:
                now = datetime.now(UTC)
                await conn.execute(
                    text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'old', :n)"),
                    {"n": now},
                )
                await conn.execute(
                    text(
                        "INSERT INTO api_keys (id, tenant_id, key_hash, prefix, max_budget_usd, "
                        "created_at) VALUES ('k1', 't1', 'h', 'tg-old', 5, :n)"
                    ),
                    {"n": now},
                )
        finally:
            await engine.dispose()

    asyncio.run(old_key())
    upgrade_database(store_url)

    async def check() -> None:
        engine = create_engine(store_url)
        try:
            keys = KeyStore(engine)
            old = await keys.get("k1")
            assert old is not None
            assert old.budget_window == "total" and old.limits == Limits()
            assert old.tenant_limits == Limits()
            _, made = await keys.create_key(
                "acme",
                max_budget_usd=Decimal("2"),
                budget_window="month",
                limits=Limits(rpm=10, tpm=500, allowed_backends=("a", "b")),
            )
            await keys.set_tenant_limits("acme", Limits(rpm=99, allowed_policies=("p",)))
            again = await keys.get(made.id)
            assert again is not None
            assert again.limits == Limits(10, 500, ("a", "b"), None)
            assert again.budget_window == "month"
            assert again.tenant_limits == Limits(99, None, None, ("p",))
            public = again.public()
            assert public["rpm"] == 10 and public["allowed_backends"] == ["a", "b"]
            with pytest.raises(ValueError):
                await keys.create_key("acme", budget_window="week")
        finally:
            await engine.dispose()

    asyncio.run(check())
    command.downgrade(alembic_config(store_url), "0004")
    upgrade_database(store_url)
