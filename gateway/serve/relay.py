"""Server-sent-event streaming: relay upstream chunks to the client as SSE bytes and report
how the stream ended.

The upstream is always asked for usage (``stream_options.include_usage``); the usage chunk is
passed to the client only if the client asked for it too. However the stream ends — completed,
failed mid-way, or cut by a client disconnect (the HTTP edge cancels the relay, which closes
the upstream connection so the backend stops generating) — the upstream stream is closed and
``on_end`` gets a ``StreamEnd`` (status, failure, reported usage, the text generated so far),
shielded from cancellation: the request's finish step records and settles from it.

Cost where clients look: the chunks that close the answer (those with a ``finish_reason``, and
the usage chunk) are held until the upstream ends; then ``on_end`` runs — the attempt is
recorded and priced — and they go out, the last one carrying what the request cost
(``x_tollgate: {"cost_usd": …}``, also in its ``usage`` when the client asked for usage).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from gateway.backends.upstream import UpstreamFailure, json_bytes
from gateway.serve.dispatch import aclose_quietly
from gateway.serve.usage import completion_text

log = logging.getLogger("tollgate.streaming")

DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class StreamEnd:
    """How a relayed stream ended."""

    status: str  # ok | error (failed mid-way) | cancelled (the client went away)
    failure: UpstreamFailure | None
    usage: dict[str, Any] | None  # the upstream's usage chunk, if one came
    text: str  # everything generated, as far as it got
    finish_reason: str | None = None  # the last finish_reason a choice came with


def sse(obj: dict[str, Any]) -> bytes:
    # an upstream chunk the gateway did not change goes out as the bytes it came in as
    return b"data: " + json_bytes(obj) + b"\n\n"


def _carries_output(choice: dict[str, Any]) -> bool:
    return bool(choice.get("delta") or choice.get("text") or choice.get("finish_reason"))


def _closes(chunk: dict[str, Any]) -> bool:
    """A chunk that ends the answer: a finish_reason, or the (choice-less) usage chunk."""
    choices = chunk.get("choices") or []
    return any(c.get("finish_reason") for c in choices) or (not choices and "usage" in chunk)


def _with_cost(chunk: dict[str, Any], tail: dict[str, Any], forward_usage: bool) -> dict[str, Any]:
    out = {**chunk, "x_tollgate": tail}
    if forward_usage and isinstance(chunk.get("usage"), dict):
        out["usage"] = {**chunk["usage"], "cost_usd": tail.get("cost_usd")}
    return out


async def relay(
    first: dict[str, Any],
    stream: AsyncIterator[dict[str, Any]],
    *,
    backend: str,
    forward_usage: bool,
    on_end: Callable[[StreamEnd], Awaitable[dict[str, Any] | None]],
) -> AsyncIterator[bytes]:
    """Yield SSE bytes for the stream (``first``: its first chunk, already received from
    ``backend``); ``on_end`` runs once however the stream ends, and what it returns after a
    complete stream (the request's cost) goes out on the last chunk."""
    text: list[str] = []
    usage: dict[str, Any] | None = None
    status, failure = "ok", None
    held: list[dict[str, Any]] = []  # the closing chunks, sent once the answer is priced
    finish: str | None = None
    ended = False
    try:
        chunk: dict[str, Any] | None = first
        while chunk is not None:
            if chunk.get("usage"):
                usage = chunk["usage"]
            text.append(completion_text(chunk))
            for choice in chunk.get("choices") or ():
                finish = choice.get("finish_reason") or finish
            if not forward_usage and "usage" in chunk:
                chunk = {k: v for k, v in chunk.items() if k != "usage"}
                if not any(_carries_output(c) for c in chunk.get("choices") or []):
                    chunk = None  # the usage-only chunk the client did not ask for
            if chunk is not None:
                if held or _closes(chunk):
                    held.append(chunk)
                else:
                    yield sse(chunk)
            try:
                chunk = await stream.__anext__()
            except StopAsyncIteration:
                chunk = None
        ended = True
        with anyio.CancelScope(shield=True):
            await aclose_quietly(stream)
            tail = await on_end(StreamEnd("ok", None, usage, "".join(text), finish))
        if tail and held:
            held[-1] = _with_cost(held[-1], tail, forward_usage)
        for chunk in held:
            yield sse(chunk)
        yield DONE
    except UpstreamFailure as exc:
        status, failure = "error", exc
        log.warning("stream from %s failed mid-way: %s", backend, exc.error_type)
        for chunk in held:
            yield sse(chunk)
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
        if not ended:
            status = "cancelled"  # the client went away (or the server is stopping)
        raise
    finally:
        if not ended:
            with anyio.CancelScope(shield=True):
                await aclose_quietly(stream)
                await on_end(StreamEnd(status, failure, usage, "".join(text)))
