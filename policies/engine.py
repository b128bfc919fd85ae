"""The policy engine: given a policy, request facts, backend facts and a prediction, decide.

:func:`select` picks the policy (routing rules), :func:`decide` applies it and returns a
frozen :class:`~policies.decision.Decision`. Pure and deterministic: the same inputs give the
same decision (ties break on the operator's candidate order); no clock, no randomness, no I/O.

Order of work in :func:`decide`:
1. constraints remove candidates (``policies.constraints``);
2. no estimate for any eligible candidate (predictor timed out / errored / does not know
   them) → ``predictor_fallback`` chooses;
3. otherwise the objective ranks the adequate candidates; if none is adequate,
   ``on_no_adequate`` chooses.
The formulas are in ``docs/policies.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from policies.candidates import Cand as _Cand
from policies.candidates import cheapest as _cheapest
from policies.candidates import fmt_p as _p
from policies.candidates import in_order as _in_order
from policies.candidates import most_capable as _most_capable
from policies.candidates import usd as _usd
from policies.cascade import plan_for
from policies.constraints import expected_cost, removal
from policies.decision import CandidateRow, Decision, FallbackKind
from policies.facts import BackendFacts, PredictionFacts, RequestFacts
from policies.objective_specs import Cascade
from policies.objectives import dominated_by, escalation_cost, escalation_path, rank
from policies.rules import select
from policies.schema import Policy

__all__ = ["decide", "decide_sweep", "escalation_cost", "select"]


def _by_choice(choice: str, cs: Sequence[_Cand]) -> list[_Cand]:
    """Order ``cs`` as a keyword fallback (``on_no_adequate`` / ``predictor_fallback``)."""
    if choice == "most_capable":
        return _most_capable(cs)
    if choice == "cheapest":
        return _cheapest(cs)
    if choice == "first_candidate":
        return _in_order(cs)
    if choice == "error":
        return []
    return [c for c in cs if c.name == choice]


def _predictor_fallback_order(
    choices: Sequence[str], cands: Sequence[_Cand], eligible: Sequence[_Cand]
) -> tuple[list[_Cand], list[str]]:
    """Order the eligible candidates as ``predictor_fallback`` says, and say why each listed
    backend that was passed over could not serve.

    Listed backends that are eligible come first, in list order; a keyword (``cheapest``,
    ``first_candidate``) then orders every eligible candidate not placed yet, and ``error``
    stops. After a list of names only, the other eligible candidates follow in candidate order
    (what the dispatcher tries if the chosen backend fails to answer).
    """
    order: list[_Cand] = []
    misses: list[str] = []
    by_name = {c.name: c for c in cands}
    ended = False
    for choice in choices:
        if choice == "error":
            ended = True
            break
        if choice in ("cheapest", "first_candidate"):
            order += [c for c in _by_choice(choice, eligible) if c not in order]
            if not eligible:
                misses.append(f"{choice} (no eligible candidate)")
            ended = True
            break
        c = by_name.get(choice)
        if c is None:
            misses.append(f"{choice} (not a candidate)")
        elif c.removed is not None:
            misses.append(f"{choice} ({': '.join(c.removed)})")
        elif c not in order:
            order.append(c)
    if order and not ended:
        order += [c for c in _in_order(eligible) if c not in order]
    return order, misses


# --------------------------------------------------------------------------- decide


def _dominance_note(name: str, dominated: Mapping[str, str]) -> str:
    by = dominated.get(name)
    if by is None:
        return ""
    return f"dominated by {by}: no more expensive and predicted at least as likely to succeed"


def _removed_summary(cands: Sequence[_Cand]) -> str:
    gone = [f"{c.name} ({c.removed[0]})" for c in cands if c.removed is not None]
    return f"; removed: {', '.join(gone)}" if gone else ""


def decide(
    policy: Policy,
    policy_name: str,
    request: RequestFacts,
    backends: Mapping[str, BackendFacts],
    prediction: PredictionFacts | None,
    *,
    rule: str,
) -> Decision:
    """Apply ``policy`` to one request. Never raises for a routing outcome: a request that
    cannot be served gets a decision with ``backend=None`` and an ``error`` code."""
    return decide_sweep([policy], policy_name, request, backends, prediction, rule=rule)[0]


def decide_sweep(
    policies: Sequence[Policy],
    policy_name: str,
    request: RequestFacts,
    backends: Mapping[str, BackendFacts],
    prediction: PredictionFacts | None,
    *,
    rule: str,
) -> list[Decision]:
    """:func:`decide` for several variants of one policy that share candidates and
    constraints (an objective's knob swept, as the routing benchmark does): the candidates'
    costs, constraints and dominance are worked out once. The same decisions as calling
    :func:`decide` once per policy."""
    base = policies[0]
    for other in policies[1:]:
        if other.candidates != base.candidates or other.constraints != base.constraints:
            raise ValueError("decide_sweep needs policies with the same candidates/constraints")
    cands: list[_Cand] = []
    for idx, name in enumerate(base.candidates):
        backend = backends.get(name)
        p = ratio = None
        if backend is not None and prediction is not None:
            p = prediction.p_success.get(backend.profile)
            ratio = prediction.output_ratio.get(backend.profile)
        cost = expected_cost(backend, request, ratio) if backend is not None else None
        cands.append(_Cand(idx, name, cost, p, removal(base, request, name, backend, cost)))
    eligible = [c for c in cands if c.removed is None]
    dominated = dominated_by(eligible)
    memo: dict[tuple[int, bool | None, Decimal | None], CandidateRow] = {}
    return [
        _decide(
            pol,
            policy_name,
            prediction,
            rule,
            cands,
            eligible,
            dominated,
            memo,
            budget_low=_budget_low(pol, request),
        )
        for pol in policies
    ]


def _budget_low(policy: Policy, request: RequestFacts) -> float | None:
    """The remaining fraction of the caller's tightest budget when ``policy.budget_aware``
    applies to this request (below its threshold), else None."""
    knob, left = policy.budget_aware, request.budget_remaining_fraction
    if knob is None or left is None or isinstance(policy.objective, Cascade):
        return None
    return left if left < knob.below_fraction else None


def _decide(
    policy: Policy,
    policy_name: str,
    prediction: PredictionFacts | None,
    rule: str,
    cands: Sequence[_Cand],
    eligible: Sequence[_Cand],
    dominated: Mapping[str, str],
    memo: dict[tuple[int, bool | None, Decimal | None], CandidateRow],
    *,
    budget_low: float | None = None,
) -> Decision:
    removed_note = _removed_summary(cands)
    predictor_version = prediction.predictor_version if prediction is not None else None

    def row(c: _Cand, adequate: bool | None, score: Decimal | None) -> CandidateRow:
        key = (c.idx, adequate, score)
        found = memo.get(key)
        if found is None:
            found = memo[key] = CandidateRow(
                name=c.name,
                p_success=c.p,
                expected_cost_usd=c.cost,
                eligible=c.removed is None,
                adequate=adequate,
                score=score,
                removed_by=c.removed[0] if c.removed else None,
                detail=c.removed[1] if c.removed else _dominance_note(c.name, dominated),
            )
        return found

    def rows(
        adequate: set[str] | None, scores: Mapping[str, Decimal | None]
    ) -> tuple[CandidateRow, ...]:
        return tuple(
            row(
                c,
                (c.name in adequate) if (adequate is not None and c.removed is None) else None,
                scores.get(c.name),
            )
            for c in cands
        )

    def fail(
        error: str,
        reason: str,
        fallback: FallbackKind | None,
        adequate: set[str] | None = None,
        scores: Mapping[str, Decimal | None] | None = None,
    ) -> Decision:
        return Decision(
            backend=None,
            fallbacks=(),
            escalation=(),
            candidates=rows(adequate, scores or {}),
            reason=reason + removed_note,
            fallback=fallback,
            error=error,
            policy=policy_name,
            policy_version=policy.version,
            rule=rule,
            objective=policy.objective.kind,
            predictor_version=predictor_version,
        )

    def ok(
        order: Sequence[_Cand],
        reason: str,
        fallback: FallbackKind | None,
        *,
        by_capability: bool,
        adequate: set[str] | None = None,
        scores: Mapping[str, Decimal | None] | None = None,
        budget_low: float | None = None,
    ) -> Decision:
        chosen = order[0]
        path = escalation_path(
            policy, chosen, eligible, by_capability=by_capability, dominated=dominated
        )
        obj = policy.objective
        plan = plan_for(obj, chosen, eligible) if isinstance(obj, Cascade) and adequate else None
        return Decision(
            backend=chosen.name,
            fallbacks=tuple(c.name for c in order[1:]),
            escalation=tuple(c.name for c in path),
            candidates=rows(adequate, scores or {}),
            reason=reason + removed_note,
            fallback=fallback,
            error=None,
            policy=policy_name,
            policy_version=policy.version,
            rule=rule,
            objective=policy.objective.kind,
            predictor_version=predictor_version,
            cascade=plan,
            budget_low=budget_low,
        )

    if not eligible:
        return fail(
            "no_eligible_candidate",
            f"every one of the {len(cands)} candidate(s) was removed by a constraint",
            None,
        )

    if all(c.p is None for c in eligible):
        choices = policy.predictor_fallbacks
        label = choices[0] if len(choices) == 1 else f"[{', '.join(choices)}]"
        why = (
            "the predictor gave no estimate"
            if prediction is None
            else "the predictor has no estimate for any eligible candidate"
        )
        order, misses = _predictor_fallback_order(choices, cands, eligible)
        if not order:
            if choices == ("error",):
                return fail("predictor_unavailable", f"{why}; predictor_fallback is error", None)
            then = "; then error" if choices[-1] == "error" else ""
            return fail(
                "predictor_fallback_unavailable",
                f"{why}; predictor_fallback {label} has no eligible backend: "
                f"{', '.join(misses)}{then}",
                "predictor_unavailable",
            )
        skipped = f" (not eligible: {', '.join(misses)})" if misses else ""
        return ok(
            order,
            f"{why}; predictor_fallback={label} chose {order[0].name} "
            f"(expected {_usd(order[0].cost)}){skipped}",
            "predictor_unavailable",
            by_capability=False,
        )

    ranked = rank(policy, eligible, dominated)
    adequate_names = {c.name for c in ranked.adequate}
    choice = policy.objective.on_no_adequate
    rest = [c for c in eligible if c.name not in adequate_names]
    if budget_low is not None and policy.budget_aware is not None:
        low = f"budget low ({budget_low:.0%} left < {policy.budget_aware.below_fraction:.0%})"
        if policy.budget_aware.objective == "cheapest":
            order = _cheapest(eligible)
            return ok(
                order,
                f"{low}: cheapest eligible {order[0].name} (expected {_usd(order[0].cost)}, "
                f"P(success) {_p(order[0].p)})",
                None,
                by_capability=False,
                adequate=adequate_names,
                scores=ranked.scores,
                budget_low=budget_low,
            )
        if len(ranked.adequate) > 1:
            cheap = _cheapest(ranked.adequate)
            if cheap[0] is not ranked.adequate[0]:
                return ok(
                    cheap + _by_choice(choice, rest),
                    f"{low}: cheapest adequate {cheap[0].name} (expected {_usd(cheap[0].cost)}, "
                    f"P(success) {_p(cheap[0].p)}) instead of {ranked.adequate[0].name}",
                    None,
                    by_capability=True,
                    adequate=adequate_names,
                    scores=ranked.scores,
                    budget_low=budget_low,
                )
    tail = _by_choice(choice, rest)
    if choice in ("most_capable", "cheapest"):  # dominated candidates are the last resort
        tail.sort(key=lambda c: c.name in dominated)
    if ranked.adequate:
        return ok(
            ranked.adequate + tail,
            ranked.describe(ranked.adequate[0]),
            None,
            by_capability=True,
            adequate=adequate_names,
            scores=ranked.scores,
        )
    if not tail:
        if choice == "error":
            return fail(
                "no_adequate_candidate",
                f"{ranked.inadequate}; on_no_adequate is error",
                "no_adequate",
                adequate_names,
                ranked.scores,
            )
        return fail(
            "no_adequate_candidate",
            f"{ranked.inadequate}; on_no_adequate {choice!r} is not eligible",
            "no_adequate",
            adequate_names,
            ranked.scores,
        )
    return ok(
        tail,
        f"{ranked.inadequate}; on_no_adequate={choice} chose {tail[0].name} "
        f"(P(success) {_p(tail[0].p)}, expected {_usd(tail[0].cost)})",
        "no_adequate",
        by_capability=True,
        adequate=adequate_names,
        scores=ranked.scores,
    )
