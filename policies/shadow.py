"""Shadow policies: decide with a second policy on the same inputs, as data, never served.

The gateway calls :func:`shadow_decisions` after the served decision and records each
:class:`ShadowResult` next to the request. Sampling is deterministic: a stable hash of a key
the caller passes in (e.g. the request id), so no randomness enters the engine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from policies.decision import Decision
from policies.engine import decide
from policies.facts import BackendFacts, PredictionFacts, RequestFacts
from policies.routing_specs import Shadow
from policies.schema import PolicySet

SHADOW_RULE = "shadow"


@dataclass(frozen=True, slots=True)
class ShadowResult:
    """What a shadow policy would have done for a request that ``served`` handled."""

    shadow_policy: str
    served_policy: str
    served_backend: str | None
    decision: Decision
    #: Shadow expected cost minus served expected cost (``None`` when either is unknown).
    expected_cost_delta_usd: Decimal | None

    @property
    def same_backend(self) -> bool:
        return self.decision.backend == self.served_backend

    def to_dict(self) -> dict[str, Any]:
        delta = self.expected_cost_delta_usd
        return {
            "shadow_policy": self.shadow_policy,
            "served_policy": self.served_policy,
            "served_backend": self.served_backend,
            "same_backend": self.same_backend,
            "expected_cost_delta_usd": None if delta is None else str(delta),
            "decision": self.decision.to_dict(),
        }


def in_sample(salt: str, key: str, fraction: float) -> bool:
    """Stable per-(salt, key) coin: the same key always gets the same answer on every replica,
    and a larger ``fraction`` keeps every key a smaller one took."""
    if fraction >= 1.0:
        return True
    if fraction <= 0.0:
        return False
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def sampled(shadow: Shadow, sample_key: str) -> bool:
    """Whether ``sample_key`` (a request id) is in this shadow policy's sample."""
    return in_sample(shadow.policy, sample_key, shadow.sample)


def shadows_for(policy_set: PolicySet, served_policy: str, sample_key: str) -> tuple[str, ...]:
    """Names of the shadow policies to evaluate for a request served by ``served_policy``."""
    names: list[str] = []
    for shadow in policy_set.shadow:
        if shadow.policy == served_policy or shadow.policy in names:
            continue
        if shadow.when_serving is not None and served_policy not in shadow.when_serving:
            continue
        if sampled(shadow, sample_key):
            names.append(shadow.policy)
    return tuple(names)


def shadow_decisions(
    policy_set: PolicySet,
    served: Decision,
    request: RequestFacts,
    backends: Mapping[str, BackendFacts],
    prediction: PredictionFacts | None,
    *,
    sample_key: str,
) -> tuple[ShadowResult, ...]:
    """Decide with every shadow policy that applies to ``served``; same inputs, no serving."""
    results = []
    for name in shadows_for(policy_set, served.policy, sample_key):
        decision = decide(
            policy_set.policies[name], name, request, backends, prediction, rule=SHADOW_RULE
        )
        a, b = decision.expected_cost_usd, served.expected_cost_usd
        delta = a - b if a is not None and b is not None else None
        results.append(ShadowResult(name, served.policy, served.backend, decision, delta))
    return tuple(results)
