"""Keys through a store outage: a key seen recently keeps working from the cache, a revoked key
stays revoked, an unknown key gets a 503 (never a 500); weak admin keys are refused."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gateway.auth import Authenticator, WeakAdminKey, check_admin_key
from gateway.errors import AuthenticationFailed, DependencyUnavailable
from gateway.store.keys import KeyRecord, hash_key


class FlakyKeyStore:
    def __init__(self) -> None:
        self.records: dict[str, KeyRecord | None] = {}
        self.down = False

    async def lookup(self, raw: str) -> KeyRecord | None:
        if self.down:
            raise ConnectionError("store down")
        return self.records.get(hash_key(raw))


def test_known_keys_survive_an_outage_and_revocations_hold() -> None:
    async def run() -> None:
        store = FlakyKeyStore()
        good = KeyRecord(
            id="k1",
            tenant_id="t1",
            tenant_name="acme",
            name=None,
            prefix="tg-good",
            max_budget_usd=Decimal("1"),
            tenant_max_budget_usd=None,
            created_at=datetime.now(UTC),
            revoked_at=None,
        )
        store.records[hash_key("tg-good")] = good
        store.records[hash_key("tg-revoked")] = None
        auth = Authenticator(store, ttl_s=0.0, stale_s=60)  # type: ignore[arg-type]
        assert (await auth.authenticate("Bearer tg-good")).key_id == "k1"
        with pytest.raises(AuthenticationFailed):
            await auth.authenticate("Bearer tg-revoked")
        store.down = True
        await asyncio.sleep(0.01)
        assert (await auth.authenticate("Bearer tg-good")).key_id == "k1"  # served stale
        with pytest.raises(AuthenticationFailed):
            await auth.authenticate("Bearer tg-revoked")  # still revoked
        with pytest.raises(DependencyUnavailable) as err:
            await auth.authenticate("Bearer tg-never-seen")
        assert err.value.status == 503 and "retry-after" in err.value.headers
        auth.stale_s = 0.0
        with pytest.raises(DependencyUnavailable):
            await auth.authenticate("Bearer tg-good")  # too old to trust

    asyncio.run(run())


@pytest.mark.parametrize(
    "key", ["a", " ", "admin-secret", "aaaaaaaaaaaaaaaaaaaa", "x" * 10 + " y" * 5]
)
def test_weak_admin_keys_are_refused(key: str) -> None:
    with pytest.raises(WeakAdminKey):
        check_admin_key(key)


def test_strong_admin_keys_pass() -> None:
    check_admin_key("3f9c2a7d41b86e05c9d1a2b3")
    check_admin_key(None)


def test_serve_refuses_to_start_with_a_weak_admin_key() -> None:
    from gateway.app import UnsafeBind, check_bind
    from gateway.config import Config
    from gateway.settings import Settings

    cfg = Config.model_validate({"backends": [{"name": "b", "model": "openai/m"}]})
    for host in ("127.0.0.1", "0.0.0.0"):
        settings = Settings(config=cfg, database_url="sqlite://", admin_key=" ", host=host)
        with pytest.raises(UnsafeBind, match="too weak"):
            check_bind(settings)
    check_bind(Settings(config=cfg, database_url="sqlite://", admin_key="3f9c2a7d41b86e05c9d1"))
