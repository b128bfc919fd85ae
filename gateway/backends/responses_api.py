"""OpenAI Responses API ⇄ chat completions: the translation behind ``POST /v1/responses``.

Requests and whole answers go through litellm's own bridge (``LiteLLMCompletionResponsesConfig``:
``input`` items, ``instructions``, function tools and their calls/outputs, ``text.format``,
``max_output_tokens``), so the gateway serves the Responses API on its one chat pipeline to any
backend. The stream is framed here, from the chat chunks the pipeline relays: litellm's
streaming bridge is bound to its own stream wrapper and logging objects. Events: response.created,
response.in_progress, then per output item output_item.added, content_part.added,
output_text.delta (text) or function_call_arguments.delta (tools), their .done events,
output_item.done, and response.completed with the whole response and its usage.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

# request keys the chat request does not take from the Responses request
_NOT_CHAT = ("custom_llm_provider", "extra_headers", "metadata", "service_tier")


def _bridge() -> Any:
    from litellm.responses.litellm_completion_transformation.transformation import (
        LiteLLMCompletionResponsesConfig,
    )

    return LiteLLMCompletionResponsesConfig


def _params(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("model", "input", "stream")}


def responses_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Responses API request as a chat completion request (same ``model``)."""
    chat = _bridge().transform_responses_api_request_to_chat_completion_request(
        model=body["model"],
        input=body.get("input") or [],
        responses_api_request=_params(body),
        stream=bool(body.get("stream")),
    )
    for key in _NOT_CHAT:
        chat.pop(key, None)
    for message in chat.get("messages") or []:
        for call in (message.get("tool_calls") or []) if isinstance(message, dict) else []:
            if isinstance(call, dict):
                call.pop("index", None)
    return dict(chat)


def _usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not usage:
        return None
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    inp, out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": int(prompt_details.get("cached_tokens") or 0)},
        "output_tokens": out,
        "output_tokens_details": {
            "reasoning_tokens": int(completion_details.get("reasoning_tokens") or 0)
        },
        "total_tokens": int(usage.get("total_tokens") or inp + out),
    }


def chat_to_response(answer: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A chat completion as a Responses API ``response`` object."""
    response = _bridge().transform_chat_completion_response_to_responses_api_response(
        request_input=body.get("input") or [],
        responses_api_request=_params(body),
        chat_completion_response=dict(answer),
    )
    out = response.model_dump(exclude_none=True) if hasattr(response, "model_dump") else response
    out = dict(out)
    out["usage"] = _usage(answer.get("usage"))
    for key in ("temperature", "top_p", "max_output_tokens", "instructions", "tools", "store"):
        if key in body:
            out[key] = body[key]
    out.setdefault("tools", [])
    return out


class _Item:
    def __init__(self, index: int, kind: str, item_id: str) -> None:
        self.index, self.kind, self.id = index, kind, item_id
        self.text: list[str] = []
        self.call_id = ""
        self.name = ""


async def chat_chunks_to_events(
    chunks: AsyncIterator[dict[str, Any]], body: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    """Responses API stream events for the chat chunks of one answer (usage chunk included)."""
    seq = 0
    response_id = f"resp_{uuid.uuid4().hex}"
    created = int(time.time())

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        nonlocal seq
        seq += 1
        return {"type": kind, "sequence_number": seq - 1, **fields}

    def envelope(status: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": response_id,
            "object": "response",
            "created_at": created,
            "status": status,
            "model": body.get("model"),
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            **extra,
        }

    yield event("response.created", response=envelope("in_progress"))
    yield event("response.in_progress", response=envelope("in_progress"))
    items: list[_Item] = []
    message: _Item | None = None
    calls: dict[int, _Item] = {}
    answer: dict[str, Any] = {"model": body.get("model"), "finish_reason": "stop"}
    async for chunk in chunks:
        if chunk.get("usage"):
            answer["usage"] = chunk["usage"]
        if chunk.get("x_tollgate"):
            answer["x_tollgate"] = chunk["x_tollgate"]  # what the answer cost, on its last chunk
        answer["model"] = chunk.get("model") or answer["model"]
        answer["id"] = chunk.get("id") or answer.get("id")
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # the Responses API has one output per request
            delta = choice.get("delta") or {}
            if choice.get("finish_reason"):
                answer["finish_reason"] = choice["finish_reason"]
            text = delta.get("content")
            if text:
                if message is None:
                    message = _Item(len(items), "message", f"msg_{uuid.uuid4().hex}")
                    items.append(message)
                    yield event(
                        "response.output_item.added",
                        output_index=message.index,
                        item={
                            "id": message.id,
                            "type": "message",
                            "status": "in_progress",
                            "role": "assistant",
                            "content": [],
                        },
                    )
                    yield event(
                        "response.content_part.added",
                        item_id=message.id,
                        output_index=message.index,
                        content_index=0,
                        part={"type": "output_text", "text": "", "annotations": []},
                    )
                message.text.append(text)
                yield event(
                    "response.output_text.delta",
                    item_id=message.id,
                    output_index=message.index,
                    content_index=0,
                    delta=text,
                    logprobs=[],
                )
            for call in delta.get("tool_calls") or []:
                slot = int(call.get("index") or 0)
                fn = call.get("function") or {}
                item = calls.get(slot)
                if item is None:
                    call_id = call.get("id") or f"call_{uuid.uuid4().hex}"
                    item = _Item(len(items), "function_call", f"fc_{call_id}")
                    item.call_id, item.name = call_id, fn.get("name") or ""
                    calls[slot] = item
                    items.append(item)
                    yield event(
                        "response.output_item.added",
                        output_index=item.index,
                        item={
                            "id": item.id,
                            "type": "function_call",
                            "status": "in_progress",
                            "call_id": item.call_id,
                            "name": item.name,
                            "arguments": "",
                        },
                    )
                if fn.get("arguments"):
                    item.text.append(fn["arguments"])
                    yield event(
                        "response.function_call_arguments.delta",
                        item_id=item.id,
                        output_index=item.index,
                        delta=fn["arguments"],
                    )
    done_items: list[dict[str, Any]] = []
    for item in items:
        text = "".join(item.text)
        if item.kind == "message":
            part = {"type": "output_text", "text": text, "annotations": []}
            yield event(
                "response.output_text.done",
                item_id=item.id,
                output_index=item.index,
                content_index=0,
                text=text,
                logprobs=[],
            )
            yield event(
                "response.content_part.done",
                item_id=item.id,
                output_index=item.index,
                content_index=0,
                part=part,
            )
            done = {
                "id": item.id,
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
        else:
            yield event(
                "response.function_call_arguments.done",
                item_id=item.id,
                output_index=item.index,
                arguments=text,
            )
            done = {
                "id": item.id,
                "type": "function_call",
                "status": "completed",
                "call_id": item.call_id,
                "name": item.name,
                "arguments": text,
            }
        done_items.append(done)
        yield event("response.output_item.done", output_index=item.index, item=done)
    incomplete = answer["finish_reason"] == "length"
    final = envelope(
        "incomplete" if incomplete else "completed",
        output=done_items,
        usage=_usage(answer.get("usage")),
        incomplete_details={"reason": "max_output_tokens"} if incomplete else None,
    )
    for key in ("temperature", "top_p", "max_output_tokens", "instructions"):
        if key in body:
            final[key] = body[key]
    if answer.get("x_tollgate"):
        final["x_tollgate"] = answer["x_tollgate"]
    yield event("response.incomplete" if incomplete else "response.completed", response=final)
