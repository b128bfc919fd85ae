"""The Anthropic Messages API on Tollgate: ``POST /v1/messages`` (plain and streamed) and
``POST /v1/messages/count_tokens``, so the Anthropic SDKs and Claude Code can use the gateway.

A request is translated to the OpenAI chat shape (``gateway.backends.anthropic_messages``, on
litellm's adapter) and served by the same pipeline as ``/v1/chat/completions`` — the ``model``
names a policy, alias or backend as there, and policies, budgets, fallbacks and recording are
the same — then the answer is translated back: a ``message`` object, or Anthropic's event
stream (message_start, content_block_start/delta/stop, message_delta, message_stop). The key is
``x-api-key`` (what the SDK sends) or ``Authorization: Bearer`` (Claude Code's
``ANTHROPIC_AUTH_TOKEN``). Errors have Anthropic's shape: ``{"type": "error", "error": {...}}``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.backends import anthropic_messages as shape
from gateway.errors import InvalidRequest, TollgateError
from gateway.http.openai import runtime_of
from gateway.http.reframe import MidStreamError, reframe, serve_chat
from gateway.request_record import note_request
from gateway.serve.pipeline import Stream

router = APIRouter()

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


class MessagesRequest(BaseModel):
    """The fields checked before anything is called; the rest passes to the translation."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=256)
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[dict[str, Any]] | None = None
    stream: bool | None = False


class CountTokensRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=256)
    messages: list[dict[str, Any]] = Field(min_length=1)


def anthropic_error(exc: TollgateError) -> JSONResponse:
    kind = ERROR_TYPES.get(exc.status, "api_error")
    # Anthropic's types are coarse (a budget and a rate limit are both rate_limit_error): the
    # access line and the trace keep Tollgate's own code
    note_request(error_type=exc.code or exc.type)
    return JSONResponse(
        {"type": "error", "error": {"type": kind, "message": exc.message}},
        status_code=exc.status,
        headers=exc.headers,
    )


async def _json(request: Request, model: type[BaseModel]) -> dict[str, Any]:
    try:
        raw = json.loads(await request.body())
        return dict(model.model_validate(raw).model_dump(exclude_unset=True))
    except ValueError as exc:  # JSON or schema
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidRequest(f"{where}: {first['msg']}", param=where) from None
        raise InvalidRequest("the request body is not valid JSON") from None


def _key(authorization: str | None, x_api_key: str | None) -> str | None:
    if x_api_key and not authorization:
        return f"Bearer {x_api_key}"
    return authorization


def _event(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, separators=(",", ":"), default=str)
    return f"event: {event.get('type')}\ndata: {data}\n\n".encode()


@router.post("/v1/messages", tags=["anthropic"])
async def messages(
    request: Request,
    authorization: str | None = Header(default=None),
    x_api_key: str | None = Header(default=None),
) -> Response:
    """Anthropic Messages: routed like a chat completion, answered in Anthropic's shape."""
    try:
        rt = runtime_of(request)
        principal = await rt.auth.authenticate(_key(authorization, x_api_key))
        body = await _json(request, MessagesRequest)
        chat, tool_names = shape.messages_to_chat(body)
        stream = bool(body.get("stream"))
        if stream:
            chat["stream"] = True
            chat["stream_options"] = {"include_usage": True}  # message_delta carries usage
        result = await serve_chat(request, principal, chat)
    except TollgateError as exc:
        return anthropic_error(exc)
    if not isinstance(result, Stream):
        message = shape.chat_to_message(result.body, tool_names)
        return JSONResponse(message, headers=result.headers)

    async def events(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
        try:
            async for event in shape.chat_chunks_to_events(chunks, body["model"], tool_names):
                yield _event(event)
        except MidStreamError as exc:
            yield _event({"type": "error", "error": {"type": "api_error", "message": str(exc)}})

    return reframe(result, events)


@router.post("/v1/messages/count_tokens", tags=["anthropic"])
async def count_tokens(
    request: Request,
    authorization: str | None = Header(default=None),
    x_api_key: str | None = Header(default=None),
) -> Response:
    """Input tokens of a Messages request, counted with the tokenizer of the backend the
    ``model`` resolves to first (a policy: its first candidate)."""
    try:
        rt = runtime_of(request)
        principal = await rt.auth.authenticate(_key(authorization, x_api_key))
        note_request(tenant_id=principal.tenant_id, key_id=principal.key_id)  # the access line
        body = await _json(request, CountTokensRequest)
        body.setdefault("max_tokens", 1)
        chat, _ = shape.messages_to_chat(body)
        snap: Any = getattr(rt, "snapshot", rt)  # the request's config snapshot, if any
        route = snap.resolve(body["model"])
        config = snap.config
        if route.chain:
            backend = route.chain[0]
        else:
            policy = config.policies.get(route.policy or "")
            first = policy.candidates[0] if policy else None
            backend = (config.backend(first) if first else None) or config.backends[0]
        tokens = rt.caller.count_message_tokens(backend, chat["messages"])
        if chat.get("tools"):
            tokens += rt.caller.count_text_tokens(backend, json.dumps(chat["tools"]))
    except TollgateError as exc:
        return anthropic_error(exc)
    return JSONResponse({"input_tokens": int(tokens)})
