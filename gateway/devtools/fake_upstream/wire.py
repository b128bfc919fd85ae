"""The fake upstream's bytes on the wire: JSON responses, OpenAI-shaped errors, and the SSE
engine that paces tokens, stalls or drops a stream on request, and notices a client that
leaves mid-stream (raw ASGI, no framework)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from gateway.devtools.fake_upstream.state import FakeState

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 32 * 1024 * 1024
_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
# stream event kinds; the pacing unit is a token position (the n choices of one go together)
CONTROL, NEW_TOKEN, SAME_TOKEN = 0, 1, 2

_ERROR_KINDS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("not_found_error", "model_not_found"),
    408: ("timeout_error", "timeout"),
    409: ("conflict_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", "unprocessable_entity"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", "internal_error"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
    504: ("timeout_error", "gateway_timeout"),
}


class DropConnection(Exception):
    """Raised inside a stream to make uvicorn close the TCP connection (drop_after_tokens)."""


async def send_json(
    send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(payload).encode()
    hdrs = [*_JSON_HEADERS, (b"content-length", str(len(data)).encode())]
    if headers:
        hdrs.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": data})


async def send_error(
    send: Send, status: int, message: str, param: str | None, retry_after_s: int
) -> None:
    """An OpenAI-shaped error; a 429 carries ``retry-after``."""
    kind, code = _ERROR_KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", str(status))
    )
    extra: list[tuple[bytes, bytes]] = []
    if status == 429:
        extra.append((b"retry-after", str(retry_after_s).encode()))
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    await send_json(send, status, body, extra)


async def sleep_ms(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000.0)


async def _wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)
    return event.is_set()


async def wait_disconnect(receive: Receive, timeout_s: float) -> bool:
    """Wait until the client leaves (True) or ``timeout_s`` passes (False)."""

    async def until_gone() -> None:
        for _ in range(64):
            if (await receive())["type"] == "http.disconnect":
                return

    try:
        await asyncio.wait_for(until_gone(), timeout_s)
    except TimeoutError:
        return False
    return True


async def stream(
    state: FakeState,
    events: Iterator[tuple[int, dict[str, Any]]],
    cfg: dict[str, Any],
    receive: Receive,
    send: Send,
) -> None:
    """Send ``events`` as SSE, pacing tokens, noticing a client that leaves mid-stream."""
    stats = state.stats
    stats["streams_started"] += 1
    gone = asyncio.Event()
    finished = False

    async def watch() -> None:
        for _ in range(64):  # bounded; a request body is already fully read
            message = await receive()
            if message["type"] == "http.disconnect":
                if not finished:
                    gone.set()
                return

    watcher = asyncio.create_task(watch())
    stall = cfg["stall_after_tokens"]
    drop = cfg["drop_after_tokens"]
    interval = float(cfg["token_interval_ms"])
    try:
        await sleep_ms(cfg["latency_ms"])
        if gone.is_set():
            stats["streams_aborted"] += 1
            return
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        positions = 0  # token positions sent
        for kind, event in events:
            if kind == NEW_TOKEN:
                if positions and interval:
                    await sleep_ms(interval)
                if stall is not None and positions >= stall:
                    await _wait_event(gone, float(cfg["hang_max_s"]))
                if drop is not None and positions >= drop:
                    stats["streams_dropped"] += 1
                    raise DropConnection
                positions += 1
            if gone.is_set():
                stats["streams_aborted"] += 1
                return
            data = b"data: " + json.dumps(event).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": data, "more_body": True})
        if gone.is_set():
            stats["streams_aborted"] += 1
            return
        finished = True
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        stats["streams_completed"] += 1
    finally:
        finished = True
        watcher.cancel()
