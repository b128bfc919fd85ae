"""Store replays: logged requests whose first attempt stored a decision with a prediction.

The current side is what happened (recorded cost of every attempt; success from the
``outcomes`` table, unknown if absent — never a success). The candidate side reuses the
recorded cost and outcome when it picks the backend that was called; otherwise cost = recorded
tokens x the candidate backend's price and success = the stored predicted P(success): such rows
are flagged *estimated (predictor)*. Pure: logged requests in, a result out
(``store_load`` reads them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from gateway.analytics.backtest.results import BacktestResult, Replayed, Side
from policies import (
    BackendFacts,
    Decision,
    PolicySet,
    PredictionFacts,
    RequestFacts,
    decide,
)
from policies.routing_specs import Match
from policies.rules import DEFAULT_RULE, matches, rule_label

#: Routing conditions a logged request can be re-evaluated on (the store keeps no headers,
#: prompt text, tools or response format).
STORED_CONDITIONS = frozenset({"tenants", "key_ids", "prompt_tokens"})


@dataclass(frozen=True)
class LoggedRequest:
    """A logged request that can be replayed: its first attempt stored a decision with a
    prediction. ``cost_usd`` sums every attempt of the request; ``success`` is the task's
    outcome (``None``: no outcome recorded)."""

    request_id: str
    task_id: str
    tenant: str | None
    key_id: str | None
    policy: str
    rule: str
    backend: str
    decision: Mapping[str, Any]
    prediction: PredictionFacts
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: Decimal
    unpriced: bool
    success: bool | None
    #: the backend whose answer was returned (last ok attempt), None when none was
    served_by: str | None = None
    #: backends whose answers a policy validator rejected (escalation), in order
    rejected: tuple[str, ...] = ()


def stored_prediction(decision: Mapping[str, Any]) -> PredictionFacts | None:
    """The prediction a logged decision was made with (``None``: none was stored)."""
    pred = decision.get("prediction")
    if not isinstance(pred, Mapping) or not isinstance(pred.get("p_success"), Mapping):
        return None
    try:
        return PredictionFacts(
            p_success={str(k): float(v) for k, v in pred["p_success"].items()},
            predictor_version=str(decision.get("predictor_version") or "logged"),
            complexity=None if pred.get("complexity") is None else float(pred["complexity"]),
            output_ratio={str(k): float(v) for k, v in (pred.get("output_ratio") or {}).items()},
        )
    except (TypeError, ValueError, AttributeError):
        return None


def _evaluable(match: Match) -> bool:
    given = {k for k, v in match.model_dump(exclude_none=True).items() if v is not None}
    return given <= STORED_CONDITIONS


def replay_select(
    policy_set: PolicySet, request: RequestFacts, logged_rule: str, logged_policy: str
) -> tuple[str, str]:
    """Which policy of ``policy_set`` serves a logged request.

    A request that named its policy (``tollgate/<name>``, rule ``model``) keeps it when the set
    has it. Rules on tenants, key ids and prompt tokens are evaluated; rules on anything the
    store does not keep (headers, prompt text, tools, JSON mode) are taken to match exactly when
    the logged request matched a rule of the same name.
    """
    if logged_rule == "model" and logged_policy in policy_set.policies:
        return logged_policy, "model"
    for i, rule in enumerate(policy_set.routing.rules):
        label = rule_label(i, rule.name)
        if _evaluable(rule.match):
            if matches(rule.match, request):
                return rule.policy, label
        elif label == logged_rule:
            return rule.policy, label
    return policy_set.routing.default, DEFAULT_RULE


def _logged_request_facts(req: LoggedRequest, rules_from: Sequence[PolicySet]) -> RequestFacts:
    """What the store knows of the request; tools/JSON mode inferred from the rule it matched."""
    has_tools = json_mode = False
    for ps in rules_from:
        for i, rule in enumerate(ps.routing.rules):
            if rule_label(i, rule.name) == req.rule:
                has_tools = has_tools or bool(rule.match.has_tools)
                json_mode = json_mode or bool(rule.match.json_mode)
    return RequestFacts(
        tenant=req.tenant,
        key_id=req.key_id,
        est_prompt_tokens=req.prompt_tokens or 0,
        has_tools=has_tools,
        json_mode=json_mode,
    )


def _situational(
    base: Mapping[str, BackendFacts], decision: Mapping[str, Any]
) -> dict[str, BackendFacts]:
    """Backend facts as they were for the logged request: the candidates the logged decision
    found unhealthy or with an open circuit stay so (others: as configured, assumed up)."""

    out = dict(base)
    for row in decision.get("candidates") or []:
        if not isinstance(row, Mapping) or row.get("name") not in out:
            continue
        name = str(row["name"])
        if row.get("removed_by") == "health":
            out[name] = replace(out[name], healthy=False)
        elif row.get("removed_by") == "circuit":
            out[name] = replace(out[name], circuit_open=True)
    return out


def _estimate(
    req: LoggedRequest, decision: Decision, backend: BackendFacts | None
) -> tuple[Decimal, bool]:
    """(cost, unpriced) of serving ``req`` on the candidate's backend: the recorded token counts
    at its price; without recorded tokens, the decision's expected cost."""
    if backend is not None and backend.priced and req.prompt_tokens is not None:
        assert backend.input_cost_per_token is not None
        assert backend.output_cost_per_token is not None
        return (
            Decimal(req.prompt_tokens) * backend.input_cost_per_token
            + Decimal(req.completion_tokens or 0) * backend.output_cost_per_token,
            False,
        )
    expected = decision.expected_cost_usd
    return (expected, False) if expected is not None else (Decimal(0), True)


