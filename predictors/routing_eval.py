"""Cost-quality curve metrics for routers, as used by RouterBench and ``bench/routing.py``.

This module owns the arithmetic of judging a router from its (cost, quality) operating points:

* the *non-decreasing convex hull*: the upper convex hull of the points, cut at its highest
  quality and extended flat to the right (any point on it is reachable by randomly mixing two
  operating points; nobody pays more for less);
* AIQ (average improvement in quality, RouterBench): the area under that hull from 0 to
  ``c_max`` (quality 0 left of the cheapest point), divided by ``c_max``;
* the cost needed to reach a quality, and the quality reachable at a cost.

It also holds the two routing rules the benchmark sweeps (a cost-penalised argmax and the
policy's "cheapest backend with P(success) ≥ threshold").
"""

from __future__ import annotations

import numpy as np


def hull(costs: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (sorted by cost) of the non-decreasing upper convex hull of the points."""
    c = np.asarray(costs, dtype=float)
    q = np.asarray(quality, dtype=float)
    order = np.lexsort((-q, c))
    c, q = c[order], q[order]
    # keep, for each cost, the best quality; drop points dominated by a cheaper one
    keep_c: list[float] = []
    keep_q: list[float] = []
    for ci, qi in zip(c, q, strict=True):
        if keep_q and qi <= keep_q[-1]:
            continue
        keep_c.append(float(ci))
        keep_q.append(float(qi))
    hc: list[float] = []
    hq: list[float] = []
    for ci, qi in zip(keep_c, keep_q, strict=True):
        while len(hc) >= 2:
            # drop the middle point if it lies on or below the chord
            (c1, q1), (c2, q2) = (hc[-2], hq[-2]), (hc[-1], hq[-1])
            if (q2 - q1) * (ci - c1) <= (qi - q1) * (c2 - c1):
                hc.pop()
                hq.pop()
            else:
                break
        hc.append(ci)
        hq.append(qi)
    return np.asarray(hc), np.asarray(hq)


def quality_at(hc: np.ndarray, hq: np.ndarray, cost: float) -> float:
    """Hull quality at ``cost``; NaN left of the cheapest point, flat right of the last."""
    if cost < hc[0] - 1e-15:
        return float("nan")
    return float(np.interp(cost, hc, hq))


def cost_to_reach(hc: np.ndarray, hq: np.ndarray, quality: float) -> float:
    """Smallest cost at which the hull reaches ``quality`` (inf if never)."""
    if quality <= hq[0]:
        return float(hc[0])
    if quality > hq[-1] + 1e-12:
        return float("inf")
    return float(np.interp(quality, hq, hc))  # hq is strictly increasing on the hull


def aiq(hc: np.ndarray, hq: np.ndarray, c_max: float) -> float:
    """Area under the hull on [0, c_max] (0 left of its first point) divided by ``c_max``."""
    if c_max <= 0:
        return float("nan")
    xs = np.clip(hc, 0.0, c_max)
    area = float(np.trapezoid(hq, xs)) if len(xs) > 1 else 0.0
    if hc[-1] < c_max:
        area += float(hq[-1]) * (c_max - float(hc[-1]))
    return area / c_max


def route_penalised(p: np.ndarray, est_cost: np.ndarray, lam: float) -> np.ndarray:
    """Per query, the backend maximising ``P(success) - lam * cost / max(cost)``."""
    scale = float(np.max(est_cost)) or 1.0
    return np.asarray(np.argmax(p - lam * (est_cost / scale)[None, :], axis=1))


def route_threshold(p: np.ndarray, est_cost: np.ndarray, threshold: float) -> np.ndarray:
    """Per query, the cheapest backend with P ≥ threshold, else the most likely one."""
    order = np.argsort(est_cost, kind="stable")
    ok = p[:, order] >= threshold
    first = np.argmax(ok, axis=1)
    choice = order[first]
    none = ~ok.any(axis=1)
    choice[none] = np.argmax(p[none], axis=1)
    return np.asarray(choice)
