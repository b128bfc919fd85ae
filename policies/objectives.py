"""How an objective ranks the eligible candidates.

This module owns, for the engine (``policies.engine.decide``), over the candidates of
``policies.candidates``:

* **dominance**: a priced candidate with an estimate is *dominated* when another eligible one
  is no more expensive and predicted at least as likely to succeed, one of the two strictly.
  A dominated candidate is never adequate, never an escalation tier, and comes last among the
  fallbacks: paying more for a lower predicted success is never a choice;
* the escalation path of a chosen candidate and the expected cost / success of a cascade of
  tiers (:func:`escalation_cost`);
* :func:`rank`: per objective, the adequate candidates in the objective's order and the
  scores shown in the decision (formulas in ``docs/policies.md``); the cascade objective's
  first call is ``policies.cascade``'s.

Pure and deterministic like the engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, localcontext

from policies.candidates import (
    SCORE_QUANTUM,
    Cand,
    Ranked,
    cheapest,
    cost_key,
    fmt_p,
    in_order,
    most_capable,
    p_key,
    usd,
)
from policies.cascade import rank_cascade
from policies.objective_specs import (
    Cascade,
    CheapestAdequate,
    MaxQualityWithin,
    MinCostPerSuccess,
)
from policies.schema import Policy

_ONE = Decimal(1)


def dominated_by(eligible: Sequence[Cand]) -> dict[str, str]:
    """``{dominated candidate: a candidate that dominates it}`` among ``eligible``.

    Only priced candidates with an estimate take part. ``e`` dominates ``d`` when
    ``cost_e <= cost_d`` and ``p_e >= p_d``, one strictly; of several dominators the cheapest
    (then the most capable, then the first listed) is named.
    """
    known = cheapest(c for c in eligible if c.cost is not None and c.p is not None)
    out: dict[str, str] = {}
    best = -1.0  # highest P among the candidates before the current group of equals
    seen = -1.0  # highest P so far
    prev: tuple[Decimal | None, float | None] | None = None
    for i, d in enumerate(known):
        assert d.p is not None
        if (d.cost, d.p) != prev:  # candidates with equal cost and P never dominate each other
            best, prev = seen, (d.cost, d.p)
        seen = max(seen, d.p)
        if best >= d.p:  # cheapest order: the first earlier one with P >= p is the cheapest
            out[d.name] = next(
                e.name
                for e in known[:i]
                if e.p is not None and e.p >= d.p and (e.cost, e.p) != (d.cost, d.p)
            )
    return out


# --------------------------------------------------------------------------- escalation


def escalation_path(
    policy: Policy,
    start: Cand,
    eligible: Sequence[Cand],
    *,
    by_capability: bool,
    dominated: Iterable[str] = (),
) -> list[Cand]:
    """The tiers tried, in order, when a validator rejects ``start``'s answer."""
    esc = policy.escalation
    if esc is None or esc.max_escalations == 0:
        return []
    if esc.order == "capability" and by_capability and start.p is not None:
        p0 = start.p
        skip = set(dominated)
        above = [c for c in eligible if c.p is not None and c.p > p0 and c.name not in skip]
        path = sorted(above, key=lambda c: (c.p, cost_key(c), c.idx))
    else:
        path = [c for c in in_order(eligible) if c.idx > start.idx]
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


def _task(
    policy: Policy, c: Cand, eligible: Sequence[Cand], dominated: Iterable[str]
) -> tuple[Decimal, Decimal] | None:
    """Expected cost and P(success) of the task started on ``c``, escalation included."""
    if c.cost is None or c.p is None:
        return None
    path = escalation_path(policy, c, eligible, by_capability=True, dominated=dominated)
    tiers = [(c.cost, c.p)]
    for t in path:
        # A tier without a price or an estimate cannot be costed: the model stops before it
        # (the score is then the one of the cascade up to that tier).
        if t.cost is None or t.p is None:
            break
        tiers.append((t.cost, t.p))
    retries = policy.escalation.retries_per_tier if policy.escalation is not None else 0
    return escalation_cost(tiers, retries)


# --------------------------------------------------------------------------- objectives


