"""The local tier's capacity: live load of self-hosted backends and when they are saturated.

A ``CapacityMonitor`` runs off the request path. Every ``self_hosted.poll_interval_s`` it reads
each self-hosted backend's engine load (``gateway.backends.engines``), shares the reading and
this replica's in-flight count through the shared state (Redis when configured, so replicas
poll an engine about once per interval between them and see each other's traffic), and every
``CALIBRATION_REFRESH_S`` it reloads the stored calibrations (``gateway.store.calibrations``) so
a ``tollgate calibrate`` run reprices every replica without a restart.

The request path asks ``saturation(backend)``: the pure ``assess`` over the backend's limits
and its latest load — the engine's queue, KV-cache use and requests in the engine, corrected by
the requests this gateway sent since the reading, or this gateway's own in-flight count when
the engine publishes nothing (``engine: openai``) or its reading is stale. A saturated backend
is removed from the candidates (constraint ``capacity``, with the reason) so traffic spills to
the next adequate backend; it comes back as its load drains (with hysteresis on the polled
queue and KV cache, so a backend at its limit does not flap between polls).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import httpx

from gateway.backends.engines import EngineLoad, NoLoadEndpoint, load_urls, read_load
from gateway.backends.upstream import BackendCaller
from gateway.config import BackendConfig, Config
from gateway.config.schema import SelfHostedCost
from gateway.state import SharedState
from gateway.store.calibrations import StoredCalibration, latest_calibrations
from policies import BackendFacts

log = logging.getLogger("tollgate.capacity")

CALIBRATION_REFRESH_S = 30.0
STALE_AFTER_POLLS = 3  # a reading older than this many intervals is not trusted
NO_ENDPOINT_RETRY_S = 60.0  # an engine that publishes no load is asked again after this
KV_RESUME_MARGIN = 0.10  # the KV cache must fall this far under its limit to come back
SHARE_TTL_S = 30.0


@dataclass(frozen=True)
class Limits:
    """The thresholds in force for one backend (config, else calibration, else none)."""

    max_waiting: int | None
    max_kv_cache_usage: float | None
    max_in_flight: int | None
    resume_fraction: float
    in_flight_from: str  # "config" | "calibration vN" | "none"


def limits_for(sh: SelfHostedCost, calibration: StoredCalibration | None) -> Limits:
    """The configured limits; an unset ``max_in_flight`` is the calibrated operating
    concurrency (the most requests at once that met the latency SLO)."""
    if sh.max_in_flight is not None:
        in_flight, source = sh.max_in_flight, "config"
    elif calibration is not None:
        in_flight, source = calibration.concurrency, f"calibration {calibration.label}"
    else:
        in_flight, source = None, "none"
    return Limits(sh.max_waiting, sh.max_kv_cache_usage, in_flight, sh.resume_fraction, source)


@dataclass(frozen=True)
class Load:
    """What is known of a backend's load at one moment."""

    engine: EngineLoad | None  # the latest engine reading, if fresh
    in_flight: int  # requests this gateway (all replicas that share state) has there now
    in_flight_at_read: int  # ... when the engine reading was taken


def assess(limits: Limits, load: Load, *, saturated_before: bool) -> str | None:
    """Why the backend is saturated now (None: it is not). Pure.

    Over a limit trips it; once tripped, it stays saturated until every measure is back under
    its resume level: the queue under ``resume_fraction`` of its limit, the KV cache
    ``KV_RESUME_MARGIN`` under its limit. Requests in flight are full at their limit (one more
    would pass it) and free again below it.
    """
    sent_since = load.in_flight - load.in_flight_at_read  # net requests sent since the reading
    engine = load.engine
    checks: list[tuple[str, float, float, float]] = []  # (what, value, limit, resume level)
    if engine is not None:
        if engine.waiting is not None and limits.max_waiting is not None:
            queued = engine.waiting + max(0, sent_since) if engine.waiting > 0 else engine.waiting
            checks.append(
                (
                    "queue",
                    queued,
                    limits.max_waiting,
                    limits.max_waiting * limits.resume_fraction,
                )
            )
        if engine.kv_cache_usage is not None and limits.max_kv_cache_usage is not None:
            checks.append(
                (
                    "KV cache",
                    engine.kv_cache_usage,
                    limits.max_kv_cache_usage,
                    limits.max_kv_cache_usage - KV_RESUME_MARGIN,
                )
            )
    for what, value, limit, resume in checks:
        if value > limit or (saturated_before and value > resume):
            shown = f"{value:.0%}" if what == "KV cache" else f"{value:g}"
            bound = f"{limit:.0%}" if what == "KV cache" else f"{limit:g}"
            if value > limit:
                return f"{what} {shown} > limit {bound}"
            resume_shown = f"{resume:.0%}" if what == "KV cache" else f"{resume:g}"
            return f"{what} {shown}: draining (limit {bound}, back under {resume_shown})"
    if limits.max_in_flight is not None:
        # full when one more would pass the limit; no hysteresis: the count includes what this
        # gateway sent since the reading, so a free slot is real and worth taking at once
        if engine is not None and engine.running is not None:
            total = max(0, engine.running + (engine.waiting or 0) + sent_since)
            where = "in the engine"
        else:
            total, where = load.in_flight, "in flight from the gateway"
        if total >= limits.max_in_flight:
            return f"{total} requests {where} (limit {limits.max_in_flight})"
    return None


