"""The fake upstream's raw ASGI application: routing, the run-time control API
(``/_control/...``), request bodies, and the failure injection (``fail_next``, ``fail_rate``,
``hang``) applied before a model endpoint answers."""

from __future__ import annotations

import json
from typing import Any

from gateway.devtools.fake_upstream.answers import require_model
from gateway.devtools.fake_upstream.endpoints import chat, completions, embeddings
from gateway.devtools.fake_upstream.state import FakeState, RequestError, Scope
from gateway.devtools.fake_upstream.wire import (
    MAX_BODY,
    Receive,
    Send,
    send_error,
    send_json,
    wait_disconnect,
)

_ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}


class FakeUpstreamApp:
    """The raw ASGI application (one instance per process; state in memory)."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.state = FakeState(config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if path.startswith("/v1/") or path.startswith("/_control/"):
                await self._route(method, path, scope, receive, send)
            else:
                raise RequestError(404, f"no route for {method} {path}")
        except RequestError as exc:
            await self._error(send, exc.status, exc.message, exc.param)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        for _ in range(16):
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(
        self, method: str, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        state = self.state
        if method == "POST" and path in _ENDPOINTS:
            endpoint = _ENDPOINTS[path]
            body = await self._json_body(receive)
            raw_model = body.get("model")
            model = raw_model if isinstance(raw_model, str) else ""
            state.record(endpoint, model, scope, body)
            state.stats["in_flight"] += 1
            try:
                await self._serve(endpoint, model, body, receive, send)
            finally:
                state.stats["in_flight"] -= 1
        elif method == "GET" and path == "/v1/models":
            state.record("models", "", scope, None)
            await send_json(send, 200, {"object": "list", "data": self._model_cards()})
        elif method == "GET" and path.startswith("/v1/models/"):
            state.record("models", "", scope, None)
            wanted = path[len("/v1/models/") :]
            card = next((c for c in self._model_cards() if c["id"] == wanted), None)
            if card is None:
                raise RequestError(404, f"The model '{wanted}' does not exist", "model")
            await send_json(send, 200, card)
        elif path == "/_control/health":
            await send_json(send, 200, {"ok": True})
        elif method == "GET" and path == "/_control/stats":
            await send_json(send, 200, state.snapshot())
        elif method == "GET" and path == "/_control/config":
            await send_json(send, 200, state.config)
        elif method == "POST" and path == "/_control/config":
            update = await self._json_body(receive)
            state.update(update)
            await send_json(send, 200, state.config)
        elif method == "POST" and path == "/_control/reset":
            raw = await self._read_body(receive)
            opts = json.loads(raw) if raw.strip() else {}
            state.reset(config=bool(opts.get("config", True)), stats=bool(opts.get("stats", True)))
            await send_json(send, 200, state.config)
        else:
            raise RequestError(404, f"no route for {method} {path}")

    def _model_cards(self) -> list[dict[str, Any]]:
        ids = list(dict.fromkeys([*self.state.config["model_ids"], *self.state.config["models"]]))
        return [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake-upstream"} for m in ids
        ]

    @staticmethod
    async def _read_body(receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for _ in range(1_000_000):  # bounded: at most MAX_BODY bytes anyway
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise RequestError(413, "request body too large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _json_body(self, receive: Receive) -> dict[str, Any]:
        raw = await self._read_body(receive)
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise RequestError(400, "request body must be a JSON object")
        return body

    async def _error(
        self,
        send: Send,
        status: int,
        message: str,
        param: str | None = None,
        cfg: dict[str, Any] | None = None,
    ) -> None:
        retry_after = int((cfg or self.state.config)["retry_after_s"])
        await send_error(send, status, message, param, retry_after)

    async def _serve(
        self, endpoint: str, model: str, body: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        state = self.state
        cfg = state.effective(model)
        failure = state.injected_failure(model)
        if failure is not None:
            injected = state.stats["failures_injected"]
            injected[str(failure)] = injected.get(str(failure), 0) + 1
            await self._error(send, failure, f"fake upstream injected error {failure}", None, cfg)
            return
        if cfg["hang"]:
            state.stats["hangs"] += 1
            gone = await wait_disconnect(receive, float(cfg["hang_max_s"]))
            if not gone:
                await self._error(send, 504, "fake upstream hung (hang_max_s passed)", None, cfg)
            return
        require_model(body)
        if endpoint == "chat.completions":
            await chat(state, model, body, cfg, receive, send)
        elif endpoint == "completions":
            await completions(state, model, body, cfg, receive, send)
        else:
            await embeddings(state, model, body, cfg, send)


def create_app(config: dict[str, Any] | None = None) -> FakeUpstreamApp:
    """Build the ASGI app (for in-process use, e.g. ``httpx.ASGITransport``)."""
    return FakeUpstreamApp(config)
