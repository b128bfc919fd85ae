"""The cascade objective replayed on recorded answers.

This module owns the benchmark's cascade: per held-out query the product's own decisions
(``policies.decide_sweep`` with the ``cascade`` objective for the first call,
``policies.cascade.cascade_step`` after each answer) driven by the learned verdict
(``predictors.verdict``) over the *recorded* answers of the models, every call priced with
its recorded cost and counted toward the query.

What is fitted, all on the split's training rows only:

* the verdict (logistic regression, pooled over pairs of cheap models and over "no check":
  P(keeping the first answer loses nothing against the escalation tier)), on the
  predictor's out-of-fold P(success) of the training rows;
* the tiers: escalation tier = the best single model by training accuracy; ``first`` and
  ``check`` = the pair of cheaper models (and the cascade's fixed bands ``skip_check_above``,
  ``escalate_below``, ``straight_up_below``) with the lowest cost to reach the escalation
  tier's training accuracy on the training rows (verdict cross-fitted there on two folds);
* a family: that cascade, and one per cheap model on the training rows' cost/accuracy hull of
  single models as first tier, each with the check and bands of the best training AIQ;
* :func:`routed`: the cascade with no fixed first tier (the product's ``success_value_usd``
  form: the first call is the candidate with the lowest net expected cost per request, so
  the predictor picks it and the verdict may escalate it), no check.

The knob swept on the held-out rows is ``accept_confidence``, for each cascade of the family:
a cascade cannot answer for less than its first tier costs, so one cascade's curve starts
there (AIQ counts nothing left of it); the family's first tiers span the cheap end, as the
Zero router's single models do. The first member is the one chosen by cost to reach the
escalation tier (the benchmark prints its row apart).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from bench.routing_data import ReplayTable
from bench.routing_replay import prediction
from policies import BackendFacts, RequestFacts, decide_sweep
from policies.cascade import cascade_step
from policies.schema import Policy
from predictors.routing_eval import aiq, cost_to_reach, hull
from predictors.verdict import AnswerFacts, VerdictModel, feature_matrix, fit_verdict, pair_rows

TAUS = [round(v, 3) for v in np.linspace(0.3, 1.0, 25)]
#: (skip_check_above, escalate_below, straight_up_below) tried on the training rows
BANDS = [
    (skip, below, up)
    for skip in (1.0, 0.95, 0.9, 0.8)
    for below in (0.0, 0.3, 0.5)
    for up in (None, 0.3)
    if below < skip
]
MAX_CHEAP = 5  # cheap models considered for first / check (the most accurate ones)


@dataclass(frozen=True)
class CascadeSetup:
    first: int
    check: int | None
    strong: int
    bands: tuple[float, float, float | None]
    verdict: VerdictModel


def _cheap_models(table: ReplayTable, train: np.ndarray, strong: int) -> list[int]:
    """The most accurate models that cost under 35 % of the escalation tier (training rows)."""
    acc = np.nanmean(table.outcome[train], axis=0)
    cost = np.nanmean(table.cost[train], axis=0)
    cheap = [j for j in range(len(table.models)) if cost[j] < 0.35 * cost[strong] and j != strong]
    return sorted(cheap, key=lambda j: -acc[j])[:MAX_CHEAP]


def _verdict(
    p: np.ndarray, table: ReplayTable, rows: np.ndarray, cheap: list[int], strong: int
) -> VerdictModel:
    pairs: list[tuple[int, int | None]] = [(a, None) for a in cheap]
    pairs += [(a, b) for a, b in itertools.permutations(cheap, 2)]
    o, a, c = table.outcome[rows], table.answers[rows], table.answer_chars[rows]
    x, y = pair_rows(p, o, a, c, pairs, strong)
    return fit_verdict(x, y)


def _verdicts(
    v: VerdictModel,
    table: ReplayTable,
    rows: np.ndarray,
    p: np.ndarray,
    a: int,
    b: int | None,
    strong: int,
) -> np.ndarray:
    ans, chars, pe = table.answers[rows], table.answer_chars[rows], p[:, strong]
    if b is None:
        return v.p_keep_batch(feature_matrix(pe, p[:, a], ans[:, a], chars[:, a]))
    x = feature_matrix(pe, p[:, a], ans[:, a], chars[:, a], p[:, b], ans[:, b], chars[:, b])
    return v.p_keep_batch(x)


def simulate(
    table: ReplayTable,
    rows: np.ndarray,
    p: np.ndarray,
    v: VerdictModel,
    first: int,
    check: int | None,
    strong: int,
    bands: tuple[float, float, float | None],
    taus: list[float],
) -> tuple[np.ndarray, np.ndarray]:
    """The cascade's rule in numpy (for choosing tiers and bands on training rows fast; the
    held-out replay goes through the product's code, and :func:`curve` checks both agree)."""
    y, c = table.outcome[rows], table.cost[rows]
    skip_band, below, up = bands
    v1 = _verdicts(v, table, rows, p, first, None, strong)
    v2 = _verdicts(v, table, rows, p, first, check, strong) if check is not None else v1
    straight = (p[:, first] < up) if up is not None else np.zeros(len(rows), dtype=bool)
    correct, cost = [], []
    for tau in taus:
        skip = max(skip_band, below, tau)
        if check is None:
            accept1, esc1 = v1 >= tau, v1 < tau
        else:
            accept1, esc1 = v1 >= skip, (v1 < below) & (v1 < skip)
        checked = (check is not None) & ~accept1 & ~esc1
        accept2 = checked & (v2 >= tau)
        up_now = esc1 | (checked & ~accept2)
        spend = c[:, first] + up_now * c[:, strong]
        if check is not None:
            spend = spend + checked * c[:, check]
        cost.append(np.where(straight, c[:, strong], spend))
        right = np.where(up_now, y[:, strong], y[:, first])
        correct.append(np.where(straight, y[:, strong], right))
    return np.stack(correct), np.stack(cost)


