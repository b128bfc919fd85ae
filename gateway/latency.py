"""Recent successful-attempt latencies per backend: the observed p95 the policies' latency
SLO reads, shared by every replica when the state is shared (Redis).

A request only appends to this replica's window (no I/O on the hot path). With a shared state
a background task pushes the new samples of every backend in one batch every ``flush_s`` and
reads back the merged window (the newest ``size`` samples of all replicas, none older than
``max_age_s``) every ``refresh_s``; ``p95`` then answers from that merged copy. When the shared
state cannot be reached (or was not read lately) ``p95`` answers from this replica's own window,
and the samples of a failed push are dropped: a Redis outage never fails or slows a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.state import SharedState

log = logging.getLogger("tollgate.latency")

LATENCY_WINDOW = 200
MIN_OBSERVATIONS = 20  # too few observations to judge a backend by
FLUSH_S = 0.25  # how often a replica pushes its new samples (one batch for all backends)
REFRESH_S = 1.0  # how often it reads the merged window back
MAX_AGE_S = 300.0  # samples older than this no longer count
MAX_PENDING = 1000  # per backend, between two pushes (the oldest are dropped past it)


def p95_of(values: list[float] | deque[float]) -> float | None:
    if len(values) < MIN_OBSERVATIONS:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


class LatencyWindow:
    """The latest ``size`` latencies of each backend, merged across replicas when shared."""

    def __init__(
        self,
        size: int = LATENCY_WINDOW,
        state: SharedState | None = None,
        *,
        flush_s: float = FLUSH_S,
        refresh_s: float = REFRESH_S,
        max_age_s: float = MAX_AGE_S,
    ) -> None:
        self.size = size
        self.state = state
        self.flush_s, self.refresh_s, self.max_age_s = flush_s, refresh_s, max_age_s
        self._data: dict[str, deque[float]] = {}
        # backend -> p95 of ``_data``, until its next sample: every routing decision asks for
        # every backend's p95, far more often than samples arrive per backend
        self._local_p95: dict[str, float | None] = {}
        self._pending: dict[str, deque[float]] = {}
        self._wanted: set[str] = set()  # backends a policy asked about
        self._shared: dict[str, float | None] = {}  # backend -> p95 of the merged window
        self._shared_at: float | None = None  # monotonic time of the last good read
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def observe(self, backend: str, latency_ms: float) -> None:
        self._data.setdefault(backend, deque(maxlen=self.size)).append(latency_ms)
        self._local_p95.pop(backend, None)
        if self.state is not None:
            self._pending.setdefault(backend, deque(maxlen=MAX_PENDING)).append(latency_ms)
            self._wanted.add(backend)

    def want(self, backends: list[str]) -> None:
        """Read these backends' merged figures from the next refresh on (others are read
        once a policy first asks about them)."""
        self._wanted.update(backends)

    def local_p95(self, backend: str) -> float | None:
        try:
            return self._local_p95[backend]
        except KeyError:
            found = self._local_p95[backend] = p95_of(self._data.get(backend) or [])
            return found

    def p95(self, backend: str) -> float | None:
        if self.state is None:
            return self.local_p95(backend)
        self._wanted.add(backend)
        fresh = (
            self._shared_at is not None and time.monotonic() - self._shared_at < 3 * self.refresh_s
        )
        if fresh and backend in self._shared:
            return self._shared[backend]
        return self.local_p95(backend)

    async def sync(self, *, read: bool = True) -> None:
        """Push the pending samples, then (``read``) read the merged window back."""
        assert self.state is not None
        batch = {b: list(q) for b, q in self._pending.items() if q}
        for q in self._pending.values():
            q.clear()
        try:
            if batch:
                max_age_ms = int(self.max_age_s * 1000)
                await self.state.latency_push(batch, self.size, max_age_ms)
            if read:
                wanted = sorted(self._wanted)
                shared = await self.state.latency_read(wanted, int(self.max_age_s * 1000))
                # p95 once per read, not on every routed request (it sorts the window)
                self._shared = {b: p95_of(v) for b, v in shared.items()}
                self._shared_at = time.monotonic()
            if self._failing:
                log.warning("shared latency figures are back")
                self._failing = False
        except Exception as exc:  # any failure: this replica's own figures
            if not self._failing:
                log.warning("shared latency unavailable (%s): using this replica's own", exc)
                self._failing = True

    async def _run(self) -> None:
        last_read = 0.0
        while True:
            await asyncio.sleep(self.flush_s)
            due = time.monotonic() - last_read >= self.refresh_s
            await self.sync(read=due)
            if due:
                last_read = time.monotonic()

    def start(self) -> None:
        if self.state is not None and self._task is None:
            self._task = asyncio.create_task(self._run(), name="tollgate-latency-sync")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
