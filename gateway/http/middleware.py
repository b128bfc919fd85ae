"""ASGI middleware: request ids, the request-body size limit, and per-request metrics.

Written as plain ASGI (no BaseHTTPMiddleware) because it sits on every request's hot path and
must not buffer streamed responses.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import PayloadTooLarge
from gateway.http.errors import unexpected_response
from gateway.metrics import Metrics

log = logging.getLogger("tollgate.errors")

KNOWN_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/healthz",
        "/readyz",
        "/metrics",
    }
)


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        rid_header = (b"x-tollgate-request-id", request_id.encode())
        path = scope["path"]
        endpoint = (
            path if path in KNOWN_PATHS else ("/admin" if path.startswith("/admin") else "other")
        )
        status_holder: dict[str, Any] = {}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                if not any(h[0] == b"x-tollgate-request-id" for h in headers):
                    headers.append(rid_header)
                message = {**message, "headers": headers}
            await send(message)

        declared = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(send_wrapper)
            self.metrics.requests.labels(endpoint, "413").inc()
            return

        body_message: Message | None = None
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            # Buffer the body (bounded by the limit) before the app sees it, so an oversized
            # chunked upload is refused with 413 and never reaches a handler half-read.
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # client disconnected while sending
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_bytes:
                    await self._too_large(send_wrapper)
                    self.metrics.requests.labels(endpoint, "413").inc()
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body_message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal body_message
            if body_message is not None:
                message, body_message = body_message, None
                return message
            return await receive()

        try:
            await self.app(scope, replay, send_wrapper)
        except Exception as exc:
            # answered here, not re-raised: an exception that reaches the server closes the
            # client's keep-alive connection (and the next request on it fails)
            if "status" in status_holder:
                log.error("error after the response started (request %s)", request_id, exc_info=exc)
                return
            await unexpected_response(exc, request_id)(scope, replay, send_wrapper)
        finally:
            self.metrics.requests.labels(endpoint, str(status_holder.get("status", 0))).inc()

    async def _too_large(self, send: Send) -> None:
        err = PayloadTooLarge(
            f"request body is larger than the gateway's limit of {self.max_body_bytes} bytes "
            "(server.max_body_bytes)"
        )
        body = json.dumps(err.body()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": err.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def request_id_of(scope_state: Any) -> str:
    return str(getattr(scope_state, "request_id", "") or uuid.uuid4().hex)
