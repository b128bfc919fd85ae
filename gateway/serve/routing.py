"""From a request to a routing decision: gather the facts, ask the predictor, run the policy.

The policy engine (``policies``) is pure; this module is the gateway side of it. It builds
``BackendFacts`` (prices, capabilities, credentials, circuit state, observed p95 latency),
``RequestFacts`` (tenant, headers, prompt, token estimate, required capabilities, budget left)
and ``PredictionFacts`` (the predictor's P(success) per profile, under a hard timeout — on
timeout or error the policy's declared ``predictor_fallback`` applies), then runs the selected
policy and any shadow policies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from gateway.auth import Principal
from gateway.capacity import saturated_note, unsaturated
from gateway.config import AUTO_POLICY, BackendConfig, Config
from gateway.errors import BudgetExceeded, InvalidRequest, NoBackendAvailable, TollgateError
from gateway.request_record import note_request
from gateway.runtime import Runtime
from gateway.serve import access
from gateway.serve.backend_facts import facts_for, learned_profile
from gateway.serve.predictor_outcome import FALLBACK_LOG, header_value, outcome_of
from gateway.serve.request import ClientRequest
from gateway.snapshot import Snapshot, unavailable_reason
from policies import (
    BackendFacts,
    Decision,
    PredictionFacts,
    RequestFacts,
    decide,
    select,
    shadow_decisions,
)
from predictors.embedding import pack_vector

log = logging.getLogger("tollgate.routing")

# Removal reasons that mean the *request* cannot be served by this policy (a client error),
# as opposed to backends being down right now (a 503).
CLIENT_CONSTRAINTS = frozenset(
    {"capabilities", "context_window", "tenant", "tags", "max_cost", "budget", "unknown_backend"}
)


class PredictorLike(Protocol):
    version: str

    async def predict(self, prompt: str, timeout_s: float) -> Any: ...


@dataclass
class Routed:
    """The outcome of routing one request."""

    policy: str | None
    chain: list[BackendConfig]
    decision: Decision | None = None
    escalation: list[BackendConfig] = field(default_factory=list)
    record: dict[str, Any] | None = None  # what is stored with the request (decision, shadow)
    predictor: str | None = None  # x-tollgate-predictor: ok | fallback:<reason>

    def headers(self) -> dict[str, str]:
        out = self.decision.header_summary() if self.decision is not None else {}
        if self.predictor is not None:
            out["x-tollgate-predictor"] = self.predictor
        return out


class Router:
    """Routes requests under one config snapshot (the request's own)."""

    def __init__(self, runtime: Runtime, snapshot: Snapshot) -> None:
        self.rt = runtime
        self.snap = snapshot
        self.saturated: dict[str, str] = {}  # backend -> why it is over its load limits

    @property
    def config(self) -> Config:
        return self.snap.config

    async def backend_facts(self) -> dict[str, BackendFacts]:
        cfg, snap, rt = self.config, self.snap, self.rt
        allowed = await rt.allowed_all(b.name for b in cfg.backends)
        capacity = rt.capacity  # self-hosted backends over their load limits spill over
        self.saturated = {
            b.name: why
            for b in cfg.backends
            if capacity is not None and (why := capacity.saturation(b)) is not None
        }
        facts: dict[str, BackendFacts] = {}
        for backend, ok in zip(cfg.backends, allowed, strict=True):
            missing = unavailable_reason(backend)  # reads the environment: once per backend
            facts[backend.name] = facts_for(
                backend,
                snap.price(backend),
                healthy=missing is None and backend.name not in self.saturated,
                unhealthy_reason=missing or saturated_note(self.saturated.get(backend.name)),
                circuit_open=not ok,
                p95_latency_ms=rt.latency.p95(backend.name),
                profile=learned_profile(backend, snap.learned_profiles),
            )
        return facts

    async def request_facts(
        self, principal: Principal, request: ClientRequest, prompt_tokens: int
    ) -> RequestFacts:
        """The request's facts, its budgets aside (``with_budget`` adds them once the policy
        is known)."""
        return RequestFacts(
            tenant=principal.tenant_name,
            key_id=principal.key_id,
            headers=dict(request.headers),
            prompt_text=request.query,
            est_prompt_tokens=prompt_tokens,
            max_tokens=request.max_tokens,
            required_capabilities=frozenset({"vision"} if request.needs_vision else ()),
            has_tools=request.has_tools,
            json_mode=request.json_mode,
            required_tags=request.required_tags,
        )

    async def with_budget(
        self, facts: RequestFacts, principal: Principal, request: ClientRequest, policy: str
    ) -> RequestFacts:
        """``facts`` with the budget left: the tightest of the caller's budgets that apply to
        this request under ``policy`` (in USD, and as a share of its limit)."""
        limits = await self.rt.budgets.limits(
            principal, self.config.budgets, policy=policy, tags=request.tags
        )
        if not limits:
            return facts
        left, share = await self.rt.budgets.remaining(limits)
        return replace(facts, budget_remaining_usd=left, budget_remaining_fraction=share)

    async def prediction(
        self, prompt: str
    ) -> tuple[PredictionFacts | None, dict[str, Any], dict[str, Any]]:
        """The predictor's facts (None: none in time), what to log of the prediction, and how
        the call went (``predictor_client.Scored.record``)."""
        predictor: PredictorLike | None = self.rt.predictor
        if predictor is None:
            return None, {}, {"status": "disabled"}
        timeout_s = self.config.predictor.timeout_ms / 1000
        t0 = time.monotonic()
        try:
            if hasattr(predictor, "score"):  # the predictor client says why it has none
                scored = await predictor.score(prompt, timeout_s)
                result, called = scored.prediction, scored.record()
            else:
                result = await predictor.predict(prompt, timeout_s)
                called = {"status": "ok" if result is not None else "timeout"}
        except Exception:
            log.exception("predictor failed; the policy's predictor_fallback applies")
            result, called = None, {"status": "error"}
        wait = self.rt.metrics.predictor_wait.labels(called["status"])
        wait.observe(time.monotonic() - t0)
        if result is None:
            return None, {}, called
        facts = PredictionFacts(
            p_success=dict(result.p_success),
            predictor_version=predictor.version,
            complexity=float(result.complexity),
            output_ratio=dict(getattr(result, "output_ratio", None) or {}),
        )
        logged: dict[str, Any] = {
            "complexity": facts.complexity,
            "p_success": dict(facts.p_success),
        }
        if facts.output_ratio:
            logged["output_ratio"] = {k: round(v, 4) for k, v in facts.output_ratio.items()}
        vector = getattr(result, "embedding", None)
        if vector is not None and self.config.predictor.record_embeddings:
            # the query's vector (not its text) so `predictor train --from-store` can learn
            # from this request's outcome
            logged["embedding"] = pack_vector(vector)
            logged["embedder"] = getattr(predictor, "fingerprint", None)
        return facts, logged, called

    async def route(
        self,
        policy_name: str,
        principal: Principal,
        client_request: ClientRequest,
        *,
        request_id: str,
        prompt_tokens: int,
        budgeted: bool = True,
        checked: access.Checked | None = None,
    ) -> Routed:
        """Decide where the request goes. ``budgeted`` False: no budget can apply to the
        caller (``BudgetLedger.may_apply``), so none is looked up; ``checked``: the access
        check the pipeline already passed for this request (not repeated for that policy)."""
        policy_set = self.config.policy_set
        if policy_set is None:
            raise InvalidRequest("this gateway has no routing policies configured", param="model")
        request = await self.request_facts(principal, client_request, prompt_tokens)
        if policy_name == AUTO_POLICY:
            policy_name, rule = select(policy_set, request)
        else:
            rule = "model"
        note_request(policy=policy_name)  # the access line names it even if refused below
        if budgeted:
            request = await self.with_budget(request, principal, client_request, policy_name)
        policy = policy_set.policies[policy_name]
        if checked is not None and checked.policy == policy_name:
            allowed = checked.allowed
        else:
            allowed = access.check_policy(principal, policy_name, policy.candidates, self.config)
        if allowed is not None:  # model access: only these (None, the default: every one)
            request = replace(request, allowed_backends=allowed)
        if self.rt.state_in_process:  # no I/O in backend_facts: no tasks either
            backends = await self.backend_facts()
            prediction, logged, called = await self.prediction(request.prompt_text)
        else:
            backends, (prediction, logged, called) = await asyncio.gather(
                self.backend_facts(), self.prediction(request.prompt_text)
            )
        decision = decide(policy, policy_name, request, backends, prediction, rule=rule)
        if decision.backend is None and self.saturated:  # nowhere to spill: queue there
            backends = unsaturated(backends, self.saturated)
            decision = decide(policy, policy_name, request, backends, prediction, rule=rule)
        shadows = shadow_decisions(
            policy_set, decision, request, backends, prediction, sample_key=request_id
        )
        record = decision.to_dict()
        if self.saturated:
            record["capacity"] = dict(self.saturated)
        fell_back = decision.fallback == "predictor_unavailable"
        record["predictor"] = predictor_outcome = outcome_of(fell_back, called)
        self.rt.metrics.routing_decisions.labels("fallback" if fell_back else "ok").inc()
        if fell_back:
            self.rt.metrics.predictor_fallbacks.labels(predictor_outcome["reason"]).inc()
            FALLBACK_LOG.note(predictor_outcome["reason"], policy_name)
        if shadows:
            record["shadow"] = [s.to_dict() for s in shadows]
        if logged:
            record["prediction"] = logged
        if decision.backend is None:
            removed = {row.removed_by for row in decision.candidates if row.removed_by}
            error: type[TollgateError] = (
                InvalidRequest if removed and removed <= CLIENT_CONSTRAINTS else NoBackendAvailable
            )
            if removed == {"budget"}:  # out of budget: the same 429 as a refused reservation
                raise BudgetExceeded(
                    f"budget exceeded: policy {policy_name!r} has no candidate within the "
                    f"budget left: {decision.reason}"
                )
            raise error(
                f"policy {policy_name!r} cannot serve this request: {decision.reason}",
                code=decision.error or "no_backend",
            )
        by_name = {b.name: b for b in self.config.backends}
        chain = [by_name[n] for n in (decision.backend, *decision.fallbacks) if n in by_name]
        escalation = [by_name[n] for n in decision.escalation if n in by_name]
        return Routed(
            policy_name, chain, decision, escalation, record, header_value(predictor_outcome)
        )
