"""The OpenAI Responses API on Tollgate: ``POST /v1/responses``, plain and streamed, for text
and function tools — what the newer OpenAI SDKs (``client.responses.create``) call.

A request is translated to a chat completion (``gateway.backends.responses_api``, litellm's
bridge) and served by the same pipeline as ``/v1/chat/completions`` (policies, budgets,
fallbacks, recording), then answered as a ``response`` object or as the Responses event stream
(response.created … response.output_text.delta … response.completed). Stored responses
(``previous_response_id``, ``GET /v1/responses/{id}``) are not kept: send the conversation in
``input``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.backends import responses_api as shape
from gateway.errors import InvalidRequest
from gateway.http.openai import runtime_of
from gateway.http.reframe import MidStreamError, reframe, serve_chat
from gateway.serve.pipeline import Stream
from gateway.serve.request import MAX_OUTPUT_TOKENS

router = APIRouter()


class ResponsesRequest(BaseModel):
    """The fields checked before anything is called; the rest passes to the translation."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=256)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    stream: bool | None = False
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    tools: list[dict[str, Any]] | None = None
    previous_response_id: str | None = None


def _event(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, separators=(",", ":"), default=str)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


@router.post("/v1/responses", tags=["openai"])
async def create_response(
    request: Request, authorization: str | None = Header(default=None)
) -> Response:
    rt = runtime_of(request)
    principal = await rt.auth.authenticate(authorization)
    try:
        raw = json.loads(await request.body())
        body = ResponsesRequest.model_validate(raw).model_dump(exclude_unset=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"{where}: {first['msg']}", param=where) from None
    except ValueError:
        raise InvalidRequest("the request body is not valid JSON") from None
    if body.get("previous_response_id"):
        raise InvalidRequest(
            "previous_response_id is not supported: this gateway does not store responses; "
            "send the conversation in input",
            param="previous_response_id",
        )
    if any(t.get("type") not in ("function", None) for t in body.get("tools") or []):
        raise InvalidRequest("only function tools are supported", param="tools")
    chat = shape.responses_to_chat(body)
    result = await serve_chat(request, principal, chat)
    if not isinstance(result, Stream):
        answer = shape.chat_to_response(result.body, body)
        return JSONResponse(answer, headers=result.headers)

    async def events(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
        try:
            async for event in shape.chat_chunks_to_events(chunks, body):
                yield _event(event)
        except MidStreamError as exc:
            yield _event(
                {
                    "type": "error",
                    "code": exc.error.get("code"),
                    "message": str(exc),
                    "param": None,
                    "sequence_number": 0,
                }
            )

    return reframe(result, events)
