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

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext

from policies.constraints import expected_cost, removal
from policies.decision import CandidateRow, Decision, FallbackKind
from policies.facts import BackendFacts, PredictionFacts, RequestFacts
from policies.rules import select
from policies.schema import (
    CheapestAdequate,
    MaxQualityWithin,
    MinCostPerSuccess,
    Policy,
)

__all__ = ["decide", "escalation_cost", "select"]

_SCORE_QUANTUM = Decimal("1e-12")
_ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class _Cand:
    idx: int
    name: str
    cost: Decimal | None
    p: float | None
    removed: tuple[str, str] | None


def _cost_key(c: _Cand) -> tuple[int, Decimal]:
    # Unpriced candidates rank after every priced one: unknown is never free.
    return (0, c.cost) if c.cost is not None else (1, Decimal(0))


def _p_key(c: _Cand) -> tuple[bool, float]:
    return (c.p is None, -(c.p or 0.0))


def _most_capable(cs: Iterable[_Cand]) -> list[_Cand]:
    return sorted(cs, key=lambda c: (_p_key(c), _cost_key(c), c.idx))


def _cheapest(cs: Iterable[_Cand]) -> list[_Cand]:
    return sorted(cs, key=lambda c: (_cost_key(c), _p_key(c), c.idx))


def _in_order(cs: Iterable[_Cand]) -> list[_Cand]:
    return sorted(cs, key=lambda c: c.idx)


def _usd(value: Decimal | None) -> str:
    return "unpriced" if value is None else f"${value:.6f}"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


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
        if c is None or c.removed is not None:
            misses.append(f"{choice} ({': '.join(c.removed) if c else 'not a candidate'})")
        elif c not in order:
            order.append(c)
    if order and not ended:
        order += [c for c in _in_order(eligible) if c not in order]
    return order, misses


# --------------------------------------------------------------------------- escalation


def _escalation_path(
    policy: Policy, start: _Cand, eligible: Sequence[_Cand], *, by_capability: bool
) -> list[_Cand]:
    esc = policy.escalation
    if esc is None or esc.max_escalations == 0:
        return []
    if esc.order == "capability" and by_capability and start.p is not None:
        p0 = start.p
        above = [c for c in eligible if c.p is not None and c.p > p0]
        path = sorted(above, key=lambda c: (c.p, _cost_key(c), c.idx))
    else:
        path = [c for c in _in_order(eligible) if c.idx > start.idx]
    return path[: esc.max_escalations]


def escalation_cost(
    tiers: Sequence[tuple[Decimal, float]], retries_per_tier: int
) -> tuple[Decimal, Decimal]:
    """Expected cost and P(success) of a cascade of ``(cost, p_success)`` tiers.

    Each tier is attempted ``1 + retries_per_tier`` times at most (attempts assumed
    independent); the next tier is reached only if every attempt on this one failed:

        A_t = cost_t * sum_{k=0..r} (1 - p_t)^k      expected spend on tier t
        F_t = (1 - p_t)^(r+1)                         P(tier t fails every attempt)
        E   = sum_t (prod_{s<t} F_s) * A_t            expected task cost
        S   = 1 - prod_t F_t                          P(task succeeds)
    """
    with localcontext() as ctx:
        ctx.prec = 28
        spend = Decimal(0)
        reach = _ONE  # probability the cascade gets to this tier
        for cost, p in tiers:
            q = _ONE - Decimal(repr(p))
            attempts = Decimal(0)  # 1 + q + ... + q^r (Decimal 0**0 is an error, so no pow)
            fail_all = _ONE
            for _ in range(retries_per_tier + 1):
                attempts += fail_all
                fail_all *= q
            spend += reach * cost * attempts
            reach *= fail_all
        return +spend, +(_ONE - reach)


def _cost_per_success(policy: Policy, c: _Cand, eligible: Sequence[_Cand]) -> Decimal | None:
    if c.cost is None or c.p is None or c.p <= 0.0:
        return None
    path = _escalation_path(policy, c, eligible, by_capability=True)
    tiers = [(c.cost, c.p)]
    for t in path:
        # A tier without a price or an estimate cannot be costed: the model stops before it
        # (the score is then the cost per success of the cascade up to that tier).
        if t.cost is None or t.p is None:
            break
        tiers.append((t.cost, t.p))
    retries = policy.escalation.retries_per_tier if policy.escalation is not None else 0
    spend, success = escalation_cost(tiers, retries)
    with localcontext() as ctx:
        ctx.prec = 28
        return (spend / success).quantize(_SCORE_QUANTUM)


