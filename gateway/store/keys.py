"""Tenants and virtual API keys in the store: create, look up by hash, list, revoke; and the
operator limits of each (budget and its window, requests/tokens per minute, the backends and
policies it may use), which a key's record carries for itself and its tenant.

Only a SHA-256 hash of a key and a short display prefix are stored; the key itself is shown
once, when it is created.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config.budgets import WINDOWS
from gateway.store.models import api_keys, requests, tenants

KEY_PREFIX = "tg-"


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Limits:
    """Rate limits and model access of a key or a tenant (None: no limit)."""

    rpm: int | None = None
    tpm: int | None = None
    allowed_backends: tuple[str, ...] | None = None
    allowed_policies: tuple[str, ...] | None = None

    @classmethod
    def of(cls, rpm: Any, tpm: Any, backends: Any, policies: Any) -> Limits:
        return cls(
            rpm,
            tpm,
            tuple(backends) if backends is not None else None,
            tuple(policies) if policies is not None else None,
        )

    def public(self) -> dict[str, object]:
        return {
            "rpm": self.rpm,
            "tpm": self.tpm,
            "allowed_backends": list(self.allowed_backends)
            if self.allowed_backends is not None
            else None,
            "allowed_policies": list(self.allowed_policies)
            if self.allowed_policies is not None
            else None,
        }


@dataclass(frozen=True)
class KeyRecord:
    id: str
    tenant_id: str
    tenant_name: str
    name: str | None
    prefix: str
    max_budget_usd: Decimal | None
    tenant_max_budget_usd: Decimal | None
    created_at: datetime
    revoked_at: datetime | None
    limits: Limits = field(default_factory=Limits)
    budget_window: str = "total"
    tenant_limits: Limits = field(default_factory=Limits)

    def public(self) -> dict[str, object]:
        return {
            "id": self.id,
            "tenant": self.tenant_name,
            "name": self.name,
            "prefix": self.prefix,
            "max_budget_usd": str(self.max_budget_usd) if self.max_budget_usd is not None else None,
            "budget_window": self.budget_window,
            **self.limits.public(),
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.tenant_id,
    tenants.c.name,
    api_keys.c.name,
    api_keys.c.prefix,
    api_keys.c.max_budget_usd,
    tenants.c.max_budget_usd,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
    api_keys.c.rpm,
    api_keys.c.tpm,
    api_keys.c.allowed_backends,
    api_keys.c.allowed_policies,
    api_keys.c.budget_window,
    tenants.c.rpm,
    tenants.c.tpm,
    tenants.c.allowed_backends,
    tenants.c.allowed_policies,
)


def _record(row: Row[Any]) -> KeyRecord:
    v = tuple(row)
    return KeyRecord(
        id=v[0],
        tenant_id=v[1],
        tenant_name=v[2],
        name=v[3],
        prefix=v[4],
        max_budget_usd=v[5],
        tenant_max_budget_usd=v[6],
        created_at=v[7],
        revoked_at=v[8],
        limits=Limits.of(*v[9:13]),
        budget_window=v[13] or "total",
        tenant_limits=Limits.of(*v[14:18]),
    )


class KeyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def ensure_tenant(self, name: str) -> str:
        async with self.engine.begin() as conn:
            found = await conn.scalar(select(tenants.c.id).where(tenants.c.name == name))
            if found:
                return str(found)
            tenant_id = uuid.uuid4().hex
            await conn.execute(tenants.insert().values(id=tenant_id, name=name, created_at=now()))
            return tenant_id

    async def create_key(
        self,
        tenant: str,
        *,
        name: str | None = None,
        max_budget_usd: Decimal | None = None,
        budget_window: str = "total",
        limits: Limits | None = None,
    ) -> tuple[str, KeyRecord]:
        if budget_window not in WINDOWS:
            raise ValueError(f"budget window must be one of {', '.join(WINDOWS)}")
        tenant_id = await self.ensure_tenant(tenant)
        raw = generate_key()
        key_id = uuid.uuid4().hex
        async with self.engine.begin() as conn:
            await conn.execute(
                api_keys.insert().values(
                    id=key_id,
                    tenant_id=tenant_id,
                    name=name,
                    key_hash=hash_key(raw),
                    prefix=raw[: len(KEY_PREFIX) + 6],
                    max_budget_usd=max_budget_usd,
                    budget_window=budget_window,
                    created_at=now(),
                    **(limits or Limits()).public(),
                )
            )
        record = await self.get(key_id)
        assert record is not None
        return raw, record

    async def set_tenant_limits(self, tenant: str, limits: Limits) -> str:
        """Set a tenant's rate limits and model access (created if new); returns its id. Keys
        read them with their own record (within the key-cache TTL on every replica)."""
        tenant_id = await self.ensure_tenant(tenant)
        async with self.engine.begin() as conn:
            await conn.execute(
                tenants.update().where(tenants.c.id == tenant_id).values(**limits.public())
            )
        return tenant_id

    async def tenant_limits(self, tenant: str) -> Limits | None:
        stmt = select(
            tenants.c.rpm, tenants.c.tpm, tenants.c.allowed_backends, tenants.c.allowed_policies
        ).where(tenants.c.name == tenant)
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return Limits.of(*tuple(row)) if row is not None else None

    def _select(self):
        return select(*_KEY_COLUMNS).join(tenants, tenants.c.id == api_keys.c.tenant_id)

    async def get(self, key_id: str) -> KeyRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(self._select().where(api_keys.c.id == key_id))).first()
        return _record(row) if row else None

    async def lookup(self, raw_key: str) -> KeyRecord | None:
        """The active (unrevoked) key with this value, or None."""
        stmt = self._select().where(api_keys.c.key_hash == hash_key(raw_key))
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        record = _record(row)
        return None if record.revoked_at is not None else record

    async def list(self, tenant: str | None = None) -> list[KeyRecord]:
        stmt = self._select().order_by(api_keys.c.created_at)
        if tenant is not None:
            stmt = stmt.where(tenants.c.name == tenant)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_record(r) for r in rows]

    async def revoke(self, key_id_or_prefix: str, tenant_id: str | None = None) -> KeyRecord | None:
        """Revoke by id or by display prefix (must be unambiguous). Returns the key or None."""
        cond = (api_keys.c.id == key_id_or_prefix) | (api_keys.c.prefix == key_id_or_prefix)
        stmt = select(api_keys.c.id).where(cond)
        if tenant_id is not None:
            stmt = stmt.where(api_keys.c.tenant_id == tenant_id)
        async with self.engine.begin() as conn:
            ids = (await conn.scalars(stmt)).all()
            if len(ids) != 1:
                return None
            await conn.execute(
                api_keys.update()
                .where(api_keys.c.id == ids[0])
                .where(api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now())
            )
        return await self.get(ids[0])

    async def spent_by_key(self, key_id: str) -> Decimal:
        stmt = select(func.coalesce(func.sum(requests.c.cost_usd), 0)).where(
            requests.c.key_id == key_id
        )
        async with self.engine.connect() as conn:
            value = await conn.scalar(stmt)
        return Decimal(str(value or 0))
