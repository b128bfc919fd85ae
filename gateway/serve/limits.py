"""Rate limits: requests and tokens per minute, per API key, per tenant and per backend, in
exact sliding windows shared by every replica (``gateway.state``: one Redis script).

* A request is admitted (``admit``) after routing, in its key's and its tenant's windows at
  once: one request, and the tokens it may use — the prompt estimate plus the output cap of
  every answer — reserved in the token windows. Over a limit it gets a 429 (``RateLimited``,
  OpenAI's ``rate_limit_exceeded`` body) with ``retry-after``; every answer to a limited
  caller carries OpenAI's ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers
  (the scope with the least left: key or tenant).
* Each call to a backend is admitted in that backend's windows (``admit_backend``): a backend
  at its limit is skipped like one whose circuit is open, and when every backend of the
  request is, the request gets a 429.
* The finish step settles every token reservation to the tokens really used (``settle``),
  the way budgets settle a cost reservation to the real cost.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config import BackendConfig
from gateway.errors import RateLimited
from gateway.state import RateScope, RateVerdict

if TYPE_CHECKING:
    from gateway.auth import Principal
    from gateway.runtime import Runtime
    from gateway.serve.context import RequestContext
    from gateway.snapshot import Snapshot

log = logging.getLogger("tollgate.limits")
WINDOW_MS = 60_000
_UNIT = {"requests": "requests per min (RPM)", "tokens": "tokens per min (TPM)"}


@dataclass
class RateHolds:
    """One request's entries in rate windows, until the finish step settles them."""

    hold: str = field(default_factory=lambda: uuid.uuid4().hex)
    estimate: int = 0  # tokens one call may use (prompt estimate + output caps)
    token_scopes: list[str] = field(default_factory=list)  # key / tenant token windows
    backend_holds: list[tuple[str, str, str]] = field(default_factory=list)  # backend, scope, hold
    calls: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False


def needs_tokens(principal: Principal, chain: tuple[BackendConfig, ...]) -> bool:
    """Whether a token limit applies, so the prompt must be counted."""
    return (
        principal.key_limits.tpm is not None
        or principal.tenant_limits.tpm is not None
        or any(b.tpm is not None for b in chain)
    )


def token_estimate(
    snap: Snapshot, ctx: RequestContext, chain: list[BackendConfig], prompt_tokens: int
) -> int:
    """What one call of the request may use at most: its prompt and the output cap of every
    answer."""
    request = ctx.request
    if request.endpoint == "embeddings":
        return prompt_tokens
    out_cap = request.max_tokens
    if out_cap is None:
        out_cap = (
            max((b.max_output_tokens or 0 for b in chain), default=0)
            or snap.config.server.reserve_output_tokens
        )
    return prompt_tokens + int(out_cap) * request.answers


def _caller_scopes(principal: Principal, tokens: int) -> list[tuple[RateScope, str]]:
    """(scope, who for the message) of every limit of the caller's key and tenant."""
    out: list[tuple[RateScope, str]] = []
    key, tenant = principal.key_limits, principal.tenant_limits
    for ident, limits, who in (
        (principal.key_id, key, "API key"),
        (principal.tenant_id, tenant, f"tenant {principal.tenant_name!r}"),
    ):
        kind = "key" if who == "API key" else "tenant"
        if ident is None:
            continue
        if limits.rpm is not None:
            out.append((RateScope(f"{kind}:{ident}:requests", limits.rpm, 1), who))
        if limits.tpm is not None:
            out.append((RateScope(f"{kind}:{ident}:tokens", limits.tpm, tokens), who))
    return out


def _duration(ms: int) -> str:
    """OpenAI's reset format: 20ms, 1.5s, 6m0s."""
    if ms < 1000:
        return f"{max(0, ms)}ms"
    minutes, seconds = divmod(ms / 1000, 60)
    if minutes:
        return f"{int(minutes)}m{seconds:.0f}s"
    return f"{seconds:.3g}s"


def _kind(scope: RateScope) -> str:
    return scope.name.rsplit(":", 1)[1]


def rate_headers(scopes: list[RateScope], verdict: RateVerdict) -> dict[str, str]:
    """``x-ratelimit-*`` of each kind (requests, tokens), from its scope with the least left."""
    headers: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        rows = [
            (scope.limit - used, scope.limit, reset)
            for scope, used, reset in zip(scopes, verdict.used, verdict.reset_ms, strict=True)
            if _kind(scope) == kind
        ]
        if not rows:
            continue
        left, limit, reset = min(rows)
        headers[f"x-ratelimit-limit-{kind}"] = str(limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, left))
        headers[f"x-ratelimit-reset-{kind}"] = _duration(reset)
    return headers