def _scored(
    ok: Sequence[Cand], scores: dict[str, Decimal | None]
) -> list[Cand]:  # lowest score first; unscored (unpriced: rank_last) after every scored one
    def key(c: Cand) -> tuple[int, Decimal, tuple[bool, float], int]:
        score = scores[c.name]
        return (0, score, p_key(c), c.idx) if score is not None else (1, _ONE, p_key(c), c.idx)

    return sorted(ok, key=key)


def _cheapest_adequate(obj: CheapestAdequate, eligible: Sequence[Cand], skip: set[str]) -> Ranked:
    bar = obj.min_success
    known = [c.p for c in eligible if c.p is not None]
    best = max(known) if known else None
    floor = bar
    if obj.max_shortfall is not None and best is not None:
        floor = max(bar, best - obj.max_shortfall)
    ok = [c for c in eligible if c.p is not None and c.p >= floor and c.name not in skip]
    n = len(ok)
    rule = f">= {bar:.3f}"
    if obj.max_shortfall is not None:
        rule += f" and within {obj.max_shortfall:.3f} of the best ({fmt_p(best)})"
    return Ranked(
        adequate=cheapest(ok),
        scores={},
        describe=lambda c: (
            f"{c.name} is the cheapest of {n} adequate candidate(s) "
            f"(P(success) {fmt_p(c.p)} {rule}, expected {usd(c.cost)})"
        ),
        inadequate=f"no eligible candidate reaches P(success) {rule}",
    )


def _min_cost_per_success(
    policy: Policy, obj: MinCostPerSuccess, eligible: Sequence[Cand], skip: set[str]
) -> Ranked:
    floor = obj.min_success
    value = obj.success_value_usd
    scores: dict[str, Decimal | None] = {}
    for c in eligible:
        task = _task(policy, c, eligible, skip) if c.p is not None and c.p > 0.0 else None
        if task is None:
            scores[c.name] = None
            continue
        spend, success = task
        with localcontext() as ctx:
            ctx.prec = 28
            score = spend - value * success if value is not None else spend / success
            scores[c.name] = score.quantize(SCORE_QUANTUM)
    ok = [
        c for c in eligible if c.p is not None and c.p > 0.0 and c.p >= floor and c.name not in skip
    ]
    if value is None:
        what = "the lowest expected cost per success"
    else:
        what = f"the lowest expected cost net of {usd(value)} per expected success"
    return Ranked(
        adequate=_scored(ok, scores),
        scores=scores,
        describe=lambda c: (
            f"{c.name} has {what} ({usd(scores[c.name])}; P(success) {fmt_p(c.p)}, "
            f"expected {usd(c.cost)})"
        ),
        inadequate=f"no eligible candidate has an estimate with P(success) > 0 and >= {floor:.3f}",
    )


def _max_quality_within(obj: MaxQualityWithin, eligible: Sequence[Cand], skip: set[str]) -> Ranked:
    cap = obj.cost_cap_usd
    ok = [
        c
        for c in eligible
        if c.p is not None and c.cost is not None and c.cost <= cap and c.name not in skip
    ]
    return Ranked(
        adequate=most_capable(ok),
        scores={},
        describe=lambda c: (
            f"{c.name} is the most likely to succeed (P(success) {fmt_p(c.p)}) with expected "
            f"{usd(c.cost)} within the {usd(cap)} cap"
        ),
        inadequate=f"no eligible priced candidate with an estimate fits the {usd(cap)} cap",
    )


def rank(policy: Policy, eligible: Sequence[Cand], dominated: Mapping[str, str]) -> Ranked:
    """The objective's adequate candidates, best first (dominated ones are never adequate)."""
    obj = policy.objective
    skip = set(dominated)
    if isinstance(obj, CheapestAdequate):
        return _cheapest_adequate(obj, eligible, skip)
    if isinstance(obj, MinCostPerSuccess):
        return _min_cost_per_success(policy, obj, eligible, skip)
    if isinstance(obj, Cascade):
        return rank_cascade(obj, eligible, skip)
    assert isinstance(obj, MaxQualityWithin)
    return _max_quality_within(obj, eligible, skip)
