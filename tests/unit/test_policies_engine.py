"""Policy engine examples: constraints, objectives, fallbacks, rule selection, shadow, output."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from policies.decision import Decision
from policies.engine import decide, escalation_cost, select
from policies.explain import render_table
from policies.facts import BackendFacts, PredictionFacts, RequestFacts
from policies.schema import Policy, PolicySet
from policies.shadow import shadow_decisions, shadows_for

D = Decimal
ALL_CAPS = frozenset({"tools", "json_mode", "vision"})


def backend(name: str, in_price: str | None, out_price: str | None, **kw: Any) -> BackendFacts:
    return BackendFacts(
        name=name,
        input_cost_per_token=None if in_price is None else D(in_price),
        output_cost_per_token=None if out_price is None else D(out_price),
        context_window=kw.pop("context_window", 100_000),
        capabilities=kw.pop("capabilities", ALL_CAPS),
        **kw,
    )


# Costs with 1000 prompt tokens and max_tokens=1000: local 0.002, mini 0.02, big 0.2
BACKENDS = {
    "local": backend("local", "0.000001", "0.000001", tags=frozenset({"local_only"})),
    "mini": backend("mini", "0.00001", "0.00001"),
    "big": backend("big", "0.0001", "0.0001"),
}
REQ = RequestFacts(tenant="acme", prompt_text="hi", est_prompt_tokens=1000, max_tokens=1000)
PRED = PredictionFacts({"local": 0.5, "mini": 0.85, "big": 0.95}, "p-1")


def policy(**kw: Any) -> Policy:
    data: dict[str, Any] = {
        "candidates": ["local", "mini", "big"],
        "objective": {"kind": "cheapest_adequate", "min_success": 0.8},
        "predictor_fallback": "cheapest",
    }
    data.update(kw)
    return Policy.model_validate(data)


def run(
    pol: Policy,
    req: RequestFacts = REQ,
    backends: dict[str, BackendFacts] | None = None,
    pred: PredictionFacts | None = PRED,
) -> Decision:
    return decide(pol, "p", req, BACKENDS if backends is None else backends, pred, rule="test")


def with_backend(name: str, **changes: Any) -> dict[str, BackendFacts]:
    out = dict(BACKENDS)
    out[name] = replace(out[name], **changes)
    return out


# --------------------------------------------------------------------------- costs


def test_expected_cost_uses_max_tokens_else_typical_output() -> None:
    d = run(policy())
    assert d.row("mini").expected_cost_usd == D("0.02000")
    d = run(policy(), req=replace(REQ, max_tokens=None))
    # 1000 * 0.00001 + 256 (typical) * 0.00001
    assert d.row("mini").expected_cost_usd == D("0.01256")


def test_expected_cost_follows_the_predicted_answer_length() -> None:
    req = replace(REQ, max_tokens=None)
    pred = replace(PRED, output_ratio={"mini": 3.0, "big": 0.5})
    d = run(policy(), req=req, pred=pred)
    assert d.row("mini").expected_cost_usd == D("0.01768")  # 1000 + 768 tokens
    assert d.row("big").expected_cost_usd == D("0.1128")  # 1000 + 128 tokens, at 0.0001
    assert d.row("local").expected_cost_usd == D("0.001256")  # no ratio: the typical 256
    # the client's max_tokens still bounds the answer, whatever the predictor expects
    assert run(policy(), pred=pred).row("mini").expected_cost_usd == D("0.02000")
    # a ratio moves a cost-aware choice: at $1 per success big's extra 0.10 P(success) is
    # not worth its typical $0.113 more, but is when its answer will be a quarter as long
    cost_aware = policy(objective={"kind": "min_cost_per_success", "success_value_usd": "1"})
    assert run(cost_aware, req=req).backend == "mini"
    short_big = replace(PRED, output_ratio={"big": 0.25})
    assert run(cost_aware, req=req, pred=short_big).backend == "big"
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="output_ratio"):
            PredictionFacts({"mini": 0.5}, "p-1", output_ratio={"mini": bad})


# --------------------------------------------------------------------------- constraints


@pytest.mark.parametrize(
    ("backends", "req", "pol_kw", "code"),
    [
        (with_backend("mini", healthy=False), REQ, {}, "health"),
        (with_backend("mini", circuit_open=True), REQ, {}, "circuit"),
        (
            with_backend("mini", capabilities=frozenset()),
            replace(REQ, has_tools=True),
            {},
            "capabilities",
        ),
        (
            with_backend("mini", capabilities=frozenset({"tools"})),
            replace(REQ, json_mode=True),
            {},
            "capabilities",
        ),
        (BACKENDS, REQ, {"constraints": {"require_capabilities": ["audio"]}}, "capabilities"),
        (with_backend("mini", context_window=1500), REQ, {}, "context_window"),
        (
            with_backend("mini", p95_latency_ms=5000.0),
            REQ,
            {"constraints": {"latency_slo_ms": 2000}},
            "latency_slo",
        ),
        (BACKENDS, REQ, {"constraints": {"max_cost_usd": "0.01"}}, "max_cost"),
        (BACKENDS, replace(REQ, budget_remaining_usd=D("0.01")), {}, "budget"),
        (BACKENDS, REQ, {"constraints": {"require_tags": ["local_only"]}}, "tags"),
        (BACKENDS, replace(REQ, required_tags=frozenset({"local_only"})), {}, "tags"),
        (
            with_backend("mini", tags=frozenset({"beta"})),
            REQ,
            {"constraints": {"forbid_tags": ["beta"]}},
            "tags",
        ),
        (BACKENDS, REQ, {"constraints": {"tenants": {"acme": {"deny": ["mini"]}}}}, "tenant"),
        (BACKENDS, REQ, {"constraints": {"tenants": {"acme": {"allow": ["big"]}}}}, "tenant"),
        (with_backend("mini", allowed_tenants=frozenset({"other"})), REQ, {}, "tenant"),
        (with_backend("mini", denied_tenants=frozenset({"acme"})), REQ, {}, "tenant"),
        ({k: v for k, v in BACKENDS.items() if k != "mini"}, REQ, {}, "unknown_backend"),
        (
            with_backend("mini", input_cost_per_token=None),
            REQ,
            {"constraints": {"unpriced": "exclude"}},
            "unpriced",
        ),
    ],
)
def test_each_constraint_removes_mini(
    backends: dict[str, BackendFacts], req: RequestFacts, pol_kw: dict[str, Any], code: str
) -> None:
    d = run(policy(**pol_kw), req=req, backends=backends)
    row = d.row("mini")
    assert not row.eligible and row.removed_by == code and row.detail
    assert d.backend != "mini" and "mini" not in d.fallbacks
    assert f"mini ({code})" in d.reason


def test_unknown_latency_is_not_removed_and_other_tenants_unaffected() -> None:
    d = run(
        policy(constraints={"latency_slo_ms": 100, "tenants": {"other": {"deny": ["mini"]}}}),
        backends=with_backend("mini", p95_latency_ms=None),
    )
    assert d.row("mini").eligible


def test_everything_removed_is_an_error_decision() -> None:
    d = run(policy(), req=replace(REQ, required_capabilities=frozenset({"telepathy"})))
    assert d.backend is None and d.error == "no_eligible_candidate"
    assert d.fallbacks == () and all(r.removed_by == "capabilities" for r in d.candidates)


# --------------------------------------------------------------------------- objectives


def test_cheapest_adequate_picks_the_cheapest_above_the_bar() -> None:
    d = run(policy())
    assert d.backend == "mini" and d.fallback is None
    assert d.row("local").adequate is False and d.row("big").adequate is True
    assert d.fallbacks == ("big",)  # on_no_adequate defaults to error: no inadequate tail
    assert d.p_success == 0.85 and d.expected_cost_usd == D("0.02")


def test_cheapest_adequate_fallback_tail_follows_on_no_adequate() -> None:
    obj = {"kind": "cheapest_adequate", "min_success": 0.8, "on_no_adequate": "most_capable"}
    assert run(policy(objective=obj)).fallbacks == ("big", "local")


@pytest.mark.parametrize(
    ("choice", "backend", "fallbacks"),
    [
        ("most_capable", "big", ("mini", "local")),
        ("cheapest", "local", ("mini", "big")),
        ("mini", "mini", ()),
        ("error", None, ()),
    ],
)
def test_on_no_adequate(choice: str, backend: str | None, fallbacks: tuple[str, ...]) -> None:
    obj = {"kind": "cheapest_adequate", "min_success": 0.99, "on_no_adequate": choice}
    d = run(policy(objective=obj))
    assert d.backend == backend and d.fallbacks == fallbacks
    assert d.fallback == "no_adequate"
    if backend is None:
        assert d.error == "no_adequate_candidate"


def test_on_no_adequate_named_backend_removed_is_an_error() -> None:
    obj = {"kind": "cheapest_adequate", "min_success": 0.99, "on_no_adequate": "mini"}
    d = run(policy(objective=obj), backends=with_backend("mini", circuit_open=True))
    assert d.backend is None and d.error == "no_adequate_candidate"


def test_min_cost_per_success_is_cost_over_p_without_escalation() -> None:
    d = run(policy(objective={"kind": "min_cost_per_success"}))
    # local: 0.002/0.5 = 0.004; mini: 0.02/0.85 = 0.0235; big: 0.2/0.95 = 0.21
    assert d.backend == "local"
    assert d.row("local").score == D("0.004")
    assert d.fallbacks == ("mini", "big")


def test_min_cost_per_success_counts_escalation() -> None:
    pred = PredictionFacts({"local": 0.2, "mini": 0.7, "big": 0.95}, "p")
    plain = run(policy(objective={"kind": "min_cost_per_success"}), pred=pred)
    assert plain.backend == "local"  # 0.002/0.2 = 0.01 < 0.02/0.7 = 0.0286
    esc = policy(
        objective={"kind": "min_cost_per_success"},
        escalation={"validators": [{"kind": "non_empty"}], "max_escalations": 1},
    )
    d = run(esc, pred=pred)
    # local escalates to mini: E = 0.002 + 0.8*0.02 = 0.018, S = 1 - 0.8*0.3 = 0.76
    assert d.row("local").score == (D("0.018") / D("0.76")).quantize(D("1e-12"))
    spend, success = escalation_cost([(D("0.002"), 0.2), (D("0.02"), 0.7)], 0)
    assert (spend, success) == (D("0.018"), D("0.76"))
    assert d.escalation == ("mini",)


def test_escalation_cost_with_retries() -> None:
    spend, success = escalation_cost([(D("1"), 0.5)], retries_per_tier=2)
    assert spend == D("1.75") and success == D("0.875")


def test_min_cost_per_success_floor_and_zero_probability() -> None:
    pred = PredictionFacts({"local": 0.0, "mini": 0.3, "big": 0.9}, "p")
    d = run(policy(objective={"kind": "min_cost_per_success", "min_success": 0.5}), pred=pred)
    assert d.backend == "big"
    assert d.row("local").score is None and d.row("local").adequate is False


def test_max_quality_within_cap() -> None:
    d = run(policy(objective={"kind": "max_quality_within", "cost_cap_usd": "0.05"}))
    assert d.backend == "mini"  # big (0.95) costs 0.2 > cap
    assert d.row("big").adequate is False and d.row("big").eligible
    d = run(policy(objective={"kind": "max_quality_within", "cost_cap_usd": "0.5"}))
    assert d.backend == "big" and d.fallbacks == ("mini", "local")


def test_unpriced_ranks_last_and_is_never_within_a_cap() -> None:
    free = with_backend("local", input_cost_per_token=None)
    pred = PredictionFacts({"local": 0.9, "mini": 0.85, "big": 0.95}, "p")
    d = run(policy(), backends=free, pred=pred)
    assert d.backend == "mini" and d.fallbacks == ("big", "local")
    assert d.row("local").expected_cost_usd is None
    d = run(policy(objective={"kind": "min_cost_per_success"}), backends=free, pred=pred)
    assert d.backend == "mini" and d.fallbacks[-1] == "local"
    cap = {"kind": "max_quality_within", "cost_cap_usd": "1", "on_no_adequate": "error"}
    d = run(policy(objective=cap), backends=free, pred=PredictionFacts({"local": 0.99}, "p"))
    assert d.backend is None and d.row("local").adequate is False
    # Only the unpriced one is adequate: it is chosen (ranked last, not excluded).
    d = run(policy(), backends=free, pred=PredictionFacts({"local": 0.9, "mini": 0.1}, "p"))
    assert d.backend == "local"


def test_ties_break_on_candidate_order() -> None:
    same = with_backend(
        "big", input_cost_per_token=D("0.00001"), output_cost_per_token=D("0.00001")
    )
    pred = PredictionFacts({"local": 0.1, "mini": 0.9, "big": 0.9}, "p")
    assert run(policy(), backends=same, pred=pred).backend == "mini"
    reordered = policy(candidates=["big", "mini", "local"])
    assert run(reordered, backends=same, pred=pred).backend == "big"


# --------------------------------------------------------------------------- predictor fallback


@pytest.mark.parametrize(
    ("choice", "backend", "fallbacks"),
    [
        ("cheapest", "local", ("mini", "big")),
        ("first_candidate", "local", ("mini", "big")),
        ("big", "big", ("local", "mini")),
        ("error", None, ()),
    ],
)
def test_predictor_fallback(choice: str, backend: str | None, fallbacks: tuple[str, ...]) -> None:
    d = run(policy(predictor_fallback=choice), pred=None)
    assert d.backend == backend and d.fallbacks == fallbacks
    assert d.predictor_version is None
    assert all(r.p_success is None and r.adequate is None for r in d.candidates)
    if backend is None:
        assert d.error == "predictor_unavailable"
    else:
        assert d.fallback == "predictor_unavailable" and d.used_fallback


def test_predictor_fallback_respects_constraints() -> None:
    d = run(
        policy(predictor_fallback="big"), pred=None, backends=with_backend("big", healthy=False)
    )
    assert d.backend is None and d.error == "predictor_fallback_unavailable"
    d = run(
        policy(predictor_fallback="cheapest"),
        pred=None,
        backends=with_backend("local", circuit_open=True),
    )
    assert d.backend == "mini"


def test_prediction_without_estimates_for_eligible_candidates_uses_fallback() -> None:
    d = run(
        policy(predictor_fallback="first_candidate"), pred=PredictionFacts({"other": 0.9}, "p-2")
    )
    assert d.backend == "local" and d.fallback == "predictor_unavailable"
    assert d.predictor_version == "p-2" and "no estimate for any eligible" in d.reason


def test_predictor_profile_maps_backends_to_estimates() -> None:
    b = with_backend("mini", predictor_profile="small-models")
    d = run(policy(), backends=b, pred=PredictionFacts({"small-models": 0.9, "big": 0.95}, "p"))
    assert d.row("mini").p_success == 0.9 and d.backend == "mini"
    assert d.row("local").p_success is None and d.row("local").adequate is False


# --------------------------------------------------------------------------- escalation


def test_escalation_order_capability_and_candidates() -> None:
    esc = {"validators": [{"kind": "non_empty"}], "max_escalations": 2}
    pred = PredictionFacts({"local": 0.9, "mini": 0.92, "big": 0.95}, "p")
    d = run(policy(escalation=esc), pred=pred)
    assert d.backend == "local" and d.escalation == ("mini", "big")  # ascending P(success)
    d = run(policy(escalation={**esc, "order": "candidates"}), pred=pred)
    assert d.escalation == ("mini", "big")
    d = run(policy(escalation={**esc, "max_escalations": 1}), pred=pred)
    assert d.escalation == ("mini",)
    d = run(policy(escalation=esc), pred=pred, backends=with_backend("mini", circuit_open=True))
    assert d.escalation == ("big",)
    assert run(policy(), pred=pred).escalation == ()


def test_escalation_never_climbs_to_a_dominated_tier() -> None:
    # big costs 10x mini and is predicted *less* likely to succeed: never an escalation tier
    esc = {"validators": [{"kind": "non_empty"}], "max_escalations": 2}
    pred = PredictionFacts({"local": 0.9, "mini": 0.95, "big": 0.92}, "p")
    d = run(policy(escalation=esc), pred=pred)
    assert d.backend == "local" and d.escalation == ("mini",)
    assert d.row("big").detail.startswith("dominated by mini")
    # the operator's explicit order is kept as written
    d = run(policy(escalation={**esc, "order": "candidates"}), pred=pred)
    assert d.escalation == ("mini", "big")


# --------------------------------------------------------------------------- rules


RULES = PolicySet.model_validate(
    {
        "policies": {
            n: {
                "candidates": ["mini"],
                "objective": {"kind": "cheapest_adequate", "min_success": 0.5},
                "predictor_fallback": "mini",
            }
            for n in ("a", "b", "c", "d", "e", "f")
        },
        "routing": {
            "rules": [
                {"name": "tools", "match": {"has_tools": True}, "policy": "a"},
                {"match": {"tenants": ["acme"], "headers": {"X-Team": "search"}}, "policy": "b"},
                {"match": {"header_regex": {"x-tier": "^gold"}}, "policy": "c"},
                {"match": {"prompt_tokens": {"min": 5000}}, "policy": "d"},
                {
                    "match": {"prompt_regex": "(?i)theorem", "prompt_chars": {"max": 100}},
                    "policy": "e",
                },
                {"match": {"key_ids": ["k1"], "json_mode": True}, "policy": "f"},
            ],
            "default": "a",
        },
    }
)


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        (RequestFacts(has_tools=True, tenant="acme", headers={"x-team": "search"}), ("a", "tools")),
        (RequestFacts(tenant="acme", headers={"X-TEAM": "search"}), ("b", "rules[1]")),
        (RequestFacts(tenant="acme", headers={"x-team": "other"}), ("a", "default")),
        (
            RequestFacts(tenant="zzz", headers={"x-team": "search", "x-tier": "golden"}),
            ("c", "rules[2]"),
        ),
        (RequestFacts(est_prompt_tokens=5000, prompt_text="a theorem"), ("d", "rules[3]")),
        (RequestFacts(prompt_text="Prove this THEOREM"), ("e", "rules[4]")),
        (RequestFacts(prompt_text="theorem " * 50), ("a", "default")),
        (RequestFacts(key_id="k1", json_mode=True), ("f", "rules[5]")),
        (RequestFacts(key_id="k1"), ("a", "default")),
        (RequestFacts(), ("a", "default")),
    ],
)
def test_rule_selection_first_match_wins(req: RequestFacts, expected: tuple[str, str]) -> None:
    assert select(RULES, req) == expected


# --------------------------------------------------------------------------- outputs


def test_to_dict_is_json_ready_and_header_summary_is_compact() -> None:
    d = run(policy())
    data = json.loads(json.dumps(d.to_dict()))
    assert data["backend"] == "mini" and data["reason"] == d.reason
    assert [c["name"] for c in data["candidates"]] == ["local", "mini", "big"]
    assert data["candidates"][1]["expected_cost_usd"] == "0.02000"
    assert data["policy_version"] == policy().version
    headers = d.header_summary()
    assert headers["x-tollgate-backend"] == "mini"
    assert headers["x-tollgate-expected-cost-usd"] == "0.020000"
    assert headers["x-tollgate-predicted-success"] == "0.850"
    assert headers["x-tollgate-policy"] == f"p@{policy().version}"
    assert all(v.isascii() for v in headers.values())
    table = render_table(d)
    assert "mini" in table and "reason" in table


def test_shadow_decisions_are_data_and_sampled_stably() -> None:
    ps = PolicySet.model_validate(
        {
            "policies": {
                "cheap": policy().model_dump(mode="json", by_alias=True),
                "value": policy(objective={"kind": "min_cost_per_success"}).model_dump(
                    mode="json", by_alias=True
                ),
            },
            "routing": {"default": "cheap"},
            "shadow": [{"policy": "value", "when_serving": ["cheap"]}],
        }
    )
    served = decide(ps.policies["cheap"], "cheap", REQ, BACKENDS, PRED, rule="default")
    (res,) = shadow_decisions(ps, served, REQ, BACKENDS, PRED, sample_key="req-1")
    assert res.shadow_policy == "value" and res.decision.backend == "local"
    assert res.served_backend == "mini" and not res.same_backend
    assert res.expected_cost_delta_usd == D("0.002") - D("0.02")
    assert json.dumps(res.to_dict())
    # A shadow never shadows itself, and sampling is a stable function of the key.
    assert shadows_for(ps, "value", "req-1") == ()
    half = ps.model_copy(update={"shadow": (ps.shadow[0].model_copy(update={"sample": 0.5}),)})
    picks = [bool(shadows_for(half, "cheap", f"r{i}")) for i in range(400)]
    assert 120 < sum(picks) < 280
    assert picks == [bool(shadows_for(half, "cheap", f"r{i}")) for i in range(400)]
