"""Recent successful-attempt latencies per backend: the observed p95 the policies' latency
SLO reads. In-process and approximate by design (each replica sees its own traffic)."""

from __future__ import annotations

from collections import deque

LATENCY_WINDOW = 200
MIN_OBSERVATIONS = 20  # too few observations to judge a backend by


class LatencyWindow:
    """The latest ``size`` latencies of each backend."""

    def __init__(self, size: int = LATENCY_WINDOW) -> None:
        self.size = size
        self._data: dict[str, deque[float]] = {}

    def observe(self, backend: str, latency_ms: float) -> None:
        self._data.setdefault(backend, deque(maxlen=self.size)).append(latency_ms)

    def p95(self, backend: str) -> float | None:
        window = self._data.get(backend)
        if not window or len(window) < MIN_OBSERVATIONS:
            return None
        ordered = sorted(window)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
