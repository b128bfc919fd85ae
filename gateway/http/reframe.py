"""Other APIs on the chat pipeline: serve a chat body through ``gateway.serve.pipeline``, read a
streamed answer's SSE bytes back as OpenAI chat chunks, and hand another API's framing
(Anthropic Messages, Responses) to the client — the relay underneath keeps its accounting
(usage, recording, budget settling), and closing the re-framed stream closes the relay."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

from fastapi import Request

from gateway.auth import Principal
from gateway.http.sse import SSEResponse
from gateway.serve.pipeline import Answer, Pipeline, Stream


class MidStreamError(Exception):
    """The backend failed after the stream started (the relay's error event)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("message") or "the backend failed mid-stream"))
        self.error = error


async def serve_chat(
    request: Request, principal: Principal, body: dict[str, Any]
) -> Answer | Stream:
    """The chat pipeline's answer (or stream) for ``body``, as for /v1/chat/completions."""
    pipeline: Pipeline = request.app.state.pipeline
    return await pipeline.serve(
        principal,
        "chat",
        body,
        dict(request.headers),
        request.state.request_id,
        streamable=True,
    )


async def chat_chunks(body: AsyncIterable[Any]) -> AsyncIterator[dict[str, Any]]:
    """OpenAI chat chunks from the relay's SSE bytes (events may be split or batched)."""
    buffer, done, error = b"", False, None
    async for piece in body:
        if done:
            continue  # drain: the relay finishes (and records) once its generator is exhausted
        buffer += piece if isinstance(piece, bytes) else str(piece).encode()
        while b"\n\n" in buffer and not done:
            event, buffer = buffer.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    break
                obj = json.loads(payload)
                if isinstance(obj, dict) and "error" in obj and "choices" not in obj:
                    error = MidStreamError(obj["error"] or {})  # raised once the relay is done
                    continue
                yield obj
    if error is not None:
        raise error


def reframe(
    stream: Stream,
    events: Callable[[AsyncIterator[dict[str, Any]]], AsyncIterator[bytes]],
) -> SSEResponse:
    """A streamed answer re-framed by ``events`` (chat chunks → another API's SSE bytes)."""
    inner = stream.chunks

    async def body() -> AsyncIterator[bytes]:
        try:
            async for out in events(chat_chunks(inner)):
                yield out
        finally:
            close = getattr(inner, "aclose", None)
            if close is not None:
                await close()  # the relay records the attempt and settles the budget

    return SSEResponse(body(), headers=dict(stream.headers))
