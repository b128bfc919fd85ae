"""The OpenAI POST endpoints served without FastAPI's per-request machinery, for valid requests.

``OpenAIFastRoutes`` is plain ASGI middleware, the innermost of the app's own (inside
``GatewayMiddleware`` and ``ObserveMiddleware``, so request ids, the body limit, metrics and
the access line are unchanged). For ``POST`` to ``/v1/chat/completions``, ``/v1/completions``
and ``/v1/embeddings`` with a ``application/json`` body that parses (stdlib ``json``, as
FastAPI) and validates against the endpoint's model (as FastAPI: the parsed dict, Python
mode), it calls the same endpoint function of ``gateway.http.openai`` that FastAPI would call,
with the same arguments. Everything else — another path, method or content type, an empty
body, a body that is not JSON or fails validation — goes on to FastAPI with the body replayed,
so its answers (the 422 shapes included) are exactly as before. An exception the endpoint
raises becomes a response through the app's own exception handlers, as FastAPI's exception
layer does; one no handler claims goes up to ``GatewayMiddleware`` as before.

Why: on these routes FastAPI matches the path against the routes in order, solves the
dependencies and re-reads the body on every request: ~145 us of CPU in a hot loop and
0.4-0.5 ms in the running server, the largest single part of the pinned path's added latency
(``bench/latency_breakdown.py --instrument``).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.http import openai as api
from gateway.http.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

Endpoint = Callable[[Request, Any, str | None], Awaitable[Any]]

ROUTES: dict[str, tuple[type[BaseModel], Endpoint]] = {
    "/v1/chat/completions": (ChatCompletionRequest, api.chat_completions),
    "/v1/completions": (CompletionRequest, api.completions),
    "/v1/embeddings": (EmbeddingRequest, api.embeddings),
}


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (as Starlette's ``Headers.get``)."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _is_json(content_type: str | None) -> bool:
    return (
        content_type is not None
        and content_type.split(";", 1)[0].strip().lower() == "application/json"
    )


class OpenAIFastRoutes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if (
            route is None
            or scope["method"] != "POST"
            or scope.get("root_path")
            or not _is_json(_header(scope, b"content-type"))
        ):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        complete = messages[-1]["type"] == "http.request"
        payload = self._validated(route[0], body) if complete else None

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        if payload is None:  # FastAPI answers it, exactly as before
            await self.app(scope, replay, send)
            return
        messages.clear()
        request = Request(scope, replay)
        try:
            response = await route[1](request, payload, _header(scope, b"authorization"))
        except Exception as exc:
            handler = self._handler(scope, exc)
            if handler is None:
                raise
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, replay, send)

    @staticmethod
    def _validated(model: type[BaseModel], body: bytes) -> BaseModel | None:
        if not body:
            return None
        try:
            data = json.loads(body)
        except Exception:  # FastAPI answers 422 (not JSON) or 400 (not readable)
            return None
        if not isinstance(data, dict):
            return None
        try:
            return model.model_validate(data)
        except ValidationError:
            return None

    @staticmethod
    def _handler(scope: Scope, exc: Exception) -> Any:
        """The app's exception handler for ``exc`` (as Starlette's exception layer: by the
        exception's class hierarchy; ``Exception`` itself is left to the outer layers)."""
        handlers = getattr(scope.get("app"), "exception_handlers", {})
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in handlers:
                return handlers[cls]
        return None
