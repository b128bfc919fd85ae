"""The cascade's verdict: closed-form answers, features, and a fit on synthetic answers."""

from __future__ import annotations

import numpy as np
import pytest

from predictors.calibration import apply_calibration_map, fit_isotonic_map
from predictors.verdict import (
    FEATURES,
    AnswerFacts,
    VerdictModel,
    extract_choice,
    feature_matrix,
    fit_verdict,
    pair_rows,
    verdict_features,
)


@pytest.mark.parametrize(
    ("text", "choice"),
    [
        ("B", "B"),
        ("B\n", "B"),
        ("(C)", "C"),
        ("A) Kyle", "A"),
        ("D. because ...", "D"),
        ("Let's think. The answer is (D).", "D"),
        ("Answer: C, but on reflection the answer is (E)", "E"),
        ("ANSWER: J", "J"),
        ("I think so", None),
        ("A good question.", None),
        ("the answer is a function", None),
        ("Answer: because", None),
        ("def f(x):\n    return x", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_choice(text: str | None, choice: str | None) -> None:
    assert extract_choice(text) == choice


def test_scalar_and_batch_features_agree() -> None:
    first = AnswerFacts(0.7, "B", 120)
    check = AnswerFacts(0.6, "B", 40)
    one = verdict_features(0.9, first, check)
    many = feature_matrix(
        np.array([0.9]),
        np.array([0.7]),
        np.array(["B"]),
        np.array([120]),
        np.array([0.6]),
        np.array(["B"]),
        np.array([40]),
    )
    np.testing.assert_allclose(one, many[0], rtol=1e-6)
    assert one[FEATURES.index("agree")] == 1.0
    alone = verdict_features(0.9, AnswerFacts(0.7, None, 5))
    assert alone[FEATURES.index("has_check")] == 0.0 and alone.shape == (len(FEATURES),)
    disagree = verdict_features(0.9, first, AnswerFacts(0.6, "C", 40))
    assert disagree[FEATURES.index("agree")] == 0.0
    assert disagree[FEATURES.index("comparable")] == 1.0


def test_verdict_learns_that_agreement_means_keep() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    truth = rng.integers(0, 4, n)
    letters = np.array(list("ABCD"))

    def answers(acc: float) -> tuple[np.ndarray, np.ndarray]:
        right = rng.random(n) < acc
        wrong = (truth + rng.integers(1, 4, n)) % 4
        return letters[np.where(right, truth, wrong)], right.astype(float)

    a, ya = answers(0.6)
    b, yb = answers(0.6)
    ys = np.ones(n)  # the escalation tier is always right: keeping loses unless a is right
    p = np.full((n, 3), 0.6)
    p[:, 2] = 0.95
    outcome = np.column_stack([ya, yb, ys])
    ans = np.column_stack([a, b, letters[truth]])
    chars = np.full((n, 3), 10.0)
    x, y = pair_rows(p, outcome, ans, chars, [(0, 1), (0, None)], escalation=2)
    assert x.shape == (2 * n, len(FEATURES)) and y.mean() == pytest.approx(0.6, abs=0.03)
    v = fit_verdict(x, y)
    agree = v.p_keep(0.95, AnswerFacts(0.6, "A", 10), AnswerFacts(0.6, "A", 10))
    differ = v.p_keep(0.95, AnswerFacts(0.6, "A", 10), AnswerFacts(0.6, "B", 10))
    alone = v.p_keep(0.95, AnswerFacts(0.6, "A", 10))
    # Bayes: P(a right | agree) = 0.87, P(a right | differ) = 0.47, P(a right) = 0.6
    assert agree > 0.8 and differ < 0.5 and differ < alone < agree
    again = VerdictModel.from_arrays(v.to_arrays())
    assert again is not None and again.p_keep(0.95, AnswerFacts(0.6, "A", 10)) == pytest.approx(
        alone, rel=1e-5
    )
    assert VerdictModel.from_arrays({}) is None


def test_isotonic_map_calibrates_and_is_monotone() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(5000)
    y = (rng.random(5000) < p**2).astype(float)  # the raw p over-states success
    m = fit_isotonic_map(p, y)
    assert np.all(np.diff(m) >= 0)
    q = apply_calibration_map(p[:, None], m[None, :])[:, 0]
    for lo in (0.2, 0.5, 0.8):
        sel = (q >= lo) & (q < lo + 0.1)
        assert abs(y[sel].mean() - q[sel].mean()) < 0.05
    # too few labels or one class: the identity map
    np.testing.assert_allclose(fit_isotonic_map(p[:10], y[:10]), np.linspace(0, 1, m.size))
    nan_in = apply_calibration_map(np.array([[np.nan]]), m[None, :])
    assert np.isnan(nan_in[0, 0])
