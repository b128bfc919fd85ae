"""Latency histograms: log-scale buckets (each 1.25 times wider than the one before), the bucket
of a latency in Python and in SQL (the same rule), and percentiles read back from the counts."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import Integer, case, func

from gateway.store.models import LATENCY_BUCKETS

BUCKET_RATIO = 1.25
#: upper bound (ms, exclusive) of latency bucket k; the last bucket is open
BUCKET_UPPER = [BUCKET_RATIO ** (k + 1) for k in range(LATENCY_BUCKETS - 1)]


def histogram_percentile(counts: list[int], q: float) -> float | None:
    """The q-quantile of a latency histogram, interpolated linearly inside its bucket."""
    n = sum(counts)
    if n == 0:
        return None
    rank = q * (n - 1)
    seen = 0
    for k, c in enumerate(counts):
        if c and rank < seen + c:
            lo = BUCKET_UPPER[k - 1] if k > 0 else 0.0
            hi = BUCKET_UPPER[k] if k < len(BUCKET_UPPER) else lo * BUCKET_RATIO
            return lo + (hi - lo) * ((rank - seen + 0.5) / c)
        seen += c
    return None


def latency_bucket(ms: float) -> int:
    """The bucket of a latency (the same rule as the SQL in the cell queries)."""
    for k, upper in enumerate(BUCKET_UPPER):
        if ms < upper:
            return k
    return LATENCY_BUCKETS - 1


def latency_bucket_expr(dialect: str, ms: Any) -> Any:
    """SQL for :func:`latency_bucket`: ``floor(log_1.25(ms))`` clamped to the buckets."""
    if dialect == "postgresql":  # ln() is much faster there than a 63-branch CASE
        k = func.floor(func.ln(func.greatest(ms, 1.0)) / math.log(BUCKET_RATIO))
        return func.least(LATENCY_BUCKETS - 1, func.greatest(0, k)).cast(Integer)
    return case(
        *[(ms < upper, k) for k, upper in enumerate(BUCKET_UPPER)], else_=LATENCY_BUCKETS - 1
    )
