"""The cascade objective: answer cheaply first, then accept, check or escalate on a verdict.

This module owns the cascade's decisions, all pure:

* :func:`rank_cascade` (called by the engine's ``decide``): which backend is called first.
  The policy's ``first`` (cheap) backend or, without one, the candidate ``min_cost_per_success``
  would choose with the policy's ``success_value_usd`` (the lowest net expected cost; the
  escalation tier itself answers alone when it is that one); the escalation tier right away
  when the predictor says the first is unlikely to succeed (``straight_up_below``);
* :class:`CascadePlan`, carried by the ``Decision`` when the first call is the cheap one;
* :func:`cascade_step`, which the gateway calls after each answer with the verdict: the
  probability that keeping the *first* backend's answer loses nothing against escalating
  (it is right, or the escalation tier would be wrong too), from the predictor's learned
  verdict over the query and the answers (``predictors.verdict.VerdictModel.p_keep``):

  after the first answer (``checked=False``):
    verdict >= max(``skip_check_above``, ``accept_confidence``) -> accept (no check needed)
    verdict <  ``escalate_below``        -> escalate (a check could not save it)
    otherwise, with a ``check`` backend  -> check (call it with the same request)
    without one: verdict >= ``accept_confidence`` -> accept, else escalate
  after the check's answer (``checked=True``):
    verdict >= ``accept_confidence``     -> accept the first answer, else escalate

  Escalating calls the escalation tier; its answer is final. With no tier to escalate to,
  the first answer is accepted and the step says so.

Every call of the cascade is paid for and counts toward the task (one task, several
attempts). No verdict (``verdict=None``, e.g. no verdict model) escalates.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any, Literal

from policies.candidates import SCORE_QUANTUM, Cand, Ranked, fmt_p, most_capable, p_key, usd
from policies.objective_specs import Cascade

CascadeAction = Literal["accept", "check", "escalate"]


@dataclass(frozen=True, slots=True)
class CascadePlan:
    """What the gateway needs to run the cascade after the first (cheap) answer."""

    first: str
    check: str | None
    #: The escalation tier (``None``: nothing to escalate to; answers are accepted).
    escalate_to: str | None
    accept_confidence: float
    skip_check_above: float
    escalate_below: float
    #: The predictor's P(success) of the first, the check and the escalation backend (the
    #: verdict's inputs besides the answers).
    p_first: float | None
    p_check: float | None
    p_escalation: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "check": self.check,
            "escalate_to": self.escalate_to,
            "accept_confidence": self.accept_confidence,
            "skip_check_above": self.skip_check_above,
            "escalate_below": self.escalate_below,
            "p_first": self.p_first,
            "p_check": self.p_check,
            "p_escalation": self.p_escalation,
        }


@dataclass(frozen=True, slots=True)
class CascadeStep:
    """The next move: ``accept`` the first answer, call ``backend`` to ``check`` it, or
    ``escalate`` to ``backend`` (whose answer is then final)."""

    action: CascadeAction
    backend: str | None
    reason: str


def _tier(obj: Cascade, eligible: Sequence[Cand]) -> Cand | None:
    if obj.escalate_to is not None:
        return next((c for c in eligible if c.name == obj.escalate_to), None)
    others = [c for c in eligible if c.name not in (obj.first, obj.check) and c.p is not None]
    return most_capable(others)[0] if others else None


def _net_costs(
    obj: Cascade, eligible: Sequence[Cand], skip: AbstractSet[str]
) -> dict[str, Decimal]:
    """A first tier chosen per request: each candidate's net expected cost
    ``cost - success_value_usd * P(success)`` (priced, with an estimate, undominated, not the
    check)."""
    value = obj.success_value_usd
    assert value is not None
    out: dict[str, Decimal] = {}
    for c in eligible:
        if c.p is None or c.cost is None or c.name in skip or c.name == obj.check:
            continue
        with localcontext() as ctx:
            ctx.prec = 28
            out[c.name] = (c.cost - value * Decimal(repr(c.p))).quantize(SCORE_QUANTUM)
    return out


def _first(
    obj: Cascade, eligible: Sequence[Cand], skip: AbstractSet[str]
) -> tuple[Cand | None, dict[str, Decimal | None]]:
    if obj.first is not None:
        fixed = next((c for c in eligible if c.name == obj.first and c.p is not None), None)
        return fixed, {}
    net = _net_costs(obj, eligible, skip)
    ranked = sorted(
        (c for c in eligible if c.name in net), key=lambda c: (net[c.name], p_key(c), c.idx)
    )
    return (ranked[0] if ranked else None), dict(net)


def rank_cascade(
    obj: Cascade, eligible: Sequence[Cand], skip: AbstractSet[str] = frozenset()
) -> Ranked:
    """The first call: ``first`` (or, unset, the candidate with the lowest net expected cost),
    or the escalation tier when the first is predicted to fail or is the tier itself.
    ``skip``: the dominated candidates (never a per-request first)."""
    first, scores = _first(obj, eligible, skip)
    tier = _tier(obj, eligible)
    if first is None:
        what = (
            f"the cascade's first backend {obj.first} is not eligible or has no estimate"
            if obj.first is not None
            else "no eligible candidate has a price and an estimate for the cascade's first call"
        )
        return Ranked([], scores, lambda c: "", what)
    assert first.p is not None
    if tier is not None and first.name == tier.name:
        return Ranked(
            [tier],
            scores,
            lambda c: (
                f"the escalation tier {c.name} has the lowest net expected cost "
                f"({usd(scores.get(c.name))}; P(success) {fmt_p(c.p)}, expected {usd(c.cost)}): "
                "it answers alone"
            ),
            "",
        )
    bar = obj.straight_up_below
    if bar is not None and first.p < bar and tier is not None:
        return Ranked(
            [tier],
            {},
            lambda c: (
                f"{first.name} is predicted unlikely to succeed (P(success) {fmt_p(first.p)} < "
                f"{bar:.3f}): straight to the escalation tier {c.name} (P(success) "
                f"{fmt_p(c.p)}, expected {usd(c.cost)})"
            ),
            "",
        )
    check = f", check {obj.check}" if obj.check else ""
    up = f", escalate to {tier.name}" if tier is not None else ", nothing to escalate to"
    how = "" if obj.first is not None else f" (lowest net expected cost {usd(scores[first.name])})"
    return Ranked(
        [first],
        scores,
        lambda c: (
            f"cascade: {c.name} answers first{how} (P(success) {fmt_p(c.p)}, expected "
            f"{usd(c.cost)}){check}{up}; accept at verdict >= {obj.accept_confidence:.3f}"
        ),
        "",
    )


def plan_for(obj: Cascade, chosen: Cand, eligible: Sequence[Cand]) -> CascadePlan | None:
    """The plan when the decision's first call is the cascade's cheap backend (``first``, or
    with a per-request first any candidate but the escalation tier), else None."""
    tier = _tier(obj, eligible)
    if obj.first is not None and chosen.name != obj.first:
        return None
    if obj.first is None and (tier is None or chosen.name == tier.name):
        return None
    check = next((c for c in eligible if c.name == obj.check), None)
    return CascadePlan(
        first=chosen.name,
        check=check.name if check is not None else None,
        escalate_to=tier.name if tier is not None else None,
        accept_confidence=obj.accept_confidence,
        skip_check_above=obj.skip_check_above,
        escalate_below=obj.escalate_below,
        p_first=chosen.p,
        p_check=check.p if check is not None else None,
        p_escalation=tier.p if tier is not None else None,
    )


def cascade_step(plan: CascadePlan, *, checked: bool, verdict: float | None) -> CascadeStep:
    """Accept, check or escalate after the first answer (``checked=False``) or after the
    check's answer (``checked=True``); ``verdict`` is P(keeping the first answer loses
    nothing), computed with the answers seen so far."""
    v = verdict
    up = plan.escalate_to
    if up is None:  # a check could change nothing: keep the answer unchecked
        return CascadeStep("accept", None, "nothing to escalate to: accept")

    def escalate(why: str) -> CascadeStep:
        return CascadeStep("escalate", up, f"{why}: escalate to {up}")

    if v is None:
        return escalate("no verdict on the answer")
    tau = plan.accept_confidence
    if checked:
        if v >= tau:
            return CascadeStep("accept", None, f"checked verdict {v:.3f} >= {tau:.3f}: accept")
        return escalate(f"checked verdict {v:.3f} < {tau:.3f}")
    if plan.check is None:
        if v >= tau:
            return CascadeStep("accept", None, f"verdict {v:.3f} >= {tau:.3f}: accept")
        return escalate(f"verdict {v:.3f} < {tau:.3f}")
    skip = max(plan.skip_check_above, tau)  # never accept below the accept bar
    if v >= skip:
        return CascadeStep("accept", None, f"verdict {v:.3f} >= {skip:.3f}: accept unchecked")
    if v < plan.escalate_below:
        return escalate(f"verdict {v:.3f} < {plan.escalate_below:.3f}")
    return CascadeStep("check", plan.check, f"verdict {v:.3f}: check with {plan.check}")
