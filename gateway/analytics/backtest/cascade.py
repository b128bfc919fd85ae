"""Scoring a ``cascade`` decision on a dataset: every call the cascade would make, on the
recorded answers.

A dataset replay (``dataset.replay_dataset``) scores each decision with one recorded answer.
A decision with a cascade plan (``policies.cascade``) is different: the first (cheap) backend
answers, the verdict over its recorded answer (and, if the plan says so, a check backend's)
decides whether to keep it or escalate, exactly as the gateway would (``cascade_step``). The
row's cost is the recorded cost of *every* call; its outcome is the one of the answer kept.
Decisions without a plan are scored by :func:`dataset.score_choice`.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.analytics.backtest.candidate import CandidatePolicies
from gateway.analytics.backtest.dataset import DatasetQuery, Scorer, score_choice
from gateway.analytics.backtest.results import Replayed
from policies import Decision, PolicySet
from policies.cascade import cascade_step
from policies.objective_specs import Cascade

if TYPE_CHECKING:
    from predictors.datasets import OutcomeTable
    from predictors.service import Predictor
    from predictors.verdict import VerdictModel


def cascade_score(
    table: OutcomeTable,
    mapping: Mapping[str, str],
    predictor: Predictor | None,
    data_dir: str | Path | None,
    notes: list[str],
    current: PolicySet,
    candidate: CandidatePolicies,
) -> Scorer:
    """The scorer for a dataset replay: :func:`cascade_scorer` when either policy set has a
    ``cascade`` policy, else :func:`dataset.score_choice`; says how in ``notes``."""
    sets = (current, candidate.policy_set)
    if not any(isinstance(p.objective, Cascade) for s in sets for p in s.policies.values()):
        return score_choice
    from predictors.verdict import VerdictModel

    verdict = VerdictModel.from_arrays(predictor.model.arrays) if predictor is not None else None
    scorer = cascade_scorer(table, mapping, verdict, data_dir)
    if scorer is None:
        notes.append(
            f"cascade policies: {table.name} records no closed-form answers; each cascade is "
            "scored on its first call"
        )
        return score_choice
    notes.append(
        "cascade policies: every call (first, check, escalation) costs its recorded cost; keep "
        "or escalate on the predictor artifact's verdict over the recorded answers"
        + ("" if verdict is not None else " (this artifact has none: every cascade escalates)")
    )
    return scorer


def cascade_scorer(
    table: OutcomeTable,
    mapping: Mapping[str, str],
    verdict: VerdictModel | None,
    data_dir: str | Path | None = None,
) -> Scorer | None:
    """A scorer that plays cascade plans on ``table``'s recorded answers (``None`` when the
    dataset records no closed-form answers). ``mapping``: backend -> dataset model;
    ``verdict``: the predictor artifact's (``None``: every plan escalates)."""
    from predictors.answers import read_answers
    from predictors.verdict import AnswerFacts

    answers = read_answers(table.name, table.ids, table.models, data_dir)
    if answers is None:
        return None
    row = {qid: i for i, qid in enumerate(table.ids)}
    col = {m: j for j, m in enumerate(table.models)}

    def facts(q: DatasetQuery, backend: str, p: float | None) -> AnswerFacts:
        i, j = row[q.id], col[mapping[backend]]
        chars = answers.chars[i, j]
        return AnswerFacts(
            p if p is not None else 0.5,
            answers.choice[i, j] or None,
            0 if chars != chars else int(chars),  # NaN: no recorded answer
        )

    def score(q: DatasetQuery, decision: Decision, policy: str, rule: str) -> Replayed:
        plan = decision.cascade
        if plan is None or decision.backend is None:
            return score_choice(q, decision, policy, rule)
        calls = [decision.backend]
        pe = plan.p_escalation if plan.p_escalation is not None else 0.5
        first = facts(q, plan.first, plan.p_first)
        v = verdict.p_keep(pe, first) if verdict is not None else None
        step = cascade_step(plan, checked=False, verdict=v)
        if step.action == "check" and step.backend is not None:
            calls.append(step.backend)
            check = facts(q, step.backend, plan.p_check)
            v = verdict.p_keep(pe, first, check) if verdict is not None else None
            step = cascade_step(plan, checked=True, verdict=v)
        served = plan.first
        if step.action == "escalate" and step.backend is not None:
            calls.append(step.backend)
            served = step.backend
        spent, unpriced = Decimal(0), False
        for b in calls:
            rec = q.recorded.get(b)
            if rec is None or rec.cost_usd is None:
                unpriced = True
            else:
                spent += rec.cost_usd
        kept = q.recorded.get(served)
        success = None if kept is None or kept.success is None else float(kept.success)
        return Replayed(q.id, policy, rule, served, spent, success, unpriced=unpriced)

    return score
