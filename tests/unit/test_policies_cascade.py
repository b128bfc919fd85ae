"""The cascade objective: the first call, the plan it carries, and each step's verdict rule."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from policies.cascade import CascadePlan, cascade_step
from policies.decision import Decision
from policies.engine import decide
from policies.facts import BackendFacts, PredictionFacts, RequestFacts
from policies.schema import Policy

D = Decimal
BACKENDS = {
    n: BackendFacts(n, D(price), D(price))
    for n, price in (("flash", "0.000001"), ("deep", "0.000002"), ("pro", "0.0001"))
}
REQ = RequestFacts(est_prompt_tokens=1000, max_tokens=1000)
PRED = PredictionFacts({"flash": 0.7, "deep": 0.65, "pro": 0.8}, "v")


def cascade(**kw: Any) -> Policy:
    objective = {"kind": "cascade", "first": "flash", "check": "deep", "accept_confidence": 0.8}
    objective.update(kw)
    return Policy.model_validate(
        {
            "candidates": ["flash", "deep", "pro"],
            "objective": objective,
            "predictor_fallback": "pro",
        }
    )


def run(pol: Policy, pred: PredictionFacts | None = PRED) -> Decision:
    return decide(pol, "c", REQ, BACKENDS, pred, rule="t")


def test_first_call_is_the_cheap_tier_with_a_plan() -> None:
    d = run(cascade())
    assert d.backend == "flash" and d.fallback is None
    assert d.cascade == CascadePlan(
        first="flash",
        check="deep",
        escalate_to="pro",
        accept_confidence=0.8,
        skip_check_above=1.0,
        escalate_below=0.0,
        p_first=0.7,
        p_check=0.65,
        p_escalation=0.8,
    )
    assert d.to_dict()["cascade"]["escalate_to"] == "pro"
    assert "cascade: flash answers first" in d.reason


def test_hard_queries_go_straight_up() -> None:
    d = run(cascade(straight_up_below=0.75))
    assert d.backend == "pro" and d.cascade is None and "straight to" in d.reason
    assert run(cascade(straight_up_below=0.5)).backend == "flash"


def test_without_a_prediction_the_predictor_fallback_serves() -> None:
    d = run(cascade(), pred=None)
    assert d.backend == "pro" and d.cascade is None and d.fallback == "predictor_unavailable"


def test_first_not_eligible_uses_on_no_adequate() -> None:
    backends = {**BACKENDS, "flash": BackendFacts("flash", D(1), D(1), healthy=False)}
    d = decide(cascade(), "c", REQ, backends, PRED, rule="t")
    assert d.backend == "pro" and d.fallback == "no_adequate" and d.cascade is None


def test_references_are_checked() -> None:
    with pytest.raises(ValidationError, match="'nope' is not a candidate"):
        cascade(check="nope")
    with pytest.raises(ValidationError, match="already the cascade's first"):
        cascade(escalate_to="flash")
    with pytest.raises(ValidationError, match="escalate_below must be <= skip_check_above"):
        cascade(escalate_below=0.9, skip_check_above=0.5)


PLAN = CascadePlan("flash", "deep", "pro", 0.8, 0.95, 0.3, 0.7, 0.65, 0.8)


@pytest.mark.parametrize(
    ("checked", "verdict", "action", "backend"),
    [
        (False, 0.97, "accept", None),  # confident enough to skip the check
        (False, 0.6, "check", "deep"),
        (False, 0.2, "escalate", "pro"),  # a check could not save it
        (True, 0.85, "accept", None),
        (True, 0.79, "escalate", "pro"),
        (False, None, "escalate", "pro"),
    ],
)
def test_cascade_step(checked: bool, verdict: float | None, action: str, backend: str) -> None:
    step = cascade_step(PLAN, checked=checked, verdict=verdict)
    assert (step.action, step.backend) == (action, backend), step.reason


def test_without_a_check_the_accept_bar_decides_at_once() -> None:
    plan = CascadePlan("flash", None, "pro", 0.8, 1.0, 0.0, 0.7, None, 0.9)
    assert cascade_step(plan, checked=False, verdict=0.81).action == "accept"
    assert cascade_step(plan, checked=False, verdict=0.79).action == "escalate"
    top = CascadePlan("flash", None, None, 0.8, 1.0, 0.0, 0.7, None, None)
    step = cascade_step(top, checked=False, verdict=0.1)
    assert step.action == "accept" and "nothing to escalate to" in step.reason
    # with a check but nothing to escalate to, the check could change nothing: not paid for
    checked_top = CascadePlan("flash", "deep", None, 0.8, 0.95, 0.3, 0.7, 0.65, None)
    for v in (None, 0.1, 0.5, 0.99):
        assert cascade_step(checked_top, checked=False, verdict=v).action == "accept"


def test_a_cascade_takes_no_validator_escalation() -> None:
    with pytest.raises(ValidationError, match="escalates on its own verdict"):
        cascade(**{}).model_validate(
            {
                **cascade().model_dump(mode="json"),
                "escalation": {"validators": [{"kind": "non_empty"}]},
            }
        )


def routed(**kw: Any) -> Policy:
    return cascade(**{"first": None, "check": None, "success_value_usd": "1", **kw})


def test_a_first_tier_chosen_per_request_by_net_expected_cost() -> None:
    # costs 0.002 / 0.004 / 0.2; at $1 a success flash (0.7) nets -0.698, pro (0.8) -0.6
    d = run(routed())
    assert d.backend == "flash" and d.cascade is not None
    assert d.cascade.first == "flash" and d.cascade.escalate_to == "pro"
    assert d.row("flash").score == D("-0.698") and "lowest net expected cost" in d.reason
    # another request: deep is the likelier one and worth its extra $0.002
    d = run(routed(), PredictionFacts({"flash": 0.5, "deep": 0.75, "pro": 0.8}, "v"))
    assert d.backend == "deep" and d.cascade is not None and d.cascade.first == "deep"
    # at $3 a success the escalation tier nets less than any cheap first: it answers alone
    d = run(routed(success_value_usd="3"))
    assert d.backend == "pro" and d.cascade is None and "answers alone" in d.reason


def test_a_per_request_first_is_never_the_check_nor_dominated() -> None:
    pred = PredictionFacts({"flash": 0.7, "deep": 0.75, "pro": 0.8}, "v")
    assert run(routed(), pred).backend == "deep"  # nets -0.746 against flash's -0.698
    d = run(routed(check="deep"), pred)
    assert d.backend == "flash" and d.cascade is not None and d.cascade.check == "deep"
    # deep costs more than flash for a lower P: dominated, never the first
    assert run(routed()).backend == "flash"
    assert run(routed(), PredictionFacts({"flash": 0.7, "deep": 0.7, "pro": 0.8}, "v")).backend == (
        "flash"
    )


def test_first_or_success_value_but_not_both() -> None:
    with pytest.raises(ValidationError, match="first_missing"):
        cascade(success_value_usd="1")
    with pytest.raises(ValidationError, match="first_missing"):
        cascade(first=None)
