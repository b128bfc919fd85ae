"""Running a cascade decision in the request path: answer cheaply, then accept, check or
escalate on the verdict over the answer.

This module owns what happens after the first call of a request whose decision carries a
``CascadePlan`` (``policies.cascade``, the ``cascade`` objective): it scores the first
answer with the predictor artifact's verdict model (``predictors.verdict``: the gateway gets
its weights with the predictor, ``PredictorClient.verdict``) and follows
``policies.cascade.cascade_step`` — accept the first answer; call the ``check`` backend with
the same request and judge again with both answers; or call the escalation tier, whose answer
is returned. Every call goes through the dispatcher, so each is an attempt of the same task,
priced and counted (``x-tollgate-attempts``, ``x-tollgate-cost-usd``). The step that made a
call is stored as that attempt's ``decision`` (``{"cascade": {"action", "verdict",
"reason"}}``; the first attempt keeps the policy decision and its plan), and the actions are
summed up in ``x-tollgate-cascade`` (e.g. ``check,escalate``; ``accept``).

What it does not do: a stream (``stream: true``) is served by the first tier as it answers
(the verdict needs the whole answer first); a first call that fell back to another backend
is kept (the plan was for the first tier); a check or escalation that fails keeps the
answer already paid for (the check's failure: judged without it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from gateway.config import BackendConfig
from gateway.errors import InvalidRequest, NoBackendAvailable, RateLimited, UpstreamError
from gateway.serve.dispatch import Call, Dispatcher
from gateway.serve.usage import first_choice_text
from policies.cascade import CascadePlan, CascadeStep, cascade_step
from predictors.verdict import AnswerFacts, VerdictModel, extract_choice

#: A call the cascade can do without: its failure keeps what was already answered.
#: (``InvalidRequest``: the check or escalation backend refused what the first accepted.)
CALL_FAILED = (UpstreamError, NoBackendAvailable, RateLimited, InvalidRequest)


@dataclass
class CascadeRun:
    """One request's cascade: the plan, the verdict model, and the steps taken so far."""

    plan: CascadePlan
    verdict: VerdictModel | None
    backends: dict[str, BackendConfig]
    steps: list[dict[str, Any]] = field(default_factory=list)

    def backends_in_reach(self) -> list[BackendConfig]:
        """The check and escalation backends this cascade may also call (for rate limits and
        the budget's worst case)."""
        names = (self.plan.check, self.plan.escalate_to)
        return [self.backends[n] for n in names if n is not None and n in self.backends]

    def _judge(self, first: AnswerFacts, check: AnswerFacts | None) -> float | None:
        if self.verdict is None:
            return None
        pe = self.plan.p_escalation if self.plan.p_escalation is not None else 0.5
        return self.verdict.p_keep(pe, first, check)

    def _note(self, step: CascadeStep, verdict: float | None) -> CascadeStep:
        self.steps.append(
            {
                "action": step.action,
                "backend": step.backend,
                "verdict": None if verdict is None else round(verdict, 4),
                "reason": step.reason,
            }
        )
        return step

    async def run(
        self, dispatcher: Dispatcher, chain: list[BackendConfig], op: Call
    ) -> tuple[BackendConfig, dict[str, Any]]:
        """The first call (on ``chain``, with its fallbacks), then the plan: the backend whose
        answer the client gets, and that answer."""
        plan = self.plan
        backend, resp, _ = await dispatcher.call(chain, op)
        if backend.name != plan.first:
            self.steps.append({"action": "none", "reason": f"{backend.name} answered instead"})
            return backend, resp
        first = _facts(plan.p_first, resp)
        v = self._judge(first, None)
        step = self._note(cascade_step(plan, checked=False, verdict=v), v)
        if step.action == "check" and step.backend in self.backends:
            try:
                _, checked, _ = await self._call(dispatcher, step.backend, op)
            except CALL_FAILED:  # no second opinion: judge the first answer alone
                alone = cascade_step(replace(plan, check=None), checked=False, verdict=v)
                step = self._note(alone, v)
            else:
                v = self._judge(first, _facts(plan.p_check, checked))
                step = self._note(cascade_step(plan, checked=True, verdict=v), v)
        if step.action == "escalate" and step.backend in self.backends:
            try:
                backend, resp, _ = await self._call(dispatcher, step.backend, op)
            except CALL_FAILED as exc:
                self.steps.append({"action": "kept", "reason": f"escalation failed: {exc}"})
        return backend, resp

    async def _call(
        self, dispatcher: Dispatcher, name: str, op: Call
    ) -> tuple[BackendConfig, dict[str, Any], str | None]:
        """A check or escalation call, its attempt stored with the step that made it."""
        dispatcher.ctx.attempt_note = {"cascade": self.steps[-1]}
        try:
            return await dispatcher.call([self.backends[name]], op)
        finally:
            dispatcher.ctx.attempt_note = None

    def header(self) -> str:
        """``x-tollgate-cascade``: the actions taken, e.g. ``check,escalate``."""
        return ",".join(s["action"] for s in self.steps) or "none"


def _facts(p_success: float | None, resp: dict[str, Any]) -> AnswerFacts:
    """What the verdict reads of one answer: its backend's P(success), its closed form, its
    length."""
    text = first_choice_text(resp)
    return AnswerFacts(p_success if p_success is not None else 0.5, extract_choice(text), len(text))


def cascade_run(
    plan: CascadePlan | None, predictor: Any, backends: list[BackendConfig]
) -> CascadeRun | None:
    """The run for a decision's plan (None: no plan)."""
    if plan is None:
        return None
    return CascadeRun(plan, getattr(predictor, "verdict", None), {b.name: b for b in backends})
