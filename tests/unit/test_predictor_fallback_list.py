"""``predictor_fallback`` as an ordered list: the first eligible listed backend serves, a
keyword ends the list, and a decision that finds none says which were tried and why."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from policies.decision import Decision
from policies.engine import decide
from policies.facts import BackendFacts, RequestFacts
from policies.schema import Policy

D = Decimal


def backend(name: str, price: str, **kw: Any) -> BackendFacts:
    return BackendFacts(
        name=name, input_cost_per_token=D(price), output_cost_per_token=D(price), **kw
    )


# cheapest first: local, mini, big
BACKENDS = {
    "local": backend("local", "0.000001"),
    "mini": backend("mini", "0.00001"),
    "big": backend("big", "0.0001"),
}
REQ = RequestFacts(tenant="acme", prompt_text="hi", est_prompt_tokens=100, max_tokens=100)


def policy(fallback: Any) -> Policy:
    return Policy.model_validate(
        {
            "candidates": ["local", "mini", "big"],
            "objective": {"kind": "cheapest_adequate", "min_success": 0.8},
            "predictor_fallback": fallback,
        }
    )


def run(fallback: Any, down: tuple[str, ...] = ()) -> Decision:
    backends = {
        name: replace(
            b, healthy=False, unhealthy_reason=f"environment variable {name.upper()}_KEY is not set"
        )
        if name in down
        else b
        for name, b in BACKENDS.items()
    }
    return decide(policy(fallback), "p", REQ, backends, None, rule="test")


def test_a_single_name_keeps_its_meaning_and_its_version() -> None:
    d = run("mini")
    assert d.backend == "mini" and d.fallbacks == ("local", "big")
    assert policy("mini").predictor_fallbacks == ("mini",)
    # a one-element list decides the same, but it is another text, so another version
    assert run(["mini"]).backend == "mini"


def test_the_first_eligible_listed_backend_serves() -> None:
    d = run(["big", "mini"], down=("big",))
    assert d.backend == "mini" and d.fallback == "predictor_unavailable"
    # the other eligible candidates stay behind it for the dispatcher, in candidate order
    assert d.fallbacks == ("local",)
    assert "not eligible: big (health: environment variable BIG_KEY is not set)" in d.reason


def test_listed_order_beats_candidate_order() -> None:
    assert run(["big", "local"]).fallbacks == ("local", "mini")


def test_a_keyword_orders_what_is_left_and_ends_the_list() -> None:
    d = run(["big", "cheapest"], down=("big",))
    assert d.backend == "local" and d.fallbacks == ("mini",)
    d = run(["mini", "cheapest"])
    assert d.backend == "mini" and d.fallbacks == ("local", "big")


def test_nothing_listed_can_serve_names_each_and_why() -> None:
    d = run(["big", "mini"], down=("big", "mini"))
    assert d.backend is None and d.error == "predictor_fallback_unavailable"
    assert "big (health: environment variable BIG_KEY is not set)" in d.reason
    assert "mini (health: environment variable MINI_KEY is not set)" in d.reason


def test_error_at_the_end_stops_instead_of_serving_others() -> None:
    d = run(["big", "error"], down=("big",))
    assert d.backend is None and d.error == "predictor_fallback_unavailable"
    assert d.reason.endswith("then error") or "then error" in d.reason
    assert run("error").error == "predictor_unavailable"


@pytest.mark.parametrize(
    ("fallback", "loc", "message"),
    [
        (["mini", "nope"], ("predictor_fallback", 1), "nor a candidate"),
        (["mini", "mini"], ("predictor_fallback", 1), "listed twice"),
        (["cheapest", "mini"], ("predictor_fallback", 0), "can only come last"),
        ([], ("predictor_fallback",), "must not be empty"),
    ],
)
def test_invalid_lists_point_at_the_entry(
    fallback: Any, loc: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as err:
        policy(fallback)
    errors = err.value.errors()
    assert any(e["loc"] == loc and message in e["msg"] for e in errors), errors
