"""The routing decision as a frozen, self-explaining value, and its JSON / header renderings.

A :class:`Decision` is what the gateway stores with the request, summarises in response
headers and prints for ``tollgate route explain``: the chosen backend, the ordered fallbacks
and escalation tiers, one row per candidate (prediction, expected cost, the constraint that
removed it), the reason, and the rule/policy/predictor versions that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from policies.cascade import CascadePlan

#: Stable constraint codes, in the order the engine checks them (the first failing one is
#: recorded as ``removed_by``).
CONSTRAINT_ORDER = (
    "unknown_backend",
    "tenant",
    "tags",
    "capabilities",
    "context_window",
    "health",
    "circuit",
    "latency_slo",
    "unpriced",
    "max_cost",
    "budget",
)

FallbackKind = Literal["predictor_unavailable", "no_adequate"]


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class CandidateRow:
    """One candidate as the engine saw it."""

    name: str
    p_success: float | None
    #: est_prompt_tokens * input price + expected output tokens * output price (USD).
    expected_cost_usd: Decimal | None
    eligible: bool
    #: Objective's adequacy test (``None`` when it was not applied: removed / no prediction).
    adequate: bool | None = None
    #: Objective score: expected cost per success for ``min_cost_per_success``.
    score: Decimal | None = None
    #: A code from ``CONSTRAINT_ORDER`` when not eligible.
    removed_by: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "p_success": self.p_success,
            "expected_cost_usd": _money(self.expected_cost_usd),
            "eligible": self.eligible,
            "adequate": self.adequate,
            "score": _money(self.score),
            "removed_by": self.removed_by,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's choice for one request. ``backend is None`` means: answer with ``error``."""

    backend: str | None
    #: Eligible backends to try, in order, if the chosen one fails to answer (transport error,
    #: timeout, open circuit): the order the policy itself would pick them in.
    fallbacks: tuple[str, ...]
    #: Backends to try, in order, when an escalation validator rejects the chosen backend's
    #: answer (empty when the policy declares no escalation).
    escalation: tuple[str, ...]
    candidates: tuple[CandidateRow, ...]
    reason: str
    policy: str
    policy_version: str
    rule: str
    objective: str
    predictor_version: str | None
    #: ``predictor_unavailable``: the predictor gave no estimate and ``predictor_fallback``
    #: chose; ``no_adequate``: no candidate met the objective and ``on_no_adequate`` chose.
    fallback: FallbackKind | None = None
    #: Machine-readable error code when ``backend is None``.
    error: str | None = None
    #: With the ``cascade`` objective, when ``backend`` is its cheap first tier: what to do
    #: after the answer (``policies.cascade.cascade_step``). ``None`` otherwise.
    cascade: CascadePlan | None = None
    #: ``Policy.budget_aware`` changed the order: the tightest budget's remaining fraction.
    budget_low: float | None = None

    @property
    def used_fallback(self) -> bool:
        return self.fallback is not None

    @property
    def chosen(self) -> CandidateRow | None:
        for row in self.candidates:
            if row.name == self.backend:
                return row
        return None

    @property
    def expected_cost_usd(self) -> Decimal | None:
        row = self.chosen
        return None if row is None else row.expected_cost_usd

    @property
    def p_success(self) -> float | None:
        row = self.chosen
        return None if row is None else row.p_success

    def row(self, name: str) -> CandidateRow:
        for row in self.candidates:
            if row.name == name:
                return row
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (Decimals as strings); keys ``backend``, ``candidates``, ``reason``, …"""
        return {
            "backend": self.backend,
            "fallbacks": list(self.fallbacks),
            "escalation": list(self.escalation),
            "candidates": [row.to_dict() for row in self.candidates],
            "reason": self.reason,
            "error": self.error,
            "policy": self.policy,
            "policy_version": self.policy_version,
            "rule": self.rule,
            "objective": self.objective,
            "predictor_version": self.predictor_version,
            "fallback": self.fallback,
            "used_fallback": self.used_fallback,
            "expected_cost_usd": _money(self.expected_cost_usd),
            "p_success": self.p_success,
            "cascade": None if self.cascade is None else self.cascade.to_dict(),
            **({} if self.budget_low is None else {"budget_low": self.budget_low}),
        }

    def header_summary(self) -> dict[str, str]:
        """Compact response headers (ASCII, no prompt content)."""
        headers = {
            "x-tollgate-policy": f"{self.policy}@{self.policy_version}",
            "x-tollgate-rule": self.rule,
            "x-tollgate-decision": (self.fallback or self.error or "objective"),
        }
        if self.backend is not None:
            headers["x-tollgate-backend"] = self.backend
        cost = self.expected_cost_usd
        if cost is not None:
            headers["x-tollgate-expected-cost-usd"] = f"{cost:.6f}"
        p = self.p_success
        if p is not None:
            headers["x-tollgate-predicted-success"] = f"{p:.3f}"
        if self.predictor_version is not None:
            headers["x-tollgate-predictor-version"] = self.predictor_version
        if self.fallbacks:
            headers["x-tollgate-fallbacks"] = ",".join(self.fallbacks)
        return headers
