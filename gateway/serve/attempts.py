"""Recording a request's work: its task row, and one row per attempt — priced from the
attempt's usage with the request's snapshot prices — through the record writer, with the
attempt's metrics and latency observation."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gateway.backends.upstream import UpstreamFailure
from gateway.request_record import note_attempt
from gateway.runtime import Runtime
from gateway.serve.context import AttemptClock, RequestContext
from gateway.serve.usage import Usage
from gateway.store.keys import now


def start_task(rt: Runtime, ctx: RequestContext) -> None:
    """The task row (an upsert: a client task spans requests)."""
    rt.writer.submit_task(
        {
            "id": ctx.task_id,
            "tenant_id": ctx.principal.tenant_id,
            "external_id": ctx.task_ref,
            "created_at": ctx.started_at,
            "last_seen_at": ctx.started_at,
        }
    )


def attempt_row(
    ctx: RequestContext,
    clock: AttemptClock,
    *,
    status: str,
    usage: Usage | None,
    cost: Decimal | None,
    latency_ms: float | None,
) -> dict[str, Any]:
    """The attempt's row as the store keeps it."""
    return {
        "id": clock.id,
        "request_id": ctx.request_id,
        "task_id": ctx.task_id,
        "attempt": clock.number,
        "tenant_id": ctx.principal.tenant_id,
        "key_id": ctx.principal.key_id,
        "endpoint": ctx.endpoint,
        "policy": ctx.policy,
        "backend": clock.backend.name,
        "model": clock.backend.model,
        "status": status,
        "error_type": None,
        "http_status": None,
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
        "usage_source": usage.source if usage else None,
        "cost_usd": cost,
        "latency_ms": latency_ms,
        "ttft_ms": clock.ttft_ms,
        "streamed": ctx.streamed,
        "fallback_of": clock.fallback_of,
        "decision": ctx.decision if clock.number == 1 else ctx.attempt_note,
        "created_at": clock.created_at,
        "finished_at": now(),
        "cache_hit": False,  # a hit is recorded by gateway.serve.cache
        "cache_saved_usd": None,
    }


def begin_attempt(rt: Runtime, ctx: RequestContext, clock: AttemptClock) -> None:
    """An upstream call is about to start: journal what to record should this replica die
    before the attempt ends (an ``interrupted`` attempt, cost unknown: the upstream may have
    been paid). The attempt's final row, of the same id, replaces it."""
    stub = attempt_row(ctx, clock, status="interrupted", usage=None, cost=None, latency_ms=None)
    stub["error_type"] = "gateway_died"
    rt.writer.begin_attempt(stub)


def record_attempt(
    rt: Runtime,
    ctx: RequestContext,
    clock: AttemptClock,
    *,
    status: str,
    usage: Usage | None,
    failure: UpstreamFailure | None = None,
    http_status: int | None = None,
) -> Decimal | None:
    """Record one finished attempt; returns its cost (None: the backend is unpriced)."""
    backend = clock.backend
    price = ctx.snap.price(backend)
    cost: Decimal | None
    if usage is None:
        cost = Decimal(0)  # no tokens were reported for a failed attempt
    elif price is None:
        cost = None
        ctx.unpriced = True
    else:
        cost = price.cost_of(usage.prompt_tokens, usage.completion_tokens, usage.reported)
    if cost is not None:
        ctx.total_cost += cost
    if usage is not None:  # what token rate limits settle to
        used = usage.prompt_tokens + usage.completion_tokens
        ctx.tokens[backend.name] = ctx.tokens.get(backend.name, 0) + used
    latency_ms = clock.elapsed_ms()
    row = attempt_row(ctx, clock, status=status, usage=usage, cost=cost, latency_ms=latency_ms)
    row["error_type"] = failure.error_type if failure else None
    row["http_status"] = http_status if failure is None else failure.status
    row["tags"] = ",{},".format(",".join(sorted(ctx.request.tags))) if ctx.request.tags else None
    rt.writer.submit_attempt(row)
    note_attempt(row)  # the request's access line and trace are written from its rows
    ctx.attempts += 1
    ctx.last_attempt_id = clock.id
    if status in ("ok", "rejected"):
        rt.latency.observe(backend.name, latency_ms)
    m = rt.metrics
    m.attempts.labels(backend.name, status).inc()
    m.latency.labels(backend.name).observe(latency_ms / 1000)
    if clock.ttft_ms is not None:
        m.ttft.labels(backend.name).observe(clock.ttft_ms / 1000)
    if usage is not None:
        m.tokens.labels(backend.name, "prompt").inc(usage.prompt_tokens)
        m.tokens.labels(backend.name, "completion").inc(usage.completion_tokens)
    if cost:
        m.cost.labels(backend.name).inc(float(cost))
    if failure is not None:
        m.errors.labels(backend.name, failure.error_type).inc()
    return cost
