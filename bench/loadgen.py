"""The client side that the HTTP load benchmarks share: the percentile their tables print.

This module owns reading percentiles off the latencies the benchmarks measure
(``bench/routed_load.py``, ``bench/cache.py``, ``bench/latency_breakdown.py``).
"""

from __future__ import annotations

from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-quantile (0 <= q <= 1) of ``values`` as one of them, no interpolation: the one
    at index ``floor(q * n)`` once sorted (the last one for q = 1); None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