def replay_store(
    logged: Sequence[LoggedRequest],
    backends: Mapping[str, BackendFacts],
    candidate: PolicySet,
    *,
    current_rules: PolicySet | None = None,
    source: str = "store",
    notes: Iterable[str] = (),
    meta: Mapping[str, Any] | None = None,
    estimate: Callable[[LoggedRequest, str], float | None] | None = None,
) -> BacktestResult:
    """Logged traffic: what happened (current) vs the candidate (recorded when it picks the
    backend that was called, else estimated from recorded tokens and the stored prediction).

    ``estimate(request, backend)`` replaces the candidate decision's own P(success) for the
    estimated rows (so two candidates can be scored by one estimator)."""
    current: list[Replayed] = []
    cand: list[Replayed] = []
    rules_from = [candidate] + ([current_rules] if current_rules is not None else [])
    for req in logged:
        success = None if req.success is None else float(req.success)
        current.append(
            Replayed(
                req.request_id,
                req.policy,
                req.rule,
                req.backend,
                req.cost_usd,
                success,
                unpriced=req.unpriced,
            )
        )
        request = _logged_request_facts(req, rules_from)
        facts = _situational(backends, req.decision)
        name, rule = replay_select(candidate, request, req.rule, req.policy)
        decision = decide(candidate.policies[name], name, request, facts, req.prediction, rule=rule)
        if decision.backend is None:
            cand.append(
                Replayed(req.request_id, name, rule, None, Decimal(0), 0.0, error=decision.error)
            )
        elif decision.backend == req.backend:
            cand.append(
                Replayed(
                    req.request_id,
                    name,
                    rule,
                    decision.backend,
                    req.cost_usd,
                    success,
                    unpriced=req.unpriced,
                )
            )
        else:
            cost, unpriced = _estimate(req, decision, facts.get(decision.backend))
            p = decision.p_success if estimate is None else estimate(req, decision.backend)
            cand.append(
                Replayed(
                    req.request_id,
                    name,
                    rule,
                    decision.backend,
                    cost,
                    p,
                    estimated=True,
                    unpriced=unpriced,
                )
            )
    return BacktestResult(
        source=source,
        current=Side("current (logged)", None, tuple(current)),
        candidate=Side("candidate", candidate.version, tuple(cand)),
        notes=tuple(notes),
        in_sample=None,
        meta=dict(meta or {}),
    )
