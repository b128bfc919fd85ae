"""What is written when a request ends: its access-log line and, when tracing is on, its trace.

``ObserveMiddleware`` (plain ASGI, inside ``GatewayMiddleware``) opens a ``RequestRecord`` per
request, collects the attempt rows the pipeline notes into it, and when the response is done —
a streamed one included, after its last chunk and its accounting — writes one JSON line to the
``tollgate.access`` logger (stderr; ``server.access_log: false`` turns it off, read per request
so a reload applies) and hands the record to ``gateway.telemetry`` when tracing is configured.

The line has ids, tenant, policy, backend, status, attempts, tokens, cost, latency and error
type; never a key, a prompt or an answer (it is built from the attempt rows and the error
code, and the request body is never read for it).
"""

from __future__ import annotations

import json
import logging
import sys
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.logs import RedactingFilter
from gateway.request_record import RequestRecord, bind, unbind
from gateway.telemetry import Tracing

access_log = logging.getLogger("tollgate.access")
log = logging.getLogger("tollgate.observe")

# probes and documentation assets: no access line, no trace
QUIET_PATHS = ("/healthz", "/readyz", "/metrics", "/docs-static/", "/favicon.ico")
MODEL_PATHS = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages", "/v1/responses"}
)
MAX_ERROR_BODY = 16_384


def configure_access_log() -> None:
    """One bare JSON line per request on stderr (not the root handler's prefixed format)."""
    if any(getattr(h, "_tollgate_access", False) for h in access_log.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(RedactingFilter())
    handler._tollgate_access = True  # type: ignore[attr-defined]
    access_log.addHandler(handler)
    access_log.propagate = False
    access_log.setLevel(logging.INFO)


def _access_log_on(scope: Scope) -> bool:
    runtime = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
    server = getattr(getattr(runtime, "config", None), "server", None)
    return bool(getattr(server, "access_log", True))


def _error_type(body: bytes) -> str | None:
    """The ``code`` (else ``type``) of an OpenAI- or Anthropic-shaped error body."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        value = err.get("code") or err.get("type")
        return str(value) if value is not None else None
    return None


def access_line(record: RequestRecord, latency_ms: float, task_ref: str | None) -> str:
    s = record.summary()
    cost = s["cost"]
    return json.dumps(
        {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.started_ns / 1e9))
            + f".{record.started_ns // 1_000_000 % 1000:03d}Z",
            "request_id": record.request_id,
            "task_id": s["task_id"],
            "task_ref": task_ref,
            "tenant": s["tenant"],
            "key_id": s["key_id"],
            "method": record.method,
            "path": record.path,
            "status": record.status,
            "policy": s["policy"],
            "backend": s["backend"],
            "streamed": s["streamed"],
            "attempts": s["attempts"],
            "prompt_tokens": s["prompt_tokens"],
            "completion_tokens": s["completion_tokens"],
            "cost_usd": None if cost is None else format(cost.normalize(), "f"),
            "latency_ms": round(latency_ms, 2),
            "error_type": record.error_type or s["attempt_error"],
        },
        separators=(",", ":"),
    )


def _requested_model(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, *, tracing: Tracing | None = None) -> None:
        self.app = app
        self.tracing = tracing
        configure_access_log()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.tracing is not None:
            await self.app(scope, receive, self._on_shutdown(send))
            return
        if scope["type"] != "http" or scope["path"].startswith(QUIET_PATHS):
            await self.app(scope, receive, send)
            return
        state = scope.get("state") or {}
        record = RequestRecord(
            request_id=str(state.get("request_id") or ""),
            method=scope["method"],
            path=scope["path"],
        )
        task_ref: list[str] = []
        error_body = bytearray()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = int(message["status"])
                for name, value in message.get("headers", []):
                    if name == b"x-tollgate-task-id":
                        task_ref.append(value.decode("latin-1"))
            elif message["type"] == "http.response.body" and record.status >= 400:
                if len(error_body) < MAX_ERROR_BODY:
                    error_body.extend(message.get("body", b"")[:MAX_ERROR_BODY])
            await send(message)

        inner_receive = receive
        if self.tracing is not None and scope["path"] in MODEL_PATHS:

            async def inner_receive() -> Message:
                message = await receive()
                if message["type"] == "http.request" and record.requested_model is None:
                    record.requested_model = _requested_model(message.get("body", b""))
                return message

        token = bind(record)
        try:
            await self.app(scope, inner_receive, send_wrapper)
        except BaseException:
            record.status = record.status or 500
            raise
        finally:
            unbind(token)
            self._finish(scope, record, bytes(error_body), task_ref[0] if task_ref else None)

    def _finish(
        self, scope: Scope, record: RequestRecord, error_body: bytes, task_ref: str | None
    ) -> None:
        end_ns = time.time_ns()
        latency_ms = (time.perf_counter() - record.t0) * 1000
        if error_body and record.error_type is None:  # unless the handler noted its own code
            record.error_type = _error_type(error_body)
        try:
            if _access_log_on(scope):
                access_log.info(access_line(record, latency_ms, task_ref))
            if self.tracing is not None:
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
                self.tracing.emit(record, headers, end_ns)
        except Exception:  # observability must never fail a request
            log.exception("writing the access line or trace of %s failed", record.request_id)

    def _on_shutdown(self, send: Send) -> Send:
        tracing = self.tracing
        assert tracing is not None

        async def wrapped(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                try:
                    tracing.shutdown()
                except Exception:
                    log.exception("flushing traces at shutdown failed")
            await send(message)

        return wrapped
