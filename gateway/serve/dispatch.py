"""Calling backends: retries with backoff, the fallback chain, circuit breakers, and recording
every attempt (priced from real usage) through the record writer.

A request walks its chain of backends in order. A backend whose circuit is open is skipped.
Each backend gets ``1 + max_retries`` tries for retryable failures (429, 5xx, timeouts,
connection errors; ``retry-after`` honoured), then the next backend is tried. A failure that is
the request's own fault (400/413/422 from upstream) is returned to the client at once: no other
backend would do better. A streamed attempt counts as successful once its first chunk arrives;
after that the relay in ``gateway.serve.relay`` finishes and records it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from gateway.auth import Principal
from gateway.backends.upstream import UpstreamFailure
from gateway.config import BackendConfig
from gateway.errors import InvalidRequest, NoBackendAvailable, UpstreamError
from gateway.request_record import note_attempt
from gateway.runtime import Runtime
from gateway.snapshot import Snapshot
from gateway.store.keys import now

log = logging.getLogger("tollgate.dispatch")

MAX_BACKOFF_S = 8.0
# Upstream statuses caused by the request itself (e.g. its context window is exceeded): the
# next backend is tried, but they do not count toward the backend's circuit breaker.
REQUEST_SPECIFIC = frozenset({400, 413, 422})
MAX_RETRY_AFTER_S = 10.0
TASK_NAMESPACE = uuid.UUID("6f1f5f0e-8c7a-4d7e-9a55-0b1c7a3f2d10")


def task_uuid(tenant_id: str, external_id: str) -> str:
    """Internal task id: stable per (tenant, client task id), so no lookup is needed."""
    return uuid.uuid5(TASK_NAMESPACE, f"{tenant_id}\x00{external_id}").hex


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    source: str  # "upstream" | "counted"


@dataclass
class RequestContext:
    """One client request: identity, task, the config snapshot it started with (and keeps to
    its end), and the running total of its attempts."""

    principal: Principal
    endpoint: str
    policy: str | None
    streamed: bool
    snap: Snapshot
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    task_ref: str = ""
    task_id: str = ""
    started_at: datetime = field(default_factory=now)
    total_cost: Decimal = Decimal(0)
    unpriced: bool = False
    attempts: int = 0
    last_attempt_id: str | None = None
    decision: dict[str, Any] | None = None  # the policy decision, stored with the 1st attempt
    rejections: int = 0

    def __post_init__(self) -> None:
        if not self.task_ref:
            self.task_ref = self.request_id
        self.task_id = task_uuid(self.principal.tenant_id, self.task_ref)


@dataclass
class AttemptClock:
    """Timing and identity of one attempt in flight."""

    backend: BackendConfig
    number: int
    fallback_of: str | None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: datetime = field(default_factory=now)
    t0: float = field(default_factory=time.perf_counter)
    ttft_ms: float | None = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000


def backoff_s(retry: int, base: float, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER_S)
    cap = min(MAX_BACKOFF_S, base * (2**retry))
    return random.uniform(cap / 2, cap)  # jitter: replicas must not retry in lock-step


class Dispatcher:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    # -- recording ---------------------------------------------------------------------------
    def start_task(self, ctx: RequestContext) -> None:
        self.rt.writer.submit_task(
            {
                "id": ctx.task_id,
                "tenant_id": ctx.principal.tenant_id,
                "external_id": ctx.task_ref,
                "created_at": ctx.started_at,
                "last_seen_at": ctx.started_at,
            }
        )

    def record(
        self,
        ctx: RequestContext,
        clock: AttemptClock,
        *,
        status: str,
        usage: Usage | None,
        failure: UpstreamFailure | None = None,
        http_status: int | None = None,
    ) -> Decimal | None:
        backend = clock.backend
        price = ctx.snap.price(backend)
        cost: Decimal | None
        if usage is None:
            cost = Decimal(0)  # no tokens were reported for a failed attempt
        elif price is None:
            cost = None
            ctx.unpriced = True
        else:
            cost = price.cost(usage.prompt_tokens, usage.completion_tokens)
        if cost is not None:
            ctx.total_cost += cost
        latency_ms = clock.elapsed_ms()
        row = {
            "id": clock.id,
            "request_id": ctx.request_id,
            "task_id": ctx.task_id,
            "attempt": clock.number,
            "tenant_id": ctx.principal.tenant_id,
            "key_id": ctx.principal.key_id,
            "endpoint": ctx.endpoint,
            "policy": ctx.policy,
            "backend": backend.name,
            "model": backend.model,
            "status": status,
            "error_type": failure.error_type if failure else None,
            "http_status": http_status if failure is None else failure.status,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "usage_source": usage.source if usage else None,
            "cost_usd": cost,
            "latency_ms": latency_ms,
            "ttft_ms": clock.ttft_ms,
            "streamed": ctx.streamed,
            "fallback_of": clock.fallback_of,
            "decision": ctx.decision if clock.number == 1 else None,
            "created_at": clock.created_at,
            "finished_at": now(),
        }
        self.rt.writer.submit_attempt(row)
        note_attempt(row)  # the request's access line and trace are written from its rows
        ctx.attempts += 1
        ctx.last_attempt_id = clock.id
        if status in ("ok", "rejected"):
            self.rt.latency.observe(backend.name, latency_ms)
        m = self.rt.metrics
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

    # -- usage -------------------------------------------------------------------------------
    def usage_from(
        self, backend: BackendConfig, body: dict[str, Any], reported: Any, completion_text: str
    ) -> Usage:
        """Upstream-reported usage when present, else counted with the backend's tokenizer."""
        # Some adapters report an all-zero usage when the upstream sent none: treat that as
        # missing whenever something was generated, or streamed and plain calls would differ.
        if (
            isinstance(reported, dict)
            and reported.get("prompt_tokens") is not None
            and (
                reported.get("prompt_tokens")
                or reported.get("completion_tokens")
                or not completion_text
            )
        ):
            return Usage(
                int(reported.get("prompt_tokens") or 0),
                int(reported.get("completion_tokens") or 0),
                "upstream",
            )
        caller = self.rt.caller
        if "messages" in body:
            prompt = caller.count_message_tokens(backend, body["messages"])
        else:
            raw = body.get("prompt", body.get("input", ""))
            prompt = caller.count_text_tokens(backend, raw if isinstance(raw, str) else str(raw))
        return Usage(prompt, caller.count_text_tokens(backend, completion_text), "counted")

    # -- the attempt loop --------------------------------------------------------------------
    async def _breaker(self, ctx: RequestContext, backend: BackendConfig, ok: bool) -> None:
        try:
            if await self.rt.state.breaker_record(backend.name, ok, ctx.snap.breaker) and not ok:
                self.rt.metrics.breaker_open.labels(backend.name).inc()
                log.warning("circuit opened for backend %s", backend.name)
        except Exception:
            log.exception("circuit breaker update failed for %s", backend.name)

    async def _allowed(self, backend: BackendConfig) -> bool:
        return bool(await self.rt.allowed(backend.name))

    async def attempts(
        self,
        ctx: RequestContext,
        chain: list[BackendConfig],
        start: Callable[[BackendConfig, AttemptClock], Awaitable[Any]],
    ) -> tuple[AttemptClock, Any]:
        """Run ``start`` over the chain with retries; return the first success and its clock.

        ``start`` raises UpstreamFailure on failure; it records successful attempts itself
        (non-streaming) or leaves them to the stream relay. Failed attempts are recorded here.
        """
        last: UpstreamFailure | None = None
        skipped: list[str] = []
        failed: dict[str, str] = {}  # backend -> its last failure, for the client's error
        for backend in chain:
            if not await self._allowed(backend):
                skipped.append(backend.name)
                continue
            for retry in range(backend.max_retries + 1):
                clock = AttemptClock(backend, ctx.attempts + 1, ctx.last_attempt_id)
                try:
                    result = await start(backend, clock)
                except UpstreamFailure as failure:
                    self.record(ctx, clock, status="error", usage=None, failure=failure)
                    if failure.client_fault:
                        raise InvalidRequest(
                            f"backend {backend.name} rejected the request: {failure.message}",
                            code=failure.error_type,
                        ) from None
                    if failure.status not in REQUEST_SPECIFIC:
                        await self._breaker(ctx, backend, False)  # the backend's fault
                    last = failure
                    failed[backend.name] = f"{failure.error_type}, status {failure.status}"
                    if not failure.retryable or retry == backend.max_retries:
                        break
                    if (
                        failure.retry_after_s is not None
                        and failure.retry_after_s > MAX_RETRY_AFTER_S
                    ):
                        break  # a long cool-down: better served by the next backend
                    if not await self._allowed(backend):
                        break
                    await asyncio.sleep(
                        backoff_s(retry, backend.retry_backoff_s, failure.retry_after_s)
                    )
                    continue
                await self._breaker(ctx, backend, True)
                return clock, result
        if last is None:
            raise NoBackendAvailable(
                "every backend for this request is cooling down after repeated failures "
                f"(circuit open: {', '.join(skipped)}); retry shortly",
                headers={"retry-after": str(int(ctx.snap.breaker.cooldown_s))},
            )
        status = 504 if last.error_type == "timeout" else 502
        if last.status in (400, 429):
            status = last.status  # e.g. the prompt is too long for every backend in the chain
        tried = ctx.attempts
        which = "; ".join(f"{name}: {why}" for name, why in failed.items())
        if skipped:
            which += f"; circuit open: {', '.join(skipped)}"
        raise UpstreamError(
            f"all {tried} attempts failed ({which}); last error from upstream "
            f"({last.error_type}, status {last.status}): {last.message[:500]}",
            status=status,
            code=last.error_type,
        )

    async def call(
        self,
        ctx: RequestContext,
        chain: list[BackendConfig],
        body: dict[str, Any],
        op: Callable[[BackendConfig, dict[str, Any]], Awaitable[dict[str, Any]]],
        accept: Callable[[str], str | None] | None = None,
    ) -> tuple[BackendConfig, dict[str, Any], str | None]:
        """Non-streaming call: the backend that answered, its OpenAI JSON, and — when
        ``accept`` (a validator over the answer text) rejects the answer — the reason."""

        async def start(
            backend: BackendConfig, clock: AttemptClock
        ) -> tuple[dict[str, Any], str | None]:
            resp = await op(backend, body)
            text = completion_text(resp)
            rejection = accept(text) if accept is not None else None
            failure = None
            if rejection is not None:
                ctx.rejections += 1
                failure = UpstreamFailure(
                    rejection, status=200, error_type="rejected_by_validator", retryable=False
                )
            self.record(
                ctx,
                clock,
                status="rejected" if rejection else "ok",
                usage=self.usage_from(backend, body, resp.get("usage"), text),
                failure=failure,
                http_status=200,
            )
            return resp, rejection

        clock, (resp, rejection) = await self.attempts(ctx, chain, start)
        return clock.backend, resp, rejection

    async def open_stream(
        self,
        ctx: RequestContext,
        chain: list[BackendConfig],
        body: dict[str, Any],
        op: Callable[[BackendConfig, dict[str, Any]], AsyncIterator[dict[str, Any]]],
    ) -> tuple[AttemptClock, dict[str, Any], AsyncIterator[dict[str, Any]]]:
        """Open a stream on the first backend that yields a first chunk."""

        async def start(
            backend: BackendConfig, clock: AttemptClock
        ) -> tuple[dict[str, Any], AsyncIterator[dict[str, Any]]]:
            stream = op(backend, body)
            try:
                first = await stream.__anext__()
            except StopAsyncIteration:
                raise UpstreamFailure(
                    "the backend closed the stream without sending anything",
                    status=502,
                    error_type="empty_stream",
                    retryable=True,
                ) from None
            except BaseException:
                await aclose_quietly(stream)
                raise
            clock.ttft_ms = clock.elapsed_ms()
            return first, stream

        clock, (first, stream) = await self.attempts(ctx, chain, start)
        return clock, first, stream


async def aclose_quietly(stream: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception:
        log.debug("error closing upstream stream", exc_info=True)


def completion_text(resp: dict[str, Any]) -> str:
    """All generated text of a response or a stream chunk: content, text, tool-call arguments."""
    parts: list[str] = []
    for choice in resp.get("choices") or []:
        message = choice.get("message") or choice.get("delta") or {}
        if isinstance(message.get("content"), str):
            parts.append(message["content"])
        for call in message.get("tool_calls") or []:
            fn = (call or {}).get("function") or {}
            parts.append(str(fn.get("name") or "") + str(fn.get("arguments") or ""))
        if isinstance(choice.get("text"), str):
            parts.append(choice["text"])
    return "".join(parts)
