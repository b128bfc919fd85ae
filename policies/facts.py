"""Frozen inputs of a routing decision: what the gateway knows about backends and the request.

The gateway builds these values (from config, health checks, circuit breakers, latency
metrics, the predictor) and hands them to :func:`policies.engine.decide`; the engine never
looks anything up itself. Money is ``Decimal`` USD; ``None`` means unknown, never zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType

#: Capability names the gateway derives from requests; backends may declare others.
KNOWN_CAPABILITIES = frozenset({"tools", "json_mode", "vision", "streaming"})


@dataclass(frozen=True, slots=True)
class BackendFacts:
    """One backend as the gateway sees it right now."""

    name: str
    #: USD per input / output token; ``None``: unpriced (never treated as free).
    input_cost_per_token: Decimal | None
    output_cost_per_token: Decimal | None
    #: Tokens (prompt + completion); ``None``: unknown, the context constraint is skipped.
    context_window: int | None = None
    capabilities: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    healthy: bool = True
    #: Why it is not healthy (e.g. its credentials are missing), for the decision's reason.
    unhealthy_reason: str = ""
    circuit_open: bool = False
    #: Observed p95 latency; ``None``: no observations yet (the latency SLO is not applied).
    p95_latency_ms: float | None = None
    #: Key into ``PredictionFacts.p_success``; ``None``: the backend name is the key.
    predictor_profile: str | None = None
    #: Output tokens assumed for the expected cost when the request sets no ``max_tokens``.
    typical_output_tokens: int = 256
    #: Backend-level tenant lists from the backend config (``None``: every tenant).
    allowed_tenants: frozenset[str] | None = None
    denied_tenants: frozenset[str] = frozenset()

    @property
    def priced(self) -> bool:
        return self.input_cost_per_token is not None and self.output_cost_per_token is not None

    @property
    def profile(self) -> str:
        return self.predictor_profile or self.name


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the gateway knows about one request before choosing a backend."""

    tenant: str | None = None
    key_id: str | None = None
    #: Header names lower-cased (the constructor lower-cases them).
    headers: Mapping[str, str] = field(default_factory=dict)
    prompt_text: str = ""
    est_prompt_tokens: int = 0
    max_tokens: int | None = None
    #: Capabilities beyond those implied by ``has_tools`` / ``json_mode`` (e.g. ``vision``).
    required_capabilities: frozenset[str] = frozenset()
    has_tools: bool = False
    json_mode: bool = False
    #: Tags every backend must carry for this request (e.g. ``local_only`` set by tenant
    #: config or a header the gateway trusts).
    required_tags: frozenset[str] = frozenset()
    #: Remaining budget of the tenant/key; ``None``: no budget applies.
    budget_remaining_usd: Decimal | None = None
    #: Backends the caller's key and tenant may use (model access); ``None``: every backend.
    allowed_backends: frozenset[str] | None = None
    #: Share of its limit the tightest applicable budget has left (0..1; ``None``: no budget
    #: applies). ``Policy.budget_aware`` reads it.
    budget_remaining_fraction: float | None = None

    def __post_init__(self) -> None:
        headers = {str(k).lower(): str(v) for k, v in self.headers.items()}
        object.__setattr__(self, "headers", MappingProxyType(headers))

    @property
    def needed_capabilities(self) -> frozenset[str]:
        implied = {"tools"} if self.has_tools else set()
        if self.json_mode:
            implied.add("json_mode")
        return self.required_capabilities | implied


@dataclass(frozen=True, slots=True)
class PredictionFacts:
    """The predictor's answer for one request; pass ``None`` to ``decide`` on timeout/error."""

    #: P(success) per predictor profile (see ``BackendFacts.profile``), each in [0, 1].
    p_success: Mapping[str, float]
    predictor_version: str
    complexity: float | None = None
    #: Per predictor profile, this request's expected answer length over the profile's
    #: typical one (the predictor's neighbours' answers; 2.0 = twice as long). A backend's
    #: expected cost scales its ``typical_output_tokens`` by it; profiles left out: 1.0.
    output_ratio: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, p in self.p_success.items():
            if not 0.0 <= p <= 1.0:  # also rejects NaN
                raise ValueError(f"p_success[{key!r}] = {p!r} is not a probability")
        for key, r in self.output_ratio.items():
            if not 0.0 < r < float("inf"):  # also rejects NaN
                raise ValueError(f"output_ratio[{key!r}] = {r!r} is not a positive ratio")
        object.__setattr__(self, "p_success", MappingProxyType(dict(self.p_success)))
        object.__setattr__(self, "output_ratio", MappingProxyType(dict(self.output_ratio)))