# --------------------------------------------------------------------------- objectives


@dataclass(frozen=True, slots=True)
class _Ranked:
    adequate: list[_Cand]  # in objective order, best first
    scores: dict[str, Decimal | None]
    describe: Callable[[_Cand], str]  # why the chosen adequate candidate won
    inadequate: str  # what "no adequate candidate" means for this objective


def _rank(policy: Policy, eligible: Sequence[_Cand]) -> _Ranked:
    obj = policy.objective
    if isinstance(obj, CheapestAdequate):
        bar = obj.min_success
        ok = [c for c in eligible if c.p is not None and c.p >= bar]
        n = len(ok)
        return _Ranked(
            adequate=_cheapest(ok),
            scores={},
            describe=lambda c: (
                f"{c.name} is the cheapest of {n} adequate candidate(s) "
                f"(P(success) {_p(c.p)} >= {bar:.3f}, expected {_usd(c.cost)})"
            ),
            inadequate=f"no eligible candidate reaches P(success) >= {bar:.3f}",
        )
    if isinstance(obj, MinCostPerSuccess):
        floor = obj.min_success
        scores = {c.name: _cost_per_success(policy, c, eligible) for c in eligible}
        ok = [c for c in eligible if c.p is not None and c.p > 0.0 and c.p >= floor]

        def key(c: _Cand) -> tuple[int, Decimal, tuple[bool, float], int]:
            score = scores[c.name]
            # Unpriced adequate candidates (unpriced: rank_last) come after every scored one.
            return (
                (0, score, _p_key(c), c.idx) if score is not None else (1, _ONE, _p_key(c), c.idx)
            )

        return _Ranked(
            adequate=sorted(ok, key=key),
            scores=scores,
            describe=lambda c: (
                f"{c.name} has the lowest expected cost per success "
                f"({_usd(scores[c.name])}; P(success) {_p(c.p)}, expected {_usd(c.cost)})"
            ),
            inadequate=(
                f"no eligible candidate has an estimate with P(success) > 0 and >= {floor:.3f}"
            ),
        )
    assert isinstance(obj, MaxQualityWithin)
    cap = obj.cost_cap_usd
    ok = [c for c in eligible if c.p is not None and c.cost is not None and c.cost <= cap]
    return _Ranked(
        adequate=_most_capable(ok),
        scores={},
        describe=lambda c: (
            f"{c.name} is the most likely to succeed (P(success) {_p(c.p)}) with expected "
            f"{_usd(c.cost)} within the {_usd(cap)} cap"
        ),
        inadequate=f"no eligible priced candidate with an estimate fits the {_usd(cap)} cap",
    )


# --------------------------------------------------------------------------- decide


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
    cands: list[_Cand] = []
    for idx, name in enumerate(policy.candidates):
        backend = backends.get(name)
        cost = expected_cost(backend, request) if backend is not None else None
        p = None
        if backend is not None and prediction is not None:
            p = prediction.p_success.get(backend.profile)
        cands.append(_Cand(idx, name, cost, p, removal(policy, request, name, backend, cost)))
    eligible = [c for c in cands if c.removed is None]
    removed_note = _removed_summary(cands)

    predictor_version = prediction.predictor_version if prediction is not None else None

    def rows(
        adequate: set[str] | None, scores: Mapping[str, Decimal | None]
    ) -> tuple[CandidateRow, ...]:
        out = []
        for c in cands:
            elig = c.removed is None
            out.append(
                CandidateRow(
                    name=c.name,
                    p_success=c.p,
                    expected_cost_usd=c.cost,
                    eligible=elig,
                    adequate=(c.name in adequate) if (adequate is not None and elig) else None,
                    score=scores.get(c.name),
                    removed_by=c.removed[0] if c.removed else None,
                    detail=c.removed[1] if c.removed else "",
                )
            )
        return tuple(out)

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
    ) -> Decision:
        chosen = order[0]
        path = _escalation_path(policy, chosen, eligible, by_capability=by_capability)
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
            tail = "; then error" if choices[-1] == "error" else ""
            return fail(
                "predictor_fallback_unavailable",
                f"{why}; predictor_fallback {label} has no eligible backend: "
                f"{', '.join(misses)}{tail}",
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

    ranked = _rank(policy, eligible)
    adequate_names = {c.name for c in ranked.adequate}
    choice = policy.objective.on_no_adequate
    rest = [c for c in eligible if c.name not in adequate_names]
    tail = _by_choice(choice, rest)
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