def saturated_note(reason: str | None) -> str | None:
    """The decision record's detail for a backend taken out of routing for capacity."""
    return None if reason is None else f"saturated: {reason}"


def unsaturated(
    facts: Mapping[str, BackendFacts], saturated: Mapping[str, str]
) -> dict[str, BackendFacts]:
    """The facts with saturated backends available again: when no other candidate can serve,
    a request queues at the local tier rather than failing."""
    return {
        name: replace(f, healthy=True, unhealthy_reason="") if name in saturated else f
        for name, f in facts.items()
    }


class CountingCaller:
    """A ``BackendCaller`` that counts each backend's calls in flight (streams until they end)."""

    def __init__(self, inner: BackendCaller, counts: dict[str, int]) -> None:
        self.inner = inner
        self.counts = counts

    def __getattr__(self, name: str) -> Any:  # count_*_tokens, catalog_price, test hooks
        return getattr(self.inner, name)

    @contextlib.contextmanager
    def _counted(self, backend: BackendConfig) -> Any:
        self.counts[backend.name] = self.counts.get(backend.name, 0) + 1
        try:
            yield
        finally:
            self.counts[backend.name] -= 1

    async def chat(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]:
        with self._counted(backend):
            return await self.inner.chat(backend, body)

    async def completion(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]:
        with self._counted(backend):
            return await self.inner.completion(backend, body)

    async def embedding(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]:
        with self._counted(backend):
            return await self.inner.embedding(backend, body)

    async def chat_stream(
        self, backend: BackendConfig, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        with self._counted(backend):
            async for chunk in self.inner.chat_stream(backend, body):
                yield chunk

    async def completion_stream(
        self, backend: BackendConfig, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        with self._counted(backend):
            async for chunk in self.inner.completion_stream(backend, body):
                yield chunk


class CapacityMonitor:
    """Polls self-hosted engines, keeps calibrations fresh, answers ``saturation``."""

    def __init__(
        self,
        config: Callable[[], Config],
        state: SharedState,
        engine: Any = None,  # the store's AsyncEngine (None: no calibrations)
        *,
        on_calibration: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self.state = state
        self.store = engine
        self.on_calibration = on_calibration
        self.replica = uuid.uuid4().hex[:12]
        self.in_flight: dict[str, int] = {}
        self.calibrations: dict[str, StoredCalibration] = {}
        self._readings: dict[str, tuple[EngineLoad, int]] = {}  # reading, in-flight at read
        self._others: dict[str, int] = {}  # other replicas' in-flight, from shared state
        self._saturated: dict[str, bool] = {}
        self._quiet_until: dict[str, float] = {}
        self._next_poll: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._calibrated_at = 0.0

    def follow(
        self, config: Callable[[], Config], *, on_calibration: Callable[[], None] | None = None
    ) -> None:
        """Read the live config from ``config`` (hot reloads) and call ``on_calibration`` when
        a new calibration is stored (to reprice)."""
        self._config = config
        self.on_calibration = on_calibration

    def wrap(self, caller: BackendCaller) -> CountingCaller:
        return CountingCaller(caller, self.in_flight)

    # -- the request path (no I/O) ---------------------------------------------------------
    def throughput(self, backend: str) -> StoredCalibration | None:
        return self.calibrations.get(backend)

    def load(self, backend: BackendConfig) -> Load:
        mine = self.in_flight.get(backend.name, 0)
        total = mine + self._others.get(backend.name, 0)
        reading = self._readings.get(backend.name)
        sh = backend.self_hosted
        if reading is None or sh is None:
            return Load(None, total, total)
        load, at_read = reading
        if time.time() - load.read_at > STALE_AFTER_POLLS * sh.poll_interval_s:
            return Load(None, total, total)
        return Load(load, total, at_read)

    def limits(self, backend: BackendConfig) -> Limits | None:
        if backend.self_hosted is None:
            return None
        return limits_for(backend.self_hosted, self.calibrations.get(backend.name))

    def saturation(self, backend: BackendConfig) -> str | None:
        """Why this backend should take no new request now (None: it can)."""
        limits = self.limits(backend)
        if limits is None:
            return None
        before = self._saturated.get(backend.name, False)
        reason = assess(limits, self.load(backend), saturated_before=before)
        self._saturated[backend.name] = reason is not None
        if reason is not None and not before:
            log.info("%s saturated (%s): spilling to the next backend", backend.name, reason)
        elif reason is None and before:
            log.info("%s has capacity again", backend.name)
        return reason

    # -- off the request path ------------------------------------------------------------------
    async def start(self, *, poll: bool = True) -> None:
        """Load the calibrations and start polling (``poll=False``: the caller drives
        ``poll_once``, as tests do)."""
        self._client = httpx.AsyncClient()
        await self.refresh_calibrations()
        if poll:
            self._task = asyncio.create_task(self._run(), name="tollgate-capacity")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    async def refresh_calibrations(self) -> None:
        self._calibrated_at = time.monotonic()
        if self.store is None:
            return
        try:
            latest = await latest_calibrations(self.store)
        except Exception:  # the table may not exist yet, or the store is down: keep what we had
            log.warning("could not read calibrations; keeping the previous ones", exc_info=True)
            return
        changed = {k: v.version for k, v in latest.items()} != {
            k: v.version for k, v in self.calibrations.items()
        }
        self.calibrations = latest
        if changed and self.on_calibration is not None:
            self.on_calibration()

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
                if time.monotonic() - self._calibrated_at > CALIBRATION_REFRESH_S:
                    await self.refresh_calibrations()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("capacity poll failed")
            await asyncio.sleep(self._tick())

    def _tick(self) -> float:
        intervals = [
            b.self_hosted.poll_interval_s for b in self._config().backends if b.self_hosted
        ]
        return min(intervals, default=5.0) / 2

    async def poll_once(self) -> None:
        """Poll every self-hosted backend whose interval is due (concurrently)."""
        now = time.monotonic()
        due = [
            b
            for b in self._config().backends
            if b.self_hosted is not None and self._next_poll.get(b.name, 0.0) <= now
        ]
        for b in due:
            assert b.self_hosted is not None
            self._next_poll[b.name] = now + b.self_hosted.poll_interval_s
        await asyncio.gather(*(self._poll(b) for b in due))

    async def _poll(self, backend: BackendConfig) -> None:
        sh = backend.self_hosted
        assert sh is not None
        name = backend.name
        shared = await self._shared(name)
        mine = self.in_flight.get(name, 0)
        fresh_s = sh.poll_interval_s
        now = time.time()
        others = 0
        reading: EngineLoad | None = None
        for field, raw in shared.items():
            try:
                if field == "engine":
                    candidate = EngineLoad.from_json(raw)
                    if now - candidate.read_at < fresh_s:
                        reading = candidate  # another replica polled this interval
                elif field != f"r:{self.replica}":
                    count, at = json.loads(raw)
                    if now - at < STALE_AFTER_POLLS * fresh_s:
                        others += int(count)
            except (ValueError, TypeError, KeyError):
                continue
        self._others[name] = others
        if reading is None:
            reading = await self._read_engine(backend, sh)
            if reading is not None:
                await self._publish(name, "engine", reading.to_json(), sh)
        if reading is not None:
            self._readings[name] = (reading, mine + others)
        await self._publish(name, f"r:{self.replica}", json.dumps([mine, now]), sh)

    async def _read_engine(self, backend: BackendConfig, sh: SelfHostedCost) -> EngineLoad | None:
        urls = load_urls(sh.engine, backend.api_base, sh.metrics_url)
        if (
            not urls
            or self._client is None
            or time.monotonic() < self._quiet_until.get(backend.name, 0.0)
        ):
            return None
        try:
            return await read_load(self._client, sh.engine, urls, timeout_s=sh.poll_interval_s)
        except NoLoadEndpoint as exc:
            self._quiet_until[backend.name] = time.monotonic() + NO_ENDPOINT_RETRY_S
            log.warning("%s; using the gateway's in-flight count", exc)
            return None

    async def _shared(self, name: str) -> dict[str, str]:
        try:
            return await self.state.load_read(name)
        except Exception:
            log.debug("shared load read failed for %s", name, exc_info=True)
            return {}

    async def _publish(self, name: str, field: str, value: str, sh: SelfHostedCost) -> None:
        try:
            await self.state.load_publish(name, field, value, int(SHARE_TTL_S * 1000))
        except Exception:
            log.debug("shared load write failed for %s", name, exc_info=True)
