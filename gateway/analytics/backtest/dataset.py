"""Dataset replays: per recorded query, ``decide`` under both policy sets, each choice scored with
the *recorded* outcome and *recorded* cost of the dataset model the chosen backend maps to
(``backend.profile``). Pure: queries, facts and policy sets in, a result out.

To score a choice differently (a cascade that tries several backends, say), replace
:func:`score_choice`; :func:`replay_dataset` takes it as ``score``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from gateway.analytics.backtest.results import BacktestResult, Replayed, Side
from gateway.analytics.facts import estimate_tokens
from gateway.config import Config
from policies import (
    BackendFacts,
    Decision,
    PolicySet,
    PredictionFacts,
    RequestFacts,
    decide,
    select,
)

if TYPE_CHECKING:
    from predictors.datasets import OutcomeTable


@dataclass(frozen=True)
class Recorded:
    """One dataset model's recorded result on one query (``None``: not recorded)."""

    cost_usd: Decimal | None
    success: bool | None


@dataclass(frozen=True)
class DatasetQuery:
    """A recorded query: its prompt, prediction, and per *backend* the recorded result."""

    id: str
    prompt: str
    est_prompt_tokens: int
    prediction: PredictionFacts | None
    recorded: Mapping[str, Recorded]


#: scores one decision on one recorded query: (query, decision, policy, rule) -> replayed row
Scorer = Callable[["DatasetQuery", Decision, str, str], Replayed]


def score_choice(q: DatasetQuery, decision: Decision, policy: str, rule: str) -> Replayed:
    """The chosen backend's one recorded answer: its cost and outcome (no fallbacks, retries or
    escalation). No backend chosen: a failure at no cost."""
    if decision.backend is None:
        return Replayed(q.id, policy, rule, None, Decimal(0), 0.0, error=decision.error)
    rec = q.recorded.get(decision.backend)
    if rec is None:  # defensive: unmapped backends are marked unhealthy and never chosen
        return Replayed(q.id, policy, rule, decision.backend, Decimal(0), None, unpriced=True)
    return Replayed(
        q.id,
        policy,
        rule,
        decision.backend,
        rec.cost_usd if rec.cost_usd is not None else Decimal(0),
        None if rec.success is None else float(rec.success),
        unpriced=rec.cost_usd is None,
    )


def replay_one(
    policy_set: PolicySet,
    request: RequestFacts,
    backends: Mapping[str, BackendFacts],
    prediction: PredictionFacts | None,
) -> tuple[str, str, Decision]:
    """``select`` with the routing rules, then ``decide``: what the gateway does for ``auto``."""
    name, rule = select(policy_set, request)
    return (
        name,
        rule,
        decide(policy_set.policies[name], name, request, backends, prediction, rule=rule),
    )


def replay_dataset(
    queries: Sequence[DatasetQuery],
    backends: Mapping[str, BackendFacts],
    current: PolicySet,
    candidate: PolicySet,
    *,
    source: str,
    notes: Iterable[str] = (),
    in_sample: bool | None = None,
    meta: Mapping[str, Any] | None = None,
    score: Scorer = score_choice,
) -> BacktestResult:
    """Replay recorded queries under both policy sets, each decision scored by ``score``
    (default: the recorded outcome and cost of the chosen backend's answer)."""
    sides: list[list[Replayed]] = [[], []]
    for q in queries:
        request = RequestFacts(prompt_text=q.prompt, est_prompt_tokens=q.est_prompt_tokens)
        for out, policy_set in zip(sides, (current, candidate), strict=True):
            name, rule, decision = replay_one(policy_set, request, backends, q.prediction)
            out.append(score(q, decision, name, rule))
    return BacktestResult(
        source=source,
        current=Side("current", current.version, tuple(sides[0])),
        candidate=Side("candidate", candidate.version, tuple(sides[1])),
        notes=tuple(notes),
        in_sample=in_sample,
        meta=dict(meta or {}),
    )


def _decimal(value: float) -> Decimal | None:
    # 12 significant digits: the CSVs' costs, without float parsing noise (…99999999995)
    return None if math.isnan(value) else Decimal(f"{float(value):.12g}")


def dataset_queries(
    table: OutcomeTable,
    mapping: Mapping[str, str],
    predictions: Sequence[PredictionFacts | None],
) -> list[DatasetQuery]:
    """One :class:`DatasetQuery` per row of ``table``; ``mapping`` is backend → dataset model."""
    if len(predictions) != len(table):
        raise ValueError("one prediction per query is needed")
    outcome = table.outcome.to_numpy(dtype=float)
    cost = table.cost.to_numpy(dtype=float)
    col = {m: i for i, m in enumerate(table.models)}
    out = []
    for i, (qid, prompt) in enumerate(zip(table.ids, table.prompts, strict=True)):
        recorded = {}
        for backend, model in mapping.items():
            j = col[model]
            o = outcome[i, j]
            recorded[backend] = Recorded(_decimal(cost[i, j]), None if math.isnan(o) else o >= 0.5)
        text = str(prompt)
        out.append(DatasetQuery(qid, text, estimate_tokens(text), predictions[i], recorded))
    return out


def map_backends(
    config: Config, models: Sequence[str], overrides: Mapping[str, str] | None = None
) -> tuple[dict[str, str], list[str]]:
    """backend → dataset model via ``backend.profile`` (or ``overrides``), and the backends left
    out (their profile is not a model of the dataset), each with a reason."""
    known = set(models)
    mapping: dict[str, str] = {}
    missing: list[str] = []
    for b in config.backends:
        model = (overrides or {}).get(b.name, b.profile)
        if "embeddings" in b.capabilities and model is None:
            continue  # an embeddings endpoint is not a chat backend
        if model is not None and model in known:
            mapping[b.name] = model
        else:
            why = "no profile" if model is None else f"profile {model!r} is not in the dataset"
            missing.append(f"{b.name} ({why})")
    return mapping, missing
