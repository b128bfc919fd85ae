"""``budget_aware`` (issue 13): as the tightest budget runs below ``below_fraction``, a policy
takes its adequate candidates cheapest first (``cheapest_adequate``) or the cheapest eligible
one (``cheapest``); above it, or with no budget, the decision is unchanged. Pure."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from policies.engine import decide
from policies.facts import BackendFacts, PredictionFacts, RequestFacts
from policies.schema import Policy

CAPS = frozenset({"tools", "json_mode", "vision"})


def backend(name: str, price: str) -> BackendFacts:
    return BackendFacts(name, Decimal(price), Decimal(price), 100_000, CAPS)


BACKENDS = {
    "local": backend("local", "0.000001"),
    "mini": backend("mini", "0.00001"),
    "big": backend("big", "0.0001"),
}
PRED = PredictionFacts({"local": 0.5, "mini": 0.85, "big": 0.95}, "p-1")
REQ = RequestFacts(tenant="acme", est_prompt_tokens=1000, max_tokens=1000)


def policy(goal: dict[str, Any], **knob: Any) -> Policy:
    return Policy.model_validate(
        {
            "candidates": ["local", "mini", "big"],
            "objective": goal,
            "predictor_fallback": "cheapest",
            "budget_aware": {"below_fraction": 0.2, **knob},
        }
    )


QUALITY = {"kind": "max_quality_within", "cost_cap_usd": 1}


def run(pol: Policy, fraction: float | None) -> Any:
    req = replace(REQ, budget_remaining_fraction=fraction)
    return decide(pol, "p", req, BACKENDS, PRED, rule="t")


def test_plenty_of_budget_or_none_changes_nothing() -> None:
    pol = policy(QUALITY)
    for fraction in (None, 1.0, 0.2):  # 0.2 is not below 0.2
        d = run(pol, fraction)
        assert d.backend == "big" and d.budget_low is None
        assert "budget_low" not in d.to_dict()


def test_low_budget_takes_the_cheapest_adequate_candidate() -> None:
    d = run(policy(QUALITY), 0.1)
    # every candidate is within the cost cap (adequate): the cheapest of them serves
    assert d.backend == "local" and d.budget_low == pytest.approx(0.1)
    assert d.reason.startswith("budget low (10% left < 20%)")
    assert d.fallbacks == ("mini", "big") and d.to_dict()["budget_low"] == pytest.approx(0.1)
    # cheapest_adequate with a bar: only the adequate ones are candidates
    d = run(policy({"kind": "cheapest_adequate", "min_success": 0.8}), 0.1)
    assert d.backend == "mini" and d.budget_low is None  # already the cheapest adequate


def test_cheapest_mode_ignores_adequacy() -> None:
    pol = policy({"kind": "cheapest_adequate", "min_success": 0.8}, objective="cheapest")
    assert run(pol, 0.5).backend == "mini"
    d = run(pol, 0.05)
    assert d.backend == "local" and d.budget_low == pytest.approx(0.05)


def test_cascade_is_left_alone_and_the_knob_is_validated() -> None:
    cascade = {"kind": "cascade", "first": "local", "accept_confidence": 0.7}
    assert run(policy(cascade), 0.01).budget_low is None
    with pytest.raises(ValidationError):
        policy(QUALITY, below_fraction=1.5)
    with pytest.raises(ValidationError):
        policy(QUALITY, objective="priciest")
