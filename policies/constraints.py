"""Hard constraints: which candidates a policy may use for a request, and the expected cost.

A candidate that fails a constraint is removed before the objective chooses, and the first
failing constraint (in ``decision.CONSTRAINT_ORDER``) is recorded with a detail sentence.
"""

from __future__ import annotations

from decimal import Decimal

from policies.facts import BackendFacts, RequestFacts
from policies.schema import Policy


def expected_output_tokens(
    backend: BackendFacts, request: RequestFacts, ratio: float | None = None
) -> int:
    """``max_tokens`` when the request sets it (an upper bound), else the backend's typical
    answer length, scaled by ``ratio`` (the predictor's ``output_ratio`` of the backend's
    profile for this request; at least one token) when there is one."""
    if request.max_tokens is not None:
        return request.max_tokens
    if ratio is None:
        return backend.typical_output_tokens
    return max(1, round(backend.typical_output_tokens * ratio))


def expected_cost(
    backend: BackendFacts, request: RequestFacts, ratio: float | None = None
) -> Decimal | None:
    """USD for one attempt: prompt tokens * input price + output tokens * output price
    (:func:`expected_output_tokens`).

    ``None`` when the backend is unpriced (either price unknown): unknown, never free.
    """
    if backend.input_cost_per_token is None or backend.output_cost_per_token is None:
        return None
    return (
        Decimal(request.est_prompt_tokens) * backend.input_cost_per_token
        + Decimal(expected_output_tokens(backend, request, ratio)) * backend.output_cost_per_token
    )


def _fmt(value: Decimal) -> str:
    return f"${value:.6f}"


def removal(
    policy: Policy,
    request: RequestFacts,
    name: str,
    backend: BackendFacts | None,
    cost: Decimal | None,
) -> tuple[str, str] | None:
    """The first constraint that removes ``name`` as ``(code, detail)``, or ``None``."""
    if backend is None:
        return "unknown_backend", "not among the gateway's configured backends"
    c = policy.constraints
    tenant = request.tenant
    if backend.allowed_tenants is not None and tenant not in backend.allowed_tenants:
        return "tenant", f"backend is not open to tenant {tenant!r}"
    if tenant is not None and tenant in backend.denied_tenants:
        return "tenant", f"backend denies tenant {tenant!r}"
    if request.allowed_backends is not None and name not in request.allowed_backends:
        return "tenant", "not among the backends the caller's API key or tenant may use"
    access = c.tenants.get(tenant) if tenant is not None else None
    if access is not None:
        if access.allow is not None and name not in access.allow:
            return "tenant", f"not in the allow list of tenant {tenant!r}"
        if name in access.deny:
            return "tenant", f"in the deny list of tenant {tenant!r}"
    missing_tags = (c.require_tags | request.required_tags) - backend.tags
    if missing_tags:
        return "tags", f"lacks required tag(s) {', '.join(sorted(missing_tags))}"
    forbidden = c.forbid_tags & backend.tags
    if forbidden:
        return "tags", f"carries forbidden tag(s) {', '.join(sorted(forbidden))}"
    missing_caps = (c.require_capabilities | request.needed_capabilities) - backend.capabilities
    if missing_caps:
        return "capabilities", f"lacks {', '.join(sorted(missing_caps))}"
    if backend.context_window is not None:
        needed = request.est_prompt_tokens + (request.max_tokens or 0)
        if needed > backend.context_window:
            return (
                "context_window",
                f"needs {needed} tokens (prompt + max_tokens) > window {backend.context_window}",
            )
    if not backend.healthy:
        return "health", backend.unhealthy_reason or "backend is unhealthy"
    if backend.circuit_open:
        return "circuit", "circuit breaker is open"
    slo = c.latency_slo_ms
    if slo is not None and backend.p95_latency_ms is not None and backend.p95_latency_ms > slo:
        return "latency_slo", f"observed p95 {backend.p95_latency_ms:.0f} ms > SLO {slo:.0f} ms"
    if cost is None and c.unpriced == "exclude":
        return "unpriced", "backend has no price and the policy excludes unpriced backends"
    if c.max_cost_usd is not None:
        if cost is None:
            return "max_cost", "unpriced: cannot show expected cost <= max_cost_usd"
        if cost > c.max_cost_usd:
            return "max_cost", f"expected {_fmt(cost)} > max_cost_usd {_fmt(c.max_cost_usd)}"
    budget = request.budget_remaining_usd
    if budget is not None:
        if cost is None:
            return "budget", "unpriced: cannot show expected cost fits the remaining budget"
        if cost > budget:
            return "budget", f"expected {_fmt(cost)} > remaining budget {_fmt(budget)}"
    return None
