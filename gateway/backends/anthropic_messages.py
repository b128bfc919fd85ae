"""Anthropic Messages ⇄ OpenAI chat: the translation behind ``POST /v1/messages``.

Built on litellm's Anthropic adapter (``LiteLLMAnthropicMessagesAdapter`` for requests and
answers, ``AnthropicStreamWrapper`` for the event stream), so system prompts, images, tool use
and tool results, stop sequences and tool choice map the way litellm maps them for every
provider. The gateway then routes the OpenAI-shaped request through its one pipeline (policies,
budgets, recording) to any backend, an Anthropic model included (litellm turns it back into a
Messages call). litellm is imported on first use: an app that never serves ``/v1/messages`` does
not pay for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import cache
from typing import Any


@cache
def _adapter() -> Any:
    from litellm.llms.anthropic.experimental_pass_through.adapters.transformation import (
        LiteLLMAnthropicMessagesAdapter,
    )

    return LiteLLMAnthropicMessagesAdapter()


def _plain(value: Any) -> Any:
    """JSON-ready copy of litellm's TypedDicts / pydantic objects."""
    if hasattr(value, "model_dump"):
        return _plain(value.model_dump(exclude_none=False))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def messages_to_chat(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """An Anthropic Messages request as an OpenAI chat request, and the tool-name mapping
    (names litellm had to shorten for OpenAI's 64-character limit → their originals)."""
    request, tool_names = _adapter().translate_anthropic_to_openai(dict(body))
    chat = _plain(dict(request))
    chat.pop("thinking_blocks", None)
    for message in chat.get("messages") or []:
        if isinstance(message, dict) and message.get("thinking_blocks") is None:
            message.pop("thinking_blocks", None)
    return chat, dict(tool_names or {})


def chat_to_message(answer: dict[str, Any], tool_names: dict[str, str]) -> dict[str, Any]:
    """An OpenAI chat completion as an Anthropic ``message`` object."""
    from litellm.types.utils import ModelResponse

    message = _adapter().translate_openai_response_to_anthropic(
        ModelResponse(**answer), tool_names or None
    )
    out = _plain(dict(message))
    if out.get("stop_details") is None:
        out.pop("stop_details", None)
    return dict(out)


async def chat_chunks_to_events(
    chunks: AsyncIterator[dict[str, Any]], model: str, tool_names: dict[str, str]
) -> AsyncIterator[dict[str, Any]]:
    """OpenAI chat chunks (usage chunk included) as Anthropic stream events: message_start,
    content_block_start/delta/stop per block, message_delta (stop reason, usage), message_stop."""
    from litellm.llms.anthropic.experimental_pass_through.adapters.streaming_iterator import (
        AnthropicStreamWrapper,
    )
    from litellm.types.utils import ModelResponseStream

    cost: dict[str, Any] = {}

    async def objects() -> AsyncIterator[Any]:
        async for chunk in chunks:
            cost.update(chunk.pop("x_tollgate", None) or {})  # what the answer cost (last chunk)
            yield ModelResponseStream(**chunk)

    wrapper = AnthropicStreamWrapper(
        completion_stream=objects(),  # type: ignore[arg-type]  # it only iterates asynchronously
        model=model,
        tool_name_mapping=tool_names or None,
    )
    async for event in wrapper:
        out = _plain(event)
        if out.get("type") == "message_delta" and cost:
            out["x_tollgate"] = dict(cost)
        yield out
