"""Objective examples: relative bar (max_shortfall), value per success, dominance."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from policies.candidates import Cand
from policies.decision import Decision
from policies.engine import decide
from policies.facts import BackendFacts, PredictionFacts, RequestFacts
from policies.objectives import dominated_by
from policies.schema import Policy

D = Decimal
# 1000 prompt tokens, 1000 output tokens: cheap 0.002, mid 0.02, big 0.2 USD
BACKENDS = {
    n: BackendFacts(n, D(price), D(price))
    for n, price in (("cheap", "0.000001"), ("mid", "0.00001"), ("big", "0.0001"))
}
REQ = RequestFacts(est_prompt_tokens=1000, max_tokens=1000)


def decide_with(objective: dict[str, Any], p: dict[str, float]) -> Decision:
    pol = Policy.model_validate(
        {
            "candidates": ["cheap", "mid", "big"],
            "objective": objective,
            "predictor_fallback": "cheapest",
        }
    )
    return decide(pol, "p", REQ, BACKENDS, PredictionFacts(p, "v"), rule="t")


def test_max_shortfall_takes_the_cheapest_close_to_the_best() -> None:
    obj = {"kind": "cheapest_adequate", "max_shortfall": 0.05}
    assert decide_with(obj, {"cheap": 0.60, "mid": 0.88, "big": 0.90}).backend == "mid"
    assert decide_with(obj, {"cheap": 0.86, "mid": 0.88, "big": 0.90}).backend == "cheap"
    # a hard query: nobody is good, so the cheap one is as good as it gets
    d = decide_with(obj, {"cheap": 0.20, "mid": 0.22, "big": 0.24})
    assert d.backend == "cheap" and d.fallback is None and "within 0.050" in d.reason
    # with the absolute bar the same hard query goes to the most capable
    d = decide_with(
        {"kind": "cheapest_adequate", "min_success": 0.8, "on_no_adequate": "most_capable"},
        {"cheap": 0.20, "mid": 0.22, "big": 0.24},
    )
    assert d.backend == "big" and d.fallback == "no_adequate"


def test_max_shortfall_and_min_success_both_apply() -> None:
    obj = {"kind": "cheapest_adequate", "min_success": 0.5, "max_shortfall": 0.1}
    assert decide_with(obj, {"cheap": 0.45, "mid": 0.55, "big": 0.6}).backend == "mid"
    d = decide_with(obj, {"cheap": 0.3, "mid": 0.35, "big": 0.4})
    assert d.backend is None and d.error == "no_adequate_candidate"


def test_cheapest_adequate_needs_a_bar() -> None:
    with pytest.raises(ValidationError, match="give min_success, max_shortfall or both"):
        decide_with({"kind": "cheapest_adequate"}, {})


def test_success_value_buys_quality_at_a_marginal_price() -> None:
    # mid costs 0.018 more than cheap for +0.3 expected successes: 0.06 per extra success;
    # big costs 0.18 more than mid for +0.05: 3.6 per extra success.
    p = {"cheap": 0.5, "mid": 0.8, "big": 0.85}
    value = {"kind": "min_cost_per_success", "success_value_usd": "0.01"}
    assert decide_with(value, p).backend == "cheap"
    assert decide_with({**value, "success_value_usd": "0.1"}, p).backend == "mid"
    d = decide_with({**value, "success_value_usd": "10"}, p)
    assert d.backend == "big" and d.row("big").score == D("0.2") - D(10) * D("0.85")
    # without a value: the plain ratio E / S picks the cheap one
    ratio = decide_with({"kind": "min_cost_per_success"}, p)
    assert ratio.backend == "cheap" and ratio.row("cheap").score == D("0.004")


def test_dominated_candidates_are_never_adequate_and_say_why() -> None:
    # mid is pricier than cheap and predicted worse: dominated
    p = {"cheap": 0.7, "mid": 0.6, "big": 0.9}
    d = decide_with({"kind": "max_quality_within", "cost_cap_usd": "0.05"}, p)
    assert d.backend == "cheap"
    assert d.row("mid").adequate is False
    assert d.row("mid").detail.startswith("dominated by cheap")
    d = decide_with(
        {"kind": "cheapest_adequate", "min_success": 0.95, "on_no_adequate": "cheapest"}, p
    )
    assert d.backend == "cheap" and d.fallbacks == ("big", "mid")  # dominated last


def test_dominated_by_names_the_cheapest_dominator() -> None:
    cands = [
        Cand(0, "a", D("1"), 0.9, None),
        Cand(1, "b", D("2"), 0.95, None),
        Cand(2, "c", D("3"), 0.8, None),
        Cand(3, "d", D("3"), 0.8, None),  # ties with c: neither dominates the other
        Cand(4, "e", None, 0.1, None),  # unpriced: not compared
        Cand(5, "f", D("0.5"), None, None),  # no estimate: not compared
    ]
    assert dominated_by(cands) == {"c": "a", "d": "a"}
