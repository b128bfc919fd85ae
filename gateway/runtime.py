"""The running gateway's parts, built once per app in its lifespan and shared by the routes.

Owns model-name resolution (backend, alias or ``tollgate/<policy>``) and backend availability.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth import Authenticator, Principal
from gateway.backends.upstream import BackendCaller
from gateway.budgets import BudgetLedger
from gateway.config import AUTO_POLICY, BackendConfig, Config
from gateway.errors import ModelNotFound, NoBackendAvailable
from gateway.metrics import Metrics
from gateway.pricing import Price, resolve_price
from gateway.serve.routing import LatencyWindow
from gateway.settings import Settings
from gateway.state import BreakerSettings, SharedState, make_state
from gateway.store.database import create_engine
from gateway.store.keys import KeyStore
from gateway.store.writer import RecordWriter

log = logging.getLogger("tollgate.runtime")

POLICY_PREFIX = "tollgate/"


@dataclass(frozen=True)
class Route:
    """What the request's ``model`` field resolved to: a policy (``auto``: the routing rules
    choose) or one pinned backend."""

    policy: str | None
    chain: tuple[BackendConfig, ...] = ()


@dataclass
class Runtime:
    settings: Settings
    caller: BackendCaller
    engine: AsyncEngine
    writer: RecordWriter
    state: SharedState
    keys: KeyStore
    auth: Authenticator
    budgets: BudgetLedger
    metrics: Metrics
    predictor: Any = None  # gateway.serve.predictor_client.PredictorClient (or a test double)
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    prices: dict[str, Price | None] = field(default_factory=dict)

    @property
    def config(self) -> Config:
        return self.settings.config

    @property
    def breaker(self) -> BreakerSettings:
        cb = self.config.circuit_breaker
        return BreakerSettings(cb.failure_threshold, cb.window_s, cb.cooldown_s)

    @staticmethod
    def unavailable_reason(backend: BackendConfig) -> str | None:
        """Why a backend cannot be called right now (missing credentials), or None."""
        return backend.missing_credentials()

    def resolve(self, model: str) -> Route:
        cfg = self.config
        target = cfg.aliases.get(model, model)
        if target == AUTO_POLICY and cfg.policies and cfg.backend(target) is None:
            target = POLICY_PREFIX + AUTO_POLICY  # "auto" works without declaring the alias
        if target.startswith(POLICY_PREFIX):
            name = target.removeprefix(POLICY_PREFIX)
            if name not in cfg.policies and not (name == AUTO_POLICY and cfg.policies):
                raise ModelNotFound(
                    f"unknown policy {name!r}; "
                    f"policies: {', '.join(sorted(cfg.policies)) or 'none'}",
                    param="model",
                )
            return Route(name)
        backend = cfg.backend(target)
        if backend is None:
            names = sorted(
                [b.name for b in cfg.backends]
                + list(cfg.aliases)
                + [POLICY_PREFIX + p for p in cfg.policies]
                + ([POLICY_PREFIX + AUTO_POLICY] if cfg.policies else [])
            )
            raise ModelNotFound(
                f"the model {model!r} does not exist on this gateway; use a backend, alias or "
                f"policy: {', '.join(names)} (GET /v1/models lists them)",
                param="model",
            )
        return Route(None, (backend,))

    def callable_chain(self, route: Route) -> list[BackendConfig]:
        chain = [b for b in route.chain if self.unavailable_reason(b) is None]
        if not chain:
            reasons = "; ".join(f"{b.name}: {self.unavailable_reason(b)}" for b in route.chain)
            raise NoBackendAvailable(f"no backend can serve this request ({reasons})")
        return chain

    def apply_config(self, config: Config) -> None:
        """Swap in a new, already validated config (hot reload); prices are re-resolved."""
        self.settings = self.settings.with_config(config)
        self.prices = {}

    async def allowed(self, backend: str) -> bool:
        """False while the backend's circuit is open (shared state errors fail open)."""
        try:
            return await self.state.breaker_allows(backend)
        except Exception:
            log.exception("circuit breaker read failed for %s; treating it as closed", backend)
            return True

    def price(self, backend: BackendConfig) -> Price | None:
        if backend.name not in self.prices:
            self.prices[backend.name] = resolve_price(backend, self.caller)
        return self.prices[backend.name]

    async def store_ok(self) -> bool:
        try:
            async with asyncio.timeout(2):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def close(self) -> None:
        if self.predictor is not None and hasattr(self.predictor, "close"):
            await self.predictor.close()
        await self.writer.close()
        await self.state.close()
        await self.engine.dispose()
        close_caller = getattr(self.caller, "aclose", None)  # its connection pools
        if close_caller is not None:
            await close_caller()


async def build_runtime(
    settings: Settings, caller: BackendCaller, metrics: Metrics, predictor: Any = None
) -> Runtime:
    cfg = settings.config
    engine = create_engine(settings.database_url)
    writer = RecordWriter(
        engine,
        cfg.store.spool_dir,
        batch_size=cfg.store.batch_size,
        flush_interval_s=cfg.store.flush_interval_ms / 1000,
    )
    await writer.start()
    state = make_state(settings.redis_url, cfg.redis.key_prefix)
    keys = KeyStore(engine)
    anonymous = None
    if cfg.server.anonymous_tenant:
        tenant_id = await keys.ensure_tenant(cfg.server.anonymous_tenant)
        anonymous = Principal(tenant_id, cfg.server.anonymous_tenant, None)
    auth = Authenticator(
        keys, ttl_s=cfg.server.key_cache_ttl_s, admin_key=settings.admin_key, anonymous=anonymous
    )
    runtime = Runtime(
        settings=settings,
        caller=caller,
        engine=engine,
        writer=writer,
        state=state,
        keys=keys,
        auth=auth,
        budgets=BudgetLedger(state, engine),
        metrics=metrics,
        predictor=predictor,
    )
    for backend in cfg.backends:
        price = runtime.price(backend)
        reason = runtime.unavailable_reason(backend)
        log.info(
            "backend %s (%s): %s, %s",
            backend.name,
            backend.model,
            "available" if reason is None else f"unavailable: {reason}",
            f"priced from {price.source}" if price else "UNPRICED (costs recorded as unknown)",
        )
    return runtime
