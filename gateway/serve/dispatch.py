"""Calling backends: retries with backoff, the fallback chain and circuit breakers.

A request walks its chain of backends in order. A backend whose circuit is open is skipped,
and so is one at its rate limit (``gateway.serve.limits``: every call is admitted in its
windows).
Each backend gets ``1 + max_retries`` tries for retryable failures (429, 5xx, timeouts,
connection errors; ``retry-after`` honoured), then the next backend is tried. A failure that is
the request's own fault (400/413/422 from upstream) is returned to the client at once: no other
backend would do better. Every attempt is recorded (``gateway.serve.attempts``) as it ends: a
failed one here, an answered one by ``call``. A streamed attempt counts as successful once its
first chunk arrives (the breaker hears it then); the request's finish step
(``gateway.serve.finish``) records the attempt when the stream ends, and tells the breaker
only if it broke mid-way.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from gateway.backends.upstream import UpstreamFailure
from gateway.config import BackendConfig
from gateway.errors import InvalidRequest, NoBackendAvailable, UpstreamError
from gateway.runtime import Runtime
from gateway.serve import limits
from gateway.serve.attempts import begin_attempt, record_attempt
from gateway.serve.context import AttemptClock, RequestContext
from gateway.serve.usage import completion_text, usage_from
from gateway.snapshot import Snapshot

log = logging.getLogger("tollgate.dispatch")

MAX_BACKOFF_S = 8.0
# Upstream statuses caused by the request itself (e.g. its context window is exceeded): the
# next backend is tried, but they do not count toward the backend's circuit breaker.
REQUEST_SPECIFIC = frozenset({400, 413, 422})
MAX_RETRY_AFTER_S = 10.0

Call = Callable[[BackendConfig, dict[str, Any]], Awaitable[dict[str, Any]]]
StreamCall = Callable[[BackendConfig, dict[str, Any]], AsyncIterator[dict[str, Any]]]
Accept = Callable[[str], str | None]


def backoff_s(retry: int, base: float, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER_S)
    cap = min(MAX_BACKOFF_S, base * (2**retry))
    return random.uniform(cap / 2, cap)  # jitter: replicas must not retry in lock-step


async def record_breaker(rt: Runtime, snap: Snapshot, backend: BackendConfig, ok: bool) -> None:
    """Tell the backend's circuit breaker how an attempt went (never raises)."""
    try:
        if await rt.state.breaker_record(backend.name, ok, snap.breaker) and not ok:
            rt.metrics.breaker_open.labels(backend.name).inc()
            log.warning("circuit opened for backend %s", backend.name)
    except Exception:
        log.exception("circuit breaker update failed for %s", backend.name)


async def release_probe(rt: Runtime, backend: BackendConfig) -> None:
    """An attempt that says nothing about the backend's health (a client's mistake, a
    cancelled call) must not keep a half-open backend's probe lease from the next caller:
    a client's error never holds a backend back for others (never raises)."""
    try:
        await rt.state.breaker_release(backend.name)
    except Exception:
        log.debug("probe release failed for %s", backend.name, exc_info=True)


