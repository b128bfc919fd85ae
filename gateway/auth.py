"""Who is calling: bearer virtual keys → tenant, the admin key, and the anonymous local tenant.

Key lookups hit the store once per key per ``ttl`` seconds (a short TTL so that a revoked key
stops working within seconds on every replica; this replica forgets a key it revoked at once).
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from decimal import Decimal

from gateway.errors import AuthenticationFailed, PermissionDenied
from gateway.store.keys import KeyRecord, KeyStore, hash_key


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    tenant_name: str
    key_id: str | None
    key_budget_usd: Decimal | None = None
    tenant_budget_usd: Decimal | None = None


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
        admin_key: str | None = None,
        anonymous: Principal | None = None,
    ) -> None:
        self.keys = keys
        self.ttl_s = ttl_s
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
        record = await self.keys.lookup(token)
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

    def require_admin(self, authorization: str | None) -> None:
        if not self.admin_key:
            raise PermissionDenied(
                "the admin API is disabled: start the gateway with TOLLGATE_ADMIN_KEY set"
            )
        token = _bearer(authorization)
        if token is None or not hmac.compare_digest(token.encode(), self.admin_key.encode()):
            raise AuthenticationFailed("this endpoint needs the admin key (TOLLGATE_ADMIN_KEY)")
