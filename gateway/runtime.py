"""The running gateway's parts, built once per app in its lifespan and shared by the routes.

The config a request reads is not here but in the current ``Snapshot`` (``gateway.snapshot``):
a request takes ``runtime.snapshot`` once at its start; a reload ``install``s a new one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.auth import Authenticator, Principal
from gateway.backends.upstream import BackendCaller
from gateway.budgets import BudgetLedger, system_clock
from gateway.capacity import CapacityMonitor
from gateway.config import Config
from gateway.latency import LatencyWindow
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.snapshot import Snapshot, build_snapshot, unavailable_reason
from gateway.state import SharedState, make_state
from gateway.store import queries
from gateway.store.database import create_engine
from gateway.store.keys import KeyStore, Limits
from gateway.store.writer import RecordWriter

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("tollgate.runtime")


@dataclass
class Runtime:
    settings: Settings  # its ``config`` is the start-up one; the live one is ``snapshot.config``
    caller: BackendCaller
    engine: AsyncEngine
    writer: RecordWriter
    state: SharedState
    keys: KeyStore
    auth: Authenticator
    budgets: BudgetLedger
    metrics: Metrics
    snapshot: Snapshot
    predictor: Any = None  # gateway.serve.predictor_client.PredictorClient (or a test double)
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    capacity: CapacityMonitor | None = None  # the self-hosted backends' load and calibrations

    @property
    def config(self) -> Config:
        """The live config, for reads outside a request (a request keeps its own snapshot)."""
        return self.snapshot.config

    @property
    def state_in_process(self) -> bool:
        """Whether the shared state lives in this process (no Redis): its calls never wait on
        I/O, so awaiting them one by one costs no latency and spares a task each."""
        return self.state.kind == "in-process"

    def install(self, snapshot: Snapshot) -> None:
        """Swap in a new snapshot (hot reload): one assignment, so requests that start from
        now on see all of it and requests in flight none of it."""
        self.snapshot = snapshot

    def snapshot_for(self, config: Config) -> Snapshot:
        """A snapshot of ``config``, self-hosted backends priced by their latest calibration."""
        calibrations = self.capacity.calibrations if self.capacity is not None else None
        return build_snapshot(config, self.caller, self.predictor, calibrations)

    async def allowed(self, backend: str, probe_lease_s: float = 0.0) -> bool:
        """False while the backend's circuit is open (shared state errors fail open); with a
        ``probe_lease_s`` the caller is about to call it and, half-open, claims the one probe."""
        try:
            return await self.state.breaker_allows(backend, int(probe_lease_s * 1000))
        except Exception:
            log.exception("circuit breaker read failed for %s; treating it as closed", backend)
            return True

    async def allowed_all(self, backends: Iterable[str]) -> list[bool]:
        """:meth:`allowed` for each backend (no probe): concurrently when each read is a
        round trip to the shared state, one after another when the state is in this process
        (nothing to wait for, so no task per backend)."""
        if self.state_in_process:
            return [await self.allowed(b) for b in backends]
        return list(await asyncio.gather(*(self.allowed(b) for b in backends)))

    async def store_ok(self) -> bool:
        try:
            async with asyncio.timeout(2):
                await queries.ping(self.engine)
            return True
        except Exception:
            return False

    async def close(self) -> None:
        await self.latency.close()
        if self.capacity is not None:
            await self.capacity.close()
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
    engine = create_engine(
        settings.database_url,
        pool_size=cfg.store.pool_size,
        max_overflow=cfg.store.max_overflow,
        pool_timeout_s=cfg.store.pool_timeout_s,
    )
    writer = RecordWriter(
        engine,
        cfg.store.spool_dir,
        batch_size=cfg.store.batch_size,
        flush_interval_s=cfg.store.flush_interval_ms / 1000,
        max_spool_bytes=cfg.store.max_spool_mb << 20,
    )
    await writer.start()
    state = make_state(
        settings.redis_url,
        cfg.redis.key_prefix,
        max_connections=cfg.redis.max_connections,
        timeout_s=cfg.redis.timeout_s,
        on_failure=cfg.redis.on_failure,
        local_share=cfg.redis.local_share,
    )
    keys = KeyStore(engine)
    anonymous = None
    if cfg.server.anonymous_tenant:
        tenant_id = await keys.ensure_tenant(cfg.server.anonymous_tenant)
        limits = await keys.tenant_limits(cfg.server.anonymous_tenant)  # as at start-up
        anonymous = Principal(
            tenant_id, cfg.server.anonymous_tenant, None, tenant_limits=limits or Limits()
        )
    auth = Authenticator(
        keys, ttl_s=cfg.server.key_cache_ttl_s, admin_key=settings.admin_key, anonymous=anonymous
    )
    # counts calls in flight per backend; polls self-hosted engines once the runtime exists
    capacity = CapacityMonitor(lambda: cfg, state, engine)
    await capacity.refresh_calibrations()
    caller = capacity.wrap(caller)
    runtime = Runtime(
        settings=settings,
        caller=caller,
        engine=engine,
        writer=writer,
        state=state,
        keys=keys,
        auth=auth,
        budgets=BudgetLedger(state, engine, clock=system_clock(settings.clock_offset_s)),
        metrics=metrics,
        snapshot=build_snapshot(cfg, caller, predictor, capacity.calibrations),
        predictor=predictor,
        capacity=capacity,
        # merged across the replicas through Redis when there is one (batched, off the hot path)
        latency=LatencyWindow(state=state if settings.redis_url else None),
    )
    runtime.latency.want([b.name for b in cfg.backends])
    runtime.latency.start()
    capacity.follow(
        lambda: runtime.config,
        on_calibration=lambda: runtime.install(runtime.snapshot_for(runtime.config)),
    )
    await capacity.start()
    for backend in cfg.backends:
        price = runtime.snapshot.price(backend)
        reason = unavailable_reason(backend)
        log.info(
            "backend %s (%s): %s, %s",
            backend.name,
            backend.model,
            "available" if reason is None else f"unavailable: {reason}",
            f"priced from {price.source}" if price else "UNPRICED (costs recorded as unknown)",
        )
    if cfg.policy_set is not None:
        from policies.availability import fallback_warnings

        available = {b.name: b.missing_credentials() for b in cfg.backends}
        for line in fallback_warnings(cfg.policy_set, available):
            log.warning("%s", line)
    return runtime