def _policies(
    table: ReplayTable,
    first: int,
    check: int | None,
    strong: int,
    bands: tuple[float, float, float | None],
    taus: list[float],
) -> list[Policy]:
    skip, below, up = bands
    return [
        Policy.model_validate(
            {
                "candidates": table.models,
                "objective": {
                    "kind": "cascade",
                    "first": table.models[first],
                    "check": table.models[check] if check is not None else None,
                    "escalate_to": table.models[strong],
                    "accept_confidence": tau,
                    "skip_check_above": max(skip, below),
                    "escalate_below": below,
                    "straight_up_below": up,
                },
                "predictor_fallback": table.models[strong],
            }
        )
        for tau in taus
    ]


def run(
    table: ReplayTable,
    rows: np.ndarray,
    p: np.ndarray,
    backends: dict[str, BackendFacts],
    policies: list[Policy],
    verdict: VerdictModel,
    ratio: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(knobs, n) correctness and cost of the cascade on ``rows`` (p: their predictions,
    ``ratio``: their answer-length ratios, as the gateway passes them)."""
    col = {m: j for j, m in enumerate(table.models)}
    y, c = table.outcome[rows], table.cost[rows]
    ans, chars = table.answers[rows], table.answer_chars[rows]
    correct = np.zeros((len(policies), len(rows)))
    cost = np.zeros((len(policies), len(rows)))

    def facts(i: int, j: int) -> AnswerFacts:
        return AnswerFacts(float(p[i, j]), ans[i, j] or None, int(chars[i, j]))

    for i in range(len(rows)):
        request = RequestFacts(est_prompt_tokens=int(table.prompt_tokens[rows[i]]))
        pred = prediction(table, p[i], ratio[i] if ratio is not None else None)
        decisions = decide_sweep(policies, "cascade", request, backends, pred, rule="bench")
        for k, d in enumerate(decisions):
            assert d.backend is not None
            j = col[d.backend]
            spent, answer = c[i, j], y[i, j]
            plan = d.cascade
            if plan is not None:
                pe = plan.p_escalation if plan.p_escalation is not None else 0.5
                v = verdict.p_keep(pe, facts(i, j))
                step = cascade_step(plan, checked=False, verdict=v)
                if step.action == "check" and step.backend is not None:
                    b = col[step.backend]
                    spent += c[i, b]
                    v = verdict.p_keep(pe, facts(i, j), facts(i, b))
                    step = cascade_step(plan, checked=True, verdict=v)
                if step.action == "escalate" and step.backend is not None:
                    s = col[step.backend]
                    spent, answer = spent + c[i, s], y[i, s]
            correct[k, i], cost[k, i] = answer, spent
    return correct, cost


def _hull_tiers(table: ReplayTable, train: np.ndarray, strong: int) -> list[int]:
    """Cheap single models (under 35 % of the escalation tier's cost) on the training rows'
    cost/accuracy hull: the cheap end of what the Zero router mixes."""
    acc = np.nanmean(table.outcome[train], axis=0)
    cost = np.nanmean(table.cost[train], axis=0)
    hc, _ = hull(cost, acc)
    on_hull = [j for j in range(len(table.models)) if np.any(np.isclose(cost[j], hc))]
    return [j for j in on_hull if j != strong and cost[j] < 0.35 * cost[strong]]


def setup(table: ReplayTable, train: np.ndarray, p_oof: np.ndarray) -> list[CascadeSetup]:
    """The family of cascades (see the module docstring), all chosen on the training rows
    only; the first is the one with the lowest cost to reach the escalation tier."""
    acc = np.nanmean(table.outcome[train], axis=0)
    strong = int(np.argmax(acc))
    top = _cheap_models(table, train, strong)
    tiers = _hull_tiers(table, train, strong)
    cheap = top + [j for j in tiers if j not in top]
    c_max = float(np.nanmean(table.cost[train], axis=0).max())
    # cross-fitted verdict on the training rows: fit on one half, score the other
    half = np.random.default_rng(0).permutation(len(train)) % 2
    halves = [(half != h, half == h) for h in (0, 1)]
    fitted = [_verdict(p_oof[f], table, train[f], cheap, strong) for f, _ in halves]
    checks = top[:4]
    configs: list[tuple[int, int | None, tuple[float, float, float | None]]] = [
        (a, None, bands) for a in cheap for bands in BANDS if bands[:2] == (1.0, 0.0)
    ]
    configs += [(a, b, bands) for a in cheap for b in checks if b != a for bands in BANDS]
    Config = tuple[int, int | None, tuple[float, float, float | None]]
    best: tuple[tuple[float, float], Config] | None = None
    by_first: dict[int, tuple[float, Config]] = {}
    for a, b, bands in configs:
        qs, cs = [], []
        for v, (_, score) in zip(fitted, halves, strict=True):
            q, c = simulate(table, train[score], p_oof[score], v, a, b, strong, bands, TAUS)
            qs.append(q)
            cs.append(c)
        q, c = np.concatenate(qs, axis=1), np.concatenate(cs, axis=1)
        hc, hq = hull(c.mean(axis=1), q.mean(axis=1))
        key = (cost_to_reach(hc, hq, acc[strong]), -float(hq[-1]))
        as_before = a in top and (b is None or a in checks)  # the single cascade, as before
        if as_before and (best is None or key < best[0]):
            best = (key, (a, b, bands))
        area = aiq(hc, hq, c_max)
        if a in tiers and (a not in by_first or area > by_first[a][0]):
            by_first[a] = (area, (a, b, bands))
    assert best is not None
    verdict = _verdict(p_oof, table, train, cheap, strong)
    chosen = [best[1]] + [cfg for _, cfg in by_first.values() if cfg != best[1]]
    return [CascadeSetup(a, b, strong, bands, verdict) for a, b, bands in chosen]


def curve(
    table: ReplayTable,
    test: np.ndarray,
    p_test: np.ndarray,
    backends: dict[str, BackendFacts],
    family: list[CascadeSetup],
) -> tuple[np.ndarray, np.ndarray, float]:
    """The held-out curves through the product's code, ``(len(family) * len(TAUS), n)``, in
    family order, and the share of (query, knob) cells where :func:`simulate` (used to choose
    tiers on training rows) agrees with them."""
    correct, cost, agree = [], [], []
    for s in family:
        pols = _policies(table, s.first, s.check, s.strong, s.bands, TAUS)
        y, c = run(table, test, p_test, backends, pols, s.verdict)
        qs, cs = simulate(table, test, p_test, s.verdict, s.first, s.check, s.strong, s.bands, TAUS)
        agree.append(float(np.mean((y == qs) & np.isclose(c, cs))))
        correct.append(y)
        cost.append(c)
    return np.concatenate(correct), np.concatenate(cost), float(np.mean(agree))


def describe(table: ReplayTable, family: list[CascadeSetup]) -> str:
    parts = []
    for s in family:
        check = table.models[s.check] if s.check is not None else "none"
        skip, below, up = s.bands
        parts.append(
            f"first {table.models[s.first]}, check {check}, escalate to "
            f"{table.models[s.strong]}; skip_check_above {skip}, escalate_below {below}, "
            f"straight_up_below {up}"
        )
    return " | ".join(parts)


#: The per-request first tier's knob: what a success is worth, in multiples of the escalation
#: tier's mean cost on the training rows.
VALUE_MULTIPLES = [0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0]
ROUTED_TAUS = [round(v, 2) for v in np.linspace(0.0, 1.0, 11)]


def routed(
    table: ReplayTable,
    train: np.ndarray,
    test: np.ndarray,
    p_oof: np.ndarray,
    p_test: np.ndarray,
    ratio: np.ndarray | None,
    backends: dict[str, BackendFacts],
) -> tuple[np.ndarray, np.ndarray]:
    """The cascade with its first tier chosen per request (``first`` unset,
    ``success_value_usd`` swept with ``accept_confidence``), no check, escalating to the best
    single model by training accuracy; the verdict pooled over every other model as first
    tier (training rows). ``(len(VALUE_MULTIPLES) * len(ROUTED_TAUS), n)`` held-out rows."""
    acc = np.nanmean(table.outcome[train], axis=0)
    strong = int(np.argmax(acc))
    others = [j for j in range(len(table.models)) if j != strong]
    verdict = _verdict(p_oof, table, train, others, strong)
    unit = float(np.nanmean(table.cost[train], axis=0)[strong])
    policies = [
        Policy.model_validate(
            {
                "candidates": table.models,
                "objective": {
                    "kind": "cascade",
                    "success_value_usd": f"{m * unit:.8g}",
                    "escalate_to": table.models[strong],
                    "accept_confidence": tau,
                },
                "predictor_fallback": table.models[strong],
            }
        )
        for m in VALUE_MULTIPLES
        for tau in ROUTED_TAUS
    ]
    return run(table, test, p_test, backends, policies, verdict, ratio)
