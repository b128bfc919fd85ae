"""What the policy engine knows of one configured backend (``BackendFacts``), built in one place
for live routing (``gateway.serve.routing``) and for replays (``gateway.analytics``); and which
predictor profile scores a backend. Pure functions of the config and a price: importing this
module loads no runtime, store or HTTP client."""

from __future__ import annotations

from gateway.config import BackendConfig
from gateway.pricing import Price
from policies import BackendFacts


def facts_for(
    backend: BackendConfig,
    price: Price | None,
    *,
    healthy: bool = True,
    unhealthy_reason: str | None = None,
    circuit_open: bool = False,
    p95_latency_ms: float | None = None,
    profile: str | None = None,
) -> BackendFacts:
    """What the policy engine knows of one configured backend (live or in a replay)."""
    return BackendFacts(
        name=backend.name,
        input_cost_per_token=price.input_per_token if price else None,
        output_cost_per_token=price.output_per_token if price else None,
        context_window=backend.context_window,
        capabilities=frozenset(backend.capabilities),
        tags=frozenset(backend.tags),
        healthy=healthy,
        unhealthy_reason=unhealthy_reason or "",
        circuit_open=circuit_open,
        p95_latency_ms=p95_latency_ms,
        predictor_profile=profile or backend.profile,
        typical_output_tokens=backend.typical_output_tokens,
        allowed_tenants=backend.allowed_tenants,
        denied_tenants=backend.denied_tenants,
    )


def learned_profile(backend: BackendConfig, profiles: set[str] | frozenset[str]) -> str | None:
    """The predictor profile a backend is scored with: a profile the predictor learned for this
    very backend from its logged outcomes (named after it, ``train --from-store``) beats the
    configured mapping to a dataset model (``backend.profile``)."""
    return backend.name if backend.name in profiles else backend.profile
