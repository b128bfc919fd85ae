"""What an answer said and used: the generated text of an answer or stream chunk, and its
token usage — the upstream's report when it is credible, else counted with the backend's
tokenizer, so streamed and plain calls cost the same."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.backends.upstream import BackendCaller
from gateway.config import BackendConfig


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    source: str  # "upstream" | "counted"
    reported: dict[str, Any] | None = None  # the upstream's whole report (cache, reasoning)


def completion_text(resp: dict[str, Any]) -> str:
    """All generated text of a response or a stream chunk: content, text, tool-call arguments."""
    parts: list[str] = []
    for choice in resp.get("choices") or []:
        message = choice.get("message") or choice.get("delta") or {}
        if isinstance(message.get("content"), str):
            parts.append(message["content"])
        for call in message.get("tool_calls") or []:
            fn = (call or {}).get("function") or {}
            parts.append(str(fn.get("name") or "") + str(fn.get("arguments") or ""))
        if isinstance(choice.get("text"), str):
            parts.append(choice["text"])
    return "".join(parts)


def first_choice_text(resp: Mapping[str, Any]) -> str:
    """:func:`completion_text` of the first choice only (with ``n > 1``, the one a verdict or
    a judge reads)."""
    return completion_text({"choices": (resp.get("choices") or [])[:1]})


def usage_from(
    caller: BackendCaller,
    backend: BackendConfig,
    reported: Any,
    text: str,
    prompt_tokens: Callable[[], int],
) -> Usage:
    """Upstream-reported usage when present, else counted with the backend's tokenizer
    (``prompt_tokens`` counts the prompt; called only then)."""
    # Some adapters report an all-zero usage when the upstream sent none: treat that as
    # missing whenever something was generated, or streamed and plain calls would differ.
    if (
        isinstance(reported, dict)
        and reported.get("prompt_tokens") is not None
        and (reported.get("prompt_tokens") or reported.get("completion_tokens") or not text)
    ):
        return Usage(
            int(reported.get("prompt_tokens") or 0),
            int(reported.get("completion_tokens") or 0),
            "upstream",
            dict(reported),
        )
    return Usage(prompt_tokens(), caller.count_text_tokens(backend, text), "counted")
