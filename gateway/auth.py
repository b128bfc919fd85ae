"""Who is calling: bearer virtual keys → tenant, the admin key, and the anonymous local tenant.

Key lookups hit the store once per key per ``ttl`` seconds (a short TTL so that a revoked key
stops working within seconds on every replica; this replica forgets a key it revoked at once).
While the store is unreachable, a key this replica has seen in the last ``stale_s`` keeps
working from its cached record (known keys ride out a database outage), and a key never seen
gets a 503, not a 500; a key revoked before the outage stays revoked, since its cached record
says so. The admin key must be strong enough to guard a public bind (``check_admin_key``).
"""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass
from decimal import Decimal

from gateway.errors import AuthenticationFailed, DependencyUnavailable, PermissionDenied
from gateway.store.keys import KeyRecord, KeyStore, hash_key

log = logging.getLogger("tollgate.auth")
ADMIN_KEY_MIN_LENGTH = 16
ADMIN_KEY_MIN_DISTINCT = 8


class WeakAdminKey(ValueError):
    """The configured admin key is too weak to guard the admin API."""


def check_admin_key(key: str | None) -> None:
    """Refuse an admin key that is short, has whitespace, or repeats a few characters."""
    if key is None:
        return
    if len(key) < ADMIN_KEY_MIN_LENGTH or len(set(key)) < ADMIN_KEY_MIN_DISTINCT:
        raise WeakAdminKey(
            f"TOLLGATE_ADMIN_KEY is too weak: use at least {ADMIN_KEY_MIN_LENGTH} characters "
            f"with at least {ADMIN_KEY_MIN_DISTINCT} distinct ones (e.g. `openssl rand -hex 24`)"
        )
    if any(c.isspace() for c in key) or not key.isprintable():
        raise WeakAdminKey("TOLLGATE_ADMIN_KEY must not contain whitespace or control characters")


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    tenant_name: str
    key_id: str | None
    key_budget_usd: Decimal | None = None
    tenant_budget_usd: Decimal | None = None
    key_budget_window: str = "total"  # the key budget's window: total | day | month


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed(
            "malformed Authorization header: expected 'Authorization: Bearer <key>'"
        )
    return token.strip()


class Authenticator:
    def __init__(
        self,
        keys: KeyStore,
        *,
        ttl_s: float = 5.0,
        stale_s: float = 3600.0,
        admin_key: str | None = None,
        anonymous: Principal | None = None,
    ) -> None:
        self.keys = keys
        self.ttl_s = ttl_s
        self.stale_s = stale_s
        self.admin_key = admin_key
        self.anonymous = anonymous
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}

    def forget(self, key_id: str) -> None:
        for digest, (_, rec) in list(self._cache.items()):
            if rec is not None and rec.id == key_id:
                del self._cache[digest]

    async def _lookup(self, token: str) -> KeyRecord | None:
        digest = hash_key(token)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        try:
            record = await self.keys.lookup(token)
        except Exception as exc:  # the store is down: known keys ride it out
            if hit is not None and now - hit[0] < self.stale_s:
                log.warning("key store unreachable (%s): using cached keys", type(exc).__name__)
                return hit[1]
            raise DependencyUnavailable(
                "the key store is unreachable and this key is not cached here; retry shortly"
            ) from exc
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[digest] = (now, record)
        return record

    async def authenticate(self, authorization: str | None) -> Principal:
        token = _bearer(authorization)
        if token is None:
            if self.anonymous is not None:
                return self.anonymous
            raise AuthenticationFailed(
                "no API key: send 'Authorization: Bearer <key>' (create one with "
                "'tollgate keys create --tenant NAME')"
            )
        record = await self._lookup(token)
        if record is None:
            raise AuthenticationFailed(
                "invalid or revoked API key (keys look like tg-…; "
                "list them with 'tollgate keys list')"
            )
        return Principal(
            tenant_id=record.tenant_id,
            tenant_name=record.tenant_name,
            key_id=record.id,
            key_budget_usd=record.max_budget_usd,
            tenant_budget_usd=record.tenant_max_budget_usd,
        )

    def _admin_token(self, token: str | None) -> bool:
        """The one admin-key comparison (constant time)."""
        return (
            bool(self.admin_key)
            and token is not None
            and hmac.compare_digest(token.encode(), str(self.admin_key).encode())
        )

    def is_admin(self, authorization: str | None) -> bool:
        """Whether the header carries the admin key; never raises (a malformed header is not
        the admin's)."""
        try:
            return self._admin_token(_bearer(authorization))
        except AuthenticationFailed:
            return False

    def require_admin(self, authorization: str | None) -> None:
        if not self.admin_key:
            raise PermissionDenied(
                "the admin API is disabled: start the gateway with TOLLGATE_ADMIN_KEY set"
            )
        if not self._admin_token(_bearer(authorization)):
            raise AuthenticationFailed("this endpoint needs the admin key (TOLLGATE_ADMIN_KEY)")