async def aclose_quietly(stream: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception:
        log.debug("error closing upstream stream", exc_info=True)


class Dispatcher:
    """The backend calls of one request."""

    def __init__(self, runtime: Runtime, ctx: RequestContext) -> None:
        self.rt = runtime
        self.ctx = ctx

    async def _allowed(self, backend: BackendConfig) -> bool:
        # about to call it: after a cool-down only one caller across the replicas probes it
        return bool(await self.rt.allowed(backend.name, self.ctx.snap.breaker.probe_lease_s))

    async def attempts(
        self,
        chain: list[BackendConfig],
        start: Callable[[BackendConfig, AttemptClock], Awaitable[Any]],
    ) -> tuple[AttemptClock, Any]:
        """Run ``start`` over the chain with retries; return the first success and its clock.

        ``start`` raises UpstreamFailure on failure; it records successful attempts itself
        (non-streaming) or leaves them to the finish step. Failed attempts are recorded here.
        """
        ctx, rt = self.ctx, self.rt
        last: UpstreamFailure | None = None
        skipped: list[str] = []
        failed: dict[str, str] = {}  # backend -> its last failure, for the client's error
        rate_limited: dict[str, int] = {}  # backend -> ms until its rate window has room
        for backend in chain:
            if not await self._allowed(backend):
                skipped.append(backend.name)
                continue
            for retry in range(backend.max_retries + 1):
                wait = await limits.admit_backend(rt, ctx, backend)
                if wait is not None:  # at its rate limit: skipped like an open circuit
                    rate_limited[backend.name] = wait
                    await release_probe(rt, backend)
                    break
                clock = AttemptClock(backend, ctx.attempts + 1, ctx.last_attempt_id)
                begin_attempt(rt, ctx, clock)  # journalled: a kill -9 mid-call loses no row
                try:
                    result = await start(backend, clock)
                except asyncio.CancelledError:
                    # the client went away (or the server is stopping) mid-call: the upstream
                    # may still bill it, so the attempt is recorded, never against the backend
                    gone = UpstreamFailure(
                        "the request was cancelled before the backend answered",
                        status=499,
                        error_type="client_disconnected",
                        retryable=False,
                    )
                    record_attempt(rt, ctx, clock, status="cancelled", usage=None, failure=gone)
                    await asyncio.shield(release_probe(rt, backend))
                    raise
                except UpstreamFailure as failure:
                    record_attempt(rt, ctx, clock, status="error", usage=None, failure=failure)
                    if failure.client_fault:
                        await release_probe(rt, backend)
                        raise InvalidRequest(
                            f"backend {backend.name} rejected the request: {failure.message}",
                            code=failure.error_type,
                        ) from None
                    if failure.status not in REQUEST_SPECIFIC:
                        await record_breaker(rt, ctx.snap, backend, False)  # the backend's fault
                    else:
                        await release_probe(rt, backend)
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
                await record_breaker(rt, ctx.snap, backend, True)
                return clock, result
        if last is None and rate_limited:
            raise limits.backends_limited(rate_limited)
        if last is None:
            raise NoBackendAvailable(
                "every backend for this request is cooling down after repeated failures "
                f"(circuit open: {', '.join(skipped)}); retry shortly",
                headers={"retry-after": str(int(ctx.snap.breaker.cooldown_s))},
            )
        status = 504 if last.error_type == "timeout" else 502
        if last.status in (400, 429):
            status = last.status  # e.g. the prompt is too long for every backend in the chain
        which = "; ".join(f"{name}: {why}" for name, why in failed.items())
        if skipped:
            which += f"; circuit open: {', '.join(skipped)}"
        if rate_limited:
            which += f"; at rate limit: {', '.join(rate_limited)}"
        raise UpstreamError(
            f"all {ctx.attempts} attempts failed ({which}); last error from upstream "
            f"({last.error_type}, status {last.status}): {last.message[:500]}",
            status=status,
            code=last.error_type,
        )

    async def call(
        self, chain: list[BackendConfig], op: Call, accept: Accept | None = None
    ) -> tuple[BackendConfig, dict[str, Any], str | None]:
        """Non-streaming call: the backend that answered, its OpenAI JSON, and — when
        ``accept`` (a validator over the answer text) rejects the answer — the reason."""
        ctx, rt = self.ctx, self.rt
        request = ctx.request

        async def start(
            backend: BackendConfig, clock: AttemptClock
        ) -> tuple[dict[str, Any], str | None]:
            resp = await op(backend, request.body)
            text = completion_text(resp)
            rejection = accept(text) if accept is not None else None
            failure = None
            if rejection is not None:
                ctx.rejections += 1
                failure = UpstreamFailure(
                    rejection, status=200, error_type="rejected_by_validator", retryable=False
                )
            usage = usage_from(
                rt.caller,
                backend,
                resp.get("usage"),
                text,
                lambda: request.count_prompt(rt.caller, backend),
            )
            record_attempt(
                rt,
                ctx,
                clock,
                status="rejected" if rejection else "ok",
                usage=usage,
                failure=failure,
                http_status=200,
            )
            return resp, rejection

        clock, (resp, rejection) = await self.attempts(chain, start)
        return clock.backend, resp, rejection

    async def open_stream(
        self, chain: list[BackendConfig], op: StreamCall
    ) -> tuple[AttemptClock, dict[str, Any], AsyncIterator[dict[str, Any]]]:
        """Open a stream on the first backend that yields a first chunk."""
        body = self.ctx.request.body

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

        clock, (first, stream) = await self.attempts(chain, start)
        return clock, first, stream
