"""Calibration metrics and routing-curve metrics on hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from predictors.calibration import (
    CALIBRATION_GRID,
    apply_calibration_map,
    brier_score,
    expected_calibration_error,
    fit_isotonic_map,
    fit_platt,
    log_loss,
    reliability_table,
    roc_auc,
    sigmoid,
)
from predictors.routing_eval import (
    aiq,
    cost_to_reach,
    hull,
    quality_at,
    route_penalised,
    route_threshold,
)


def test_brier_known_values() -> None:
    assert brier_score(np.array([1, 0, 1, 0]), np.array([1.0, 0.0, 0.5, 0.5])) == pytest.approx(
        0.125
    )
    assert brier_score(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.25)
    # NaN labels (no record) are ignored
    assert brier_score(np.array([1, np.nan]), np.array([0.8, 0.1])) == pytest.approx(0.04)


def test_log_loss_known_value() -> None:
    assert log_loss(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(math.log(2))


def test_ece_and_reliability_known_values() -> None:
    # bin 0.2-0.3: p=0.2 twice, one success -> |0.2 - 0.5| = 0.3
    # bin 0.8-0.9: p=0.8 twice, both succeed -> |0.8 - 1.0| = 0.2
    y = np.array([1, 0, 1, 1])
    p = np.array([0.2, 0.2, 0.8, 0.8])
    table = reliability_table(y, p, bins=10)
    assert [b.count for b in table] == [0, 0, 2, 0, 0, 0, 0, 0, 2, 0]
    assert table[2].observed == pytest.approx(0.5)
    assert expected_calibration_error(y, p, bins=10) == pytest.approx(0.25)
    # a perfectly calibrated predictor has ECE 0
    assert expected_calibration_error(np.array([1, 0]), np.array([0.5, 0.5])) == 0.0


def test_auc_known_values() -> None:
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert roc_auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert roc_auc(np.array([0, 1, 1]), np.array([0.2, 0.1, 0.3])) == pytest.approx(0.5)
    assert math.isnan(roc_auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_platt_recovers_a_known_map() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=20_000)
    y = (rng.random(z.size) < sigmoid(2.0 * z - 0.5)).astype(float)
    scale, bias = fit_platt(z, y, l2=0.0)
    assert scale == pytest.approx(2.0, abs=0.1)
    assert bias == pytest.approx(-0.5, abs=0.1)


def test_isotonic_map_sparse_tail_stays_near_the_model() -> None:
    # issue 9: a profile whose held-out predictions all lie in [0.6, 1] and whose four lowest
    # happen to fail. Plain isotonic regression gives those four a block of its own at 0.001
    # and clips everything below the data to it: a prompt whose blend falls at 0.55 "never
    # succeeds" on the word of four labels.
    rng = np.random.default_rng(1)
    p = np.concatenate([[0.60, 0.61, 0.62, 0.625], rng.uniform(0.63, 0.98, 2000)])
    y = np.concatenate([[0.0, 0.0, 0.0, 0.0], (rng.random(2000) < p[4:]).astype(float)])
    m = fit_isotonic_map(p, y)
    grid = np.linspace(0.0, 1.0, CALIBRATION_GRID)
    assert np.all(np.diff(m) >= 0)
    at = dict(zip(np.round(grid, 2), m, strict=True))
    # below and at the sparse tail: near the model's own estimate, far from "never"
    assert at[0.55] > 0.3 and at[0.61] > 0.3
    assert at[0.3] == pytest.approx(0.3, abs=0.05)  # no data at all: the identity
    # where the data are dense (the raw p is calibrated there) the map follows them
    for g in (0.7, 0.8, 0.9):
        assert at[g] == pytest.approx(g, abs=0.05)
    q = apply_calibration_map(p[:, None], m[None, :])[:, 0]
    assert abs(q.mean() - y.mean()) < 0.01


def test_isotonic_map_dense_data_outweigh_the_prior() -> None:
    # the raw p over-states success everywhere and data cover [0, 1]: the map must still
    # correct it (the pseudo-observations toward the identity are worth little against them)
    rng = np.random.default_rng(2)
    p = rng.random(20000)
    y = (rng.random(20000) < p**2).astype(float)
    m = fit_isotonic_map(p, y)
    grid = np.linspace(0.0, 1.0, CALIBRATION_GRID)
    inner = (grid >= 0.1) & (grid <= 0.9)
    assert np.max(np.abs(m[inner] - grid[inner] ** 2)) < 0.05


def test_hull_aiq_and_costs() -> None:
    # (1, .5) (2, .6) (3, .9) (4, .8): (2, .6) is under the chord, (4, .8) is dominated
    hc, hq = hull(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.5, 0.6, 0.9, 0.8]))
    assert hc.tolist() == [1.0, 3.0]
    assert hq.tolist() == [0.5, 0.9]
    # area on [0, 4]: 0 on [0,1), trapezoid (.5+.9)/2*2 = 1.4, flat .9 on [3,4] -> 2.3 / 4
    assert aiq(hc, hq, 4.0) == pytest.approx(2.3 / 4.0)
    assert quality_at(hc, hq, 2.0) == pytest.approx(0.7)
    assert math.isnan(quality_at(hc, hq, 0.5))
    assert cost_to_reach(hc, hq, 0.7) == pytest.approx(2.0)
    assert cost_to_reach(hc, hq, 0.95) == math.inf


def test_routing_rules() -> None:
    p = np.array([[0.9, 0.95], [0.3, 0.9]])
    cost = np.array([1.0, 10.0])
    assert route_penalised(p, cost, 0.0).tolist() == [1, 1]
    assert route_penalised(p, cost, 1.0).tolist() == [0, 0]
    assert route_threshold(p, cost, 0.8).tolist() == [0, 1]
    assert route_threshold(p, cost, 0.99).tolist() == [1, 1]  # none passes: most likely
