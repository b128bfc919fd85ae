"""Server-sent-event streaming: relay upstream chunks to the client and account for them.

The upstream is always asked for usage (``stream_options.include_usage``); the usage chunk is
passed to the client only if the client asked for it too. When the stream ends — completed,
failed mid-way, or cut by a client disconnect — the attempt is recorded with the upstream's
usage or, failing that, tokens counted from what was generated so far, so streamed and
non-streamed calls cost the same. ``SSEResponse`` watches for the client going away and then
cancels the relay, which closes the upstream connection (the backend stops generating). A
stream that completed is offered to the judge (``gateway.outcomes.judge``) with the text it carried.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.backends.upstream import UpstreamFailure, json_bytes
from gateway.outcomes import judge
from gateway.serve.dispatch import (
    AttemptClock,
    Dispatcher,
    RequestContext,
    aclose_quietly,
    completion_text,
)

log = logging.getLogger("tollgate.streaming")

DONE = b"data: [DONE]\n\n"


def sse(obj: dict[str, Any]) -> bytes:
    # an upstream chunk the gateway did not change goes out as the bytes it came in as
    return b"data: " + json_bytes(obj) + b"\n\n"


def _carries_output(choice: dict[str, Any]) -> bool:
    return bool(choice.get("delta") or choice.get("text") or choice.get("finish_reason"))


async def relay(
    dispatcher: Dispatcher,
    ctx: RequestContext,
    clock: AttemptClock,
    body: dict[str, Any],
    first: dict[str, Any],
    stream: AsyncIterator[dict[str, Any]],
    *,
    forward_usage: bool,
    on_finish: Callable[[], Awaitable[None]],
) -> AsyncIterator[bytes]:
    """Yield SSE bytes for the stream; record the attempt however the stream ends."""
    text: list[str] = []
    usage: dict[str, Any] | None = None
    status, failure = "ok", None
    try:
        chunk: dict[str, Any] | None = first
        while chunk is not None:
            if chunk.get("usage"):
                usage = chunk["usage"]
            text.append(completion_text(chunk))
            if not forward_usage and "usage" in chunk:
                chunk = {k: v for k, v in chunk.items() if k != "usage"}
                if not any(_carries_output(c) for c in chunk.get("choices") or []):
                    chunk = None  # the usage-only chunk the client did not ask for
            if chunk is not None:
                yield sse(chunk)
            try:
                chunk = await stream.__anext__()
            except StopAsyncIteration:
                chunk = None
        yield DONE
    except UpstreamFailure as exc:
        status, failure = "error", exc
        log.warning("stream from %s failed mid-way: %s", clock.backend.name, exc.error_type)
        yield sse(
            {
                "error": {
                    "message": f"the backend failed mid-stream: {exc.message[:300]}",
                    "type": "upstream_error",
                    "param": None,
                    "code": exc.error_type,
                }
            }
        )
        yield DONE
    except BaseException:
        status = "cancelled"  # the client went away (or the server is stopping)
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await aclose_quietly(stream)
            counted = dispatcher.usage_from(clock.backend, body, usage, "".join(text))
            dispatcher.record(
                ctx, clock, status=status, usage=counted, failure=failure, http_status=200
            )
            judge.consider(dispatcher.rt, ctx, body, "".join(text), ok=status == "ok")
            await dispatcher._breaker(ctx, clock.backend, failure is None)
            await on_finish()


class SSEResponse(StreamingResponse):
    """A streaming response that notices a client disconnect even while waiting upstream."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], headers: dict[str, str]) -> None:
        super().__init__(content, status_code=200, headers=headers)
        self.headers["cache-control"] = "no-cache"
        self.headers["x-accel-buffering"] = "no"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gen = self.body_iterator
        try:
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(watch_disconnect)
                try:
                    # OSError: the client is gone; the relay's finally records what was used
                    with contextlib.suppress(OSError):
                        # Start the relay before anything can fail: once started, closing it
                        # always runs its accounting (recording, settling, upstream close).
                        iterator = gen.__aiter__()
                        first = await iterator.__anext__()
                        await send(
                            {
                                "type": "http.response.start",
                                "status": self.status_code,
                                "headers": self.raw_headers,
                            }
                        )
                        await send({"type": "http.response.body", "body": first, "more_body": True})
                        async for chunk in iterator:
                            await send(
                                {"type": "http.response.body", "body": chunk, "more_body": True}
                            )
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(gen, "aclose", None)
                if aclose is not None:
                    await aclose()