def _refusal(
    scope: RateScope, who: str, used: int, retry_ms: int | None, headers: dict[str, str]
) -> RateLimited:
    kind = _kind(scope)
    if retry_ms is None:  # more than the whole limit: waiting does not help
        return RateLimited(
            f"Request too large for {who} on {_UNIT[kind]}: Limit {scope.limit}, Requested "
            f"{scope.amount}. Lower max_tokens or shorten the prompt.",
            retry_after_ms=WINDOW_MS,
            kind=kind,
            headers=headers,
        )
    return RateLimited(
        f"Rate limit reached for {who} on {_UNIT[kind]}: Limit {scope.limit}, Used {used}, "
        f"Requested {scope.amount}. Please try again in {_duration(retry_ms)}.",
        retry_after_ms=retry_ms,
        kind=kind,
        headers=headers,
    )


async def admit(
    rt: Runtime, ctx: RequestContext, chain: list[BackendConfig], prompt: int, calls: int = 1
) -> None:
    """Admit the request in its key's and tenant's windows, or raise RateLimited. The caller's
    token windows hold what all the ``calls`` it may pay for may use (its answer, escalation
    tiers, a cascade's check and escalation); each backend's window, one call's worth."""
    holds = ctx.rates
    holds.estimate = token_estimate(ctx.snap, ctx, chain, prompt)
    limited = _caller_scopes(ctx.principal, holds.estimate * max(1, calls))
    if not limited:
        return
    scopes = [scope for scope, _ in limited]
    verdict = await rt.state.rate_admit(scopes, holds.hold, WINDOW_MS)
    holds.headers = rate_headers(scopes, verdict)
    if not verdict.admitted:
        assert verdict.refused is not None
        scope, who = limited[verdict.refused]
        rt.metrics.rate_limited.labels(scope.name.split(":", 1)[0], _kind(scope)).inc()
        raise _refusal(
            scope, who, verdict.used[verdict.refused], verdict.retry_after_ms, holds.headers
        )
    holds.token_scopes = [s.name for s in scopes if _kind(s) == "tokens"]


async def admit_backend(rt: Runtime, ctx: RequestContext, backend: BackendConfig) -> int | None:
    """Admit one call to ``backend`` in its windows: None when admitted, else the ms until it
    could be (a backend at its limit is skipped like one whose circuit is open)."""
    holds = ctx.rates
    scopes = []
    if backend.rpm is not None:
        scopes.append(RateScope(f"backend:{backend.name}:requests", backend.rpm, 1))
    if backend.tpm is not None:
        scopes.append(RateScope(f"backend:{backend.name}:tokens", backend.tpm, holds.estimate))
    if not scopes:
        return None
    holds.calls += 1
    hold = f"{holds.hold}:{holds.calls}"
    verdict = await rt.state.rate_admit(scopes, hold, WINDOW_MS)
    if not verdict.admitted:
        assert verdict.refused is not None
        rt.metrics.rate_limited.labels("backend", _kind(scopes[verdict.refused])).inc()
        return verdict.retry_after_ms if verdict.retry_after_ms is not None else WINDOW_MS
    if backend.tpm is not None:
        holds.backend_holds.append((backend.name, scopes[-1].name, hold))
    return None


async def settle(rt: Runtime, ctx: RequestContext) -> None:
    """Settle every token reservation of the request to the tokens it really used (once)."""
    holds = ctx.rates
    if holds.settled:
        return
    holds.settled = True
    try:
        used = sum(ctx.tokens.values())
        for scope in holds.token_scopes:
            await rt.state.rate_settle(scope, holds.hold, used)
        seen: set[str] = set()
        for backend, scope, hold in holds.backend_holds:
            actual = 0 if backend in seen else ctx.tokens.get(backend, 0)
            seen.add(backend)
            await rt.state.rate_settle(scope, hold, actual)
    except Exception:  # the entries leave their windows by themselves, unsettled
        log.exception("rate-limit settlement failed (request %s)", ctx.request_id)


def backends_limited(waits: dict[str, int]) -> RateLimited:
    """The 429 of a request whose every backend is at its rate limit."""
    retry = min(waits.values())
    return RateLimited(
        f"Rate limit reached on every backend for this request ({', '.join(waits)}): their "
        f"requests or tokens per min are used up. Please try again in {_duration(retry)}.",
        retry_after_ms=retry,
        code="rate_limit_exceeded",
    )
