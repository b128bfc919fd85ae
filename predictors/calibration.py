"""Probability calibration: scoring rules, reliability tables, Platt scaling, isotonic maps.

This module owns the answer to "does P(success) = 0.8 mean 80 %?": Brier score, log loss,
expected calibration error (ECE) with a reliability table, ROC AUC, the per-profile Platt
map that turns out-of-fold logits into probabilities, and the per-profile monotone (isotonic)
map fitted on held-out predictions that makes the final probabilities calibrated. All
functions ignore NaN labels (queries a model has no record for). Labels may be 0/1 or soft
scores in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-7


def _clean(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"shape mismatch: {y.shape} vs {p.shape}")
    keep = ~np.isnan(y) & ~np.isnan(p)
    return y[keep], p[keep]


def brier_score(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error between probability and outcome (0 is perfect, 0.25 is a coin)."""
    y, p = _clean(y, p)
    return float(np.mean((p - y) ** 2)) if y.size else float("nan")


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _clean(y, p)
    if not y.size:
        return float("nan")
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@dataclass(frozen=True)
class ReliabilityBin:
    lo: float
    hi: float
    count: int
    mean_p: float
    observed: float


def reliability_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[ReliabilityBin]:
    """Equal-width bins over [0, 1]; ``observed`` is the mean outcome in the bin."""
    y, p = _clean(y, p)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        out.append(
            ReliabilityBin(
                lo=float(edges[b]),
                hi=float(edges[b + 1]),
                count=n,
                mean_p=float(p[sel].mean()) if n else float("nan"),
                observed=float(y[sel].mean()) if n else float("nan"),
            )
        )
    return out


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Count-weighted mean |mean_p - observed| over equal-width bins."""
    table = reliability_table(y, p, bins)
    total = sum(b.count for b in table)
    if total == 0:
        return float("nan")
    return float(sum(b.count * abs(b.mean_p - b.observed) for b in table if b.count) / total)


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve for 0/1 labels (ties count one half); NaN if one class."""
    y, p = _clean(y, p)
    pos = y >= 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=float)
    sorted_p = p[order]
    # average ranks over ties
    i = 0
    while i < len(p):
        j = i
        while j + 1 < len(p) and sorted_p[j + 1] == sorted_p[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0))))


def fit_platt(logits: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> tuple[float, float]:
    """Fit ``p = sigmoid(scale * logit + bias)`` by Newton's method on the log loss.

    ``l2`` shrinks ``scale`` towards 1 and ``bias`` towards 0, which keeps the map sane when a
    profile has few or one-sided labels.
    """
    t, z = _clean(y, logits)  # drops pairs where either is NaN
    if z.size < 10:
        return 1.0, 0.0
    w = np.array([1.0, 0.0])
    for _ in range(50):
        p = sigmoid(w[0] * z + w[1])
        g = np.array([np.sum((p - t) * z), np.sum(p - t)]) / z.size
        g += l2 * (w - np.array([1.0, 0.0]))
        r = p * (1 - p)
        h = np.array(
            [[np.sum(r * z * z), np.sum(r * z)], [np.sum(r * z), np.sum(r)]]
        ) / z.size + l2 * np.eye(2)
        step = np.linalg.solve(h, g)
        w = w - step
        if np.max(np.abs(step)) < 1e-9:
            break
    return float(w[0]), float(w[1])


#: Knots of a stored monotone calibration map: P is looked up at 0, 1/(K-1), ..., 1.
CALIBRATION_GRID = 101

#: Weight of the prior in :func:`fit_isotonic_map`: the uncalibrated probability counts as
#: this many observations at each knot (one per 1/100 of the probability range).
ISOTONIC_PRIOR_WEIGHT = 1.0


def fit_isotonic_map(
    p: np.ndarray, y: np.ndarray, min_labels: int = 50, prior_weight: float = ISOTONIC_PRIOR_WEIGHT
) -> np.ndarray:
    """A monotone map ``p -> P(y = 1 | p)`` as values on ``CALIBRATION_GRID`` equal steps of
    [0, 1] (apply with :func:`apply_calibration_map`).

    Isotonic regression (pool adjacent violators, via scikit-learn) of the outcomes on held-out
    predictions, clipped to [0.001, 0.999], with a prior toward the identity: a
    pseudo-observation ``(g, g)`` of weight ``prior_weight`` at every knot ``g``. Where the
    labels are dense (tens per knot) they decide; where they are sparse, and outside the range
    of the held-out predictions, the map stays near the uncalibrated probability. Without it a
    handful of failures at the bottom of a profile's range became a block of 0.001, and every
    prediction below them "never succeeds" (issue 9). With fewer than ``min_labels`` labels, or
    labels of one class only, the identity map is returned (nothing to learn from).
    """
    from sklearn.isotonic import IsotonicRegression

    grid = np.linspace(0.0, 1.0, CALIBRATION_GRID)
    t, q = _clean(y, p)
    if t.size < min_labels or t.min() == t.max():
        return grid.astype(np.float32)
    xs = np.concatenate([q, grid])
    ys = np.concatenate([t, grid])
    w = np.concatenate([np.ones(q.size), np.full(grid.size, float(prior_weight))])
    iso = IsotonicRegression(y_min=0.001, y_max=0.999, out_of_bounds="clip")
    iso.fit(xs, ys, sample_weight=w)
    return np.asarray(iso.predict(grid), dtype=np.float32)


def apply_calibration_map(p: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Apply per-column maps ``maps`` (columns, ``CALIBRATION_GRID``) to ``p`` (n, columns),
    interpolating linearly between knots (values outside [0, 1] take the end knots, as
    ``np.interp`` would). NaN stays NaN."""
    p = np.asarray(p, dtype=np.float32)
    steps = maps.shape[1] - 1
    # knots are evenly spaced, so each value's interval is found by arithmetic: one
    # vectorised pass instead of an np.interp call per column (this runs on every decision)
    pos = np.clip(np.nan_to_num(p), 0.0, 1.0) * steps
    lo = np.minimum(pos.astype(np.int64), steps - 1)
    frac = pos - lo
    cols = np.arange(maps.shape[0])
    out = maps[cols, lo] * (1.0 - frac) + maps[cols, lo + 1] * frac
    return np.asarray(np.where(np.isnan(p), np.nan, out), dtype=np.float32)
