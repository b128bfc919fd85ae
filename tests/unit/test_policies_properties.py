"""Property tests (hypothesis) for the policy engine's invariants.

1. It never picks (or lists as fallback / escalation tier) a candidate a constraint removed,
   checked against an independent restatement of the constraints.
2. ``cheapest_adequate``: when the objective chooses, no eligible adequate candidate is cheaper.
3. Raising ``min_success`` never lowers the chosen backend's predicted P(success) — exactly
   true for ``on_no_adequate: most_capable``; for ``error`` it holds whenever the higher bar
   still chooses a backend. (For ``cheapest`` / a named backend it is false; see the example.)
4. The decision is deterministic: same inputs (mappings in any order) → equal decisions.
5. Dominance: the objective never chooses, and capability escalation never climbs to, a
   candidate that another eligible one beats on both expected cost and predicted P(success).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from policies.decision import Decision
from policies.engine import decide
from policies.facts import BackendFacts, PredictionFacts, RequestFacts
from policies.schema import Policy

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = ["b0", "b1", "b2", "b3", "b4", "b5"]
CAPS = ["tools", "json_mode", "vision"]
TAGS = ["local_only", "eu", "beta"]
TENANTS = ["acme", "globex", None]

some_price = st.integers(min_value=0, max_value=50).map(lambda n: Decimal(n) / Decimal(1_000_000))
# A small probability grid makes ties (and therefore tie-breaking) common.
probs = st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0])
# sampled_from draws near-uniformly (hypothesis over-draws small integers and False).
rarely = st.sampled_from([False] * 9 + [True])
often = st.sampled_from([True] * 9 + [False])


@st.composite
def backend_facts(draw: st.DrawFn, name: str) -> BackendFacts:
    priced = draw(often)
    return BackendFacts(
        name=name,
        input_cost_per_token=draw(some_price) if priced else None,
        output_cost_per_token=draw(some_price) if priced else None,
        context_window=draw(st.sampled_from([None, 4000, 32000, 128000])),
        capabilities=frozenset(c for c in CAPS if draw(often)),
        tags=frozenset(t for t in TAGS if draw(rarely)),
        healthy=draw(often),
        circuit_open=draw(rarely),
        p95_latency_ms=draw(st.sampled_from([None, 200.0, 1000.0, 5000.0])),
        typical_output_tokens=draw(st.sampled_from([100, 256, 1000])),
        allowed_tenants=frozenset({"acme"}) if draw(rarely) else None,
        denied_tenants=frozenset({"globex"}) if draw(rarely) else frozenset(),
    )


@st.composite
def backends_map(draw: st.DrawFn) -> dict[str, BackendFacts]:
    # Sometimes a configured candidate is missing from the gateway (unknown_backend).
    return {name: draw(backend_facts(name)) for name in NAMES if draw(often)}


@st.composite
def requests(draw: st.DrawFn) -> RequestFacts:
    return RequestFacts(
        tenant=draw(st.sampled_from(TENANTS)),
        key_id=None,
        prompt_text="x",
        est_prompt_tokens=draw(st.sampled_from([10, 500, 1500, 6000])),
        max_tokens=draw(st.sampled_from([None, 50, 500, 2000])),
        required_capabilities=frozenset({"vision"}) if draw(rarely) else frozenset(),
        has_tools=draw(rarely),
        json_mode=draw(rarely),
        required_tags=frozenset({"local_only"}) if draw(rarely) else frozenset(),
        budget_remaining_usd=Decimal("0.05") if draw(rarely) else None,
    )


@st.composite
def present_predictions(draw: st.DrawFn) -> PredictionFacts:
    # Usually an estimate per backend; sometimes the predictor does not know one.
    return PredictionFacts({k: draw(probs) for k in NAMES if draw(often)}, "pred-test")


def predictions() -> st.SearchStrategy[PredictionFacts | None]:
    return st.one_of(st.none(), present_predictions(), present_predictions(), present_predictions())


@st.composite
def policy_data(draw: st.DrawFn, objective: dict[str, Any] | None = None) -> dict[str, Any]:
    size = draw(st.sampled_from([1, 2, 3, 3, 4, 4, 5, 6]))
    cands = draw(st.permutations(NAMES))[:size]
    keyword = st.sampled_from(["most_capable", "cheapest", "error"])
    on_no = draw(st.one_of(keyword, st.sampled_from(cands)))
    kinds: list[dict[str, Any]] = [
        {"kind": "cheapest_adequate", "min_success": draw(probs)},
        {"kind": "cheapest_adequate", "max_shortfall": draw(probs)},
        {"kind": "min_cost_per_success", "min_success": draw(probs)},
        {
            "kind": "min_cost_per_success",
            "success_value_usd": draw(st.sampled_from(["0", "0.001", "0.1", "10"])),
        },
        {
            "kind": "max_quality_within",
            "cost_cap_usd": draw(st.sampled_from(["0.001", "0.02", "1"])),
        },
    ]
    chosen = dict(objective) if objective is not None else draw(st.sampled_from(kinds))
    objective = {"on_no_adequate": on_no, **chosen}
    constraints: dict[str, Any] = {}

    def sometimes() -> bool:
        return draw(rarely)

    if sometimes():
        constraints["max_cost_usd"] = draw(st.sampled_from(["0.005", "0.05"]))
    if sometimes():
        constraints["latency_slo_ms"] = draw(st.sampled_from([500, 2000]))
    if sometimes():
        constraints["require_capabilities"] = draw(st.lists(st.sampled_from(CAPS), max_size=1))
    if sometimes():
        constraints["forbid_tags"] = ["beta"]
    if sometimes():
        constraints["unpriced"] = "exclude"
    if sometimes():
        constraints["tenants"] = {"acme": {"deny": cands[:1]}, "globex": {"allow": cands[-1:]}}
    data: dict[str, Any] = {
        "candidates": cands,
        "objective": objective,
        "constraints": constraints,
        "predictor_fallback": draw(
            st.one_of(
                st.sampled_from(["cheapest", "first_candidate", "error"]), st.sampled_from(cands)
            )
        ),
    }
    if draw(st.booleans()):
        data["escalation"] = {
            "validators": [{"kind": "non_empty"}],
            "max_escalations": draw(st.integers(0, 3)),
            "retries_per_tier": draw(st.integers(0, 2)),
            "order": draw(st.sampled_from(["capability", "candidates"])),
        }
    return data


def run(
    pol: Policy,
    req: RequestFacts,
    backends: dict[str, BackendFacts],
    pred: PredictionFacts | None,
) -> Decision:
    return decide(pol, "prop", req, backends, pred, rule="prop")


def cost_of(b: BackendFacts, req: RequestFacts) -> Decimal | None:
    if b.input_cost_per_token is None or b.output_cost_per_token is None:
        return None
    out = req.max_tokens if req.max_tokens is not None else b.typical_output_tokens
    return req.est_prompt_tokens * b.input_cost_per_token + out * b.output_cost_per_token


def allowed(pol: Policy, req: RequestFacts, name: str, backends: dict[str, BackendFacts]) -> bool:
    """Independent restatement of the constraints in docs/policies.md."""
    b = backends.get(name)
    if b is None or not b.healthy or b.circuit_open:
        return False
    c = pol.constraints
    needed_caps = set(c.require_capabilities) | set(req.required_capabilities)
    needed_caps |= {"tools"} if req.has_tools else set()
    needed_caps |= {"json_mode"} if req.json_mode else set()
    if not needed_caps <= b.capabilities:
        return False
    if not (set(c.require_tags) | set(req.required_tags)) <= b.tags or c.forbid_tags & b.tags:
        return False
    if (
        b.context_window is not None
        and req.est_prompt_tokens + (req.max_tokens or 0) > b.context_window
    ):
        return False
    if c.latency_slo_ms is not None and (b.p95_latency_ms or 0) > c.latency_slo_ms:
        return False
    if b.allowed_tenants is not None and req.tenant not in b.allowed_tenants:
        return False
    if req.tenant in b.denied_tenants:
        return False
    access = c.tenants.get(req.tenant) if req.tenant else None
    if access is not None and (
        (access.allow is not None and name not in access.allow) or name in access.deny
    ):
        return False
    cost = cost_of(b, req)
    if cost is None and (
        c.unpriced == "exclude"
        or c.max_cost_usd is not None
        or req.budget_remaining_usd is not None
    ):
        return False
    if cost is not None and c.max_cost_usd is not None and cost > c.max_cost_usd:
        return False
    return not (
        cost is not None
        and req.budget_remaining_usd is not None
        and cost > req.budget_remaining_usd
    )


# --------------------------------------------------------------------------- invariant 1


@SETTINGS
@given(data=policy_data(), req=requests(), backends=backends_map(), pred=predictions())
def test_never_picks_a_removed_candidate(
    data: dict[str, Any],
    req: RequestFacts,
    backends: dict[str, BackendFacts],
    pred: PredictionFacts | None,
) -> None:
    pol = Policy.model_validate(data)
    d = run(pol, req, backends, pred)
    event(f"outcome: {d.error or d.fallback or 'objective'}")
    event(f"eligible: {sum(r.eligible for r in d.candidates)}")
    for row in d.candidates:
        event(f"removed_by: {row.removed_by}")
    for row in d.candidates:
        assert row.eligible == allowed(pol, req, row.name, backends), row
        assert (row.removed_by is None) == row.eligible
    used = [d.backend] if d.backend is not None else []
    used += [*d.fallbacks, *d.escalation]
    for name in used:
        assert d.row(name).eligible
    assert len(set(d.fallbacks)) == len(d.fallbacks) and d.backend not in d.fallbacks
    assert d.backend not in d.escalation
    assert (d.backend is None) == (d.error is not None)
    if d.backend is None:
        assert d.fallbacks == () and d.escalation == ()
    if d.escalation:
        assert pol.escalation is not None and len(d.escalation) <= pol.escalation.max_escalations


# --------------------------------------------------------------------------- invariant 2


@SETTINGS
@given(
    data=policy_data(objective={"kind": "cheapest_adequate", "min_success": 0.0}),
    bar=probs,
    req=requests(),
    backends=backends_map(),
    pred=predictions(),
)
def test_cheapest_adequate_has_no_cheaper_adequate_candidate(
    data: dict[str, Any],
    bar: float,
    req: RequestFacts,
    backends: dict[str, BackendFacts],
    pred: PredictionFacts | None,
) -> None:
    data["objective"]["min_success"] = bar
    d = run(Policy.model_validate(data), req, backends, pred)
    adequate = [
        r for r in d.candidates if r.eligible and r.p_success is not None and r.p_success >= bar
    ]
    if d.fallback is None and d.backend is not None:
        chosen = d.row(d.backend)
        event(f"objective chose among {min(len(adequate), 3)}+ adequate")
        assert chosen.p_success is not None and chosen.p_success >= bar
        for r in adequate:
            if chosen.expected_cost_usd is None:  # unpriced: only when no priced is adequate
                assert r.expected_cost_usd is None
            elif r.expected_cost_usd is not None:
                assert chosen.expected_cost_usd <= r.expected_cost_usd
        # Adequate fallbacks follow in non-decreasing cost order (dominated ones come last).
        undominated = [r for r in adequate if not r.detail.startswith("dominated by")]
        costs = [d.row(n).expected_cost_usd for n in d.fallbacks if d.row(n) in undominated]
        priced = [c for c in costs if c is not None]
        assert priced == sorted(priced)
    if d.fallback == "no_adequate":
        assert adequate == []
    if d.fallback is None and pred is not None and adequate:
        assert d.backend is not None


# --------------------------------------------------------------------------- invariant 3


@SETTINGS
@given(
    data=policy_data(objective={"kind": "cheapest_adequate", "min_success": 0.0}),
    on_no=st.sampled_from(["most_capable", "error"]),
    bars=st.tuples(probs, probs).map(sorted),
    req=requests(),
    backends=backends_map(),
    pred=present_predictions(),
)
def test_raising_min_success_never_lowers_predicted_success(
    data: dict[str, Any],
    on_no: str,
    bars: list[float],
    req: RequestFacts,
    backends: dict[str, BackendFacts],
    pred: PredictionFacts,
) -> None:
    low_bar, high_bar = bars
    data["objective"]["on_no_adequate"] = on_no

    def chosen_p(bar: float) -> tuple[Decision, float | None]:
        data["objective"]["min_success"] = bar
        d = run(Policy.model_validate(data), req, backends, pred)
        return d, (d.p_success if d.backend is not None else None)

    low, p_low = chosen_p(low_bar)
    high, p_high = chosen_p(high_bar)
    if low.fallback == "predictor_unavailable":  # no estimates: min_success plays no part
        assert high.backend == low.backend
        return
    if on_no == "most_capable":
        assert (low.backend is None) == (high.backend is None)
    event(f"backend changed: {low.backend != high.backend}")
    if p_low is not None and high.backend is not None:
        assert p_high is not None and p_high >= p_low


def test_raising_min_success_can_lower_quality_with_a_named_fallback() -> None:
    """Why invariant 3 is stated for most_capable / error only."""
    backends = {
        n: BackendFacts(n, Decimal(c), Decimal(c))
        for n, c in (("weak", "0.001"), ("strong", "0.01"))
    }
    pred = PredictionFacts({"weak": 0.5, "strong": 0.9}, "p")
    req = RequestFacts(est_prompt_tokens=10)

    def pol(bar: float) -> Policy:
        return Policy.model_validate(
            {
                "candidates": ["weak", "strong"],
                "objective": {
                    "kind": "cheapest_adequate",
                    "min_success": bar,
                    "on_no_adequate": "weak",
                },
                "predictor_fallback": "error",
            }
        )

    assert run(pol(0.8), req, backends, pred).backend == "strong"
    assert run(pol(0.95), req, backends, pred).backend == "weak"


# --------------------------------------------------------------------------- invariant 4


@SETTINGS
@given(
    data=policy_data(),
    req=requests(),
    backends=backends_map(),
    pred=predictions(),
    rnd=st.randoms(),
)
def test_decision_is_deterministic(
    data: dict[str, Any],
    req: RequestFacts,
    backends: dict[str, BackendFacts],
    pred: PredictionFacts | None,
    rnd: Any,
) -> None:
    first = run(Policy.model_validate(data), req, backends, pred)
    items = list(backends.items())
    rnd.shuffle(items)
    shuffled_pred = None
    if pred is not None:
        p_items = list(pred.p_success.items())
        rnd.shuffle(p_items)
        shuffled_pred = PredictionFacts(dict(p_items), pred.predictor_version)
    second = run(Policy.model_validate(data), req, dict(items), shuffled_pred)
    assert first == second
    assert first.to_dict() == second.to_dict()
    assert first.header_summary() == second.header_summary()


# --------------------------------------------------------------------------- other objectives


@SETTINGS
@given(data=policy_data(), req=requests(), backends=backends_map(), pred=predictions())
def test_objective_choices_are_optimal(
    data: dict[str, Any],
    req: RequestFacts,
    backends: dict[str, BackendFacts],
    pred: PredictionFacts | None,
) -> None:
    pol = Policy.model_validate(data)
    d = run(pol, req, backends, pred)
    if d.backend is None or d.fallback is not None:
        return
    chosen = d.row(d.backend)
    adequate = [r for r in d.candidates if r.adequate]
    assert chosen.adequate
    if pol.objective.kind == "max_quality_within":
        cap = Decimal(str(data["objective"]["cost_cap_usd"]))
        assert chosen.expected_cost_usd is not None and chosen.expected_cost_usd <= cap
        assert all((r.p_success or 0) <= (chosen.p_success or 0) for r in adequate)
    if pol.objective.kind == "min_cost_per_success":
        scored = [r.score for r in adequate if r.score is not None]
        if chosen.score is None:
            assert scored == []
        else:
            assert all(chosen.score <= s for s in scored)


# --------------------------------------------------------------------------- invariant 5


def _dominates(e: Any, d: Any) -> bool:
    if None in (e.expected_cost_usd, e.p_success, d.expected_cost_usd, d.p_success):
        return False
    no_worse = e.expected_cost_usd <= d.expected_cost_usd and e.p_success >= d.p_success
    better = e.expected_cost_usd < d.expected_cost_usd or e.p_success > d.p_success
    return bool(no_worse and better)


@SETTINGS
@given(data=policy_data(), req=requests(), backends=backends_map(), pred=present_predictions())
def test_never_chooses_a_dominated_candidate(
    data: dict[str, Any],
    req: RequestFacts,
    backends: dict[str, BackendFacts],
    pred: PredictionFacts,
) -> None:
    pol = Policy.model_validate(data)
    d = run(pol, req, backends, pred)
    eligible = [r for r in d.candidates if r.eligible]
    if d.backend is not None and d.fallback is None:
        chosen = d.row(d.backend)
        assert not any(_dominates(e, chosen) for e in eligible), d.reason
    if pol.escalation is not None and pol.escalation.order == "capability":
        for name in d.escalation:
            assert not any(_dominates(e, d.row(name)) for e in eligible)
    for row in eligible:
        assert row.detail.startswith("dominated by") == any(_dominates(e, row) for e in eligible)
