"""A client request, read once: every field of an OpenAI request body (and the headers) that
the gateway itself acts on — the task id, streaming flags, the text the predictor scores, the
prompt the tokenizer counts, required capabilities, the output cap, how many answers — taken
out in this one place. The body itself is forwarded to the backend untouched, except that a
budgeted request with no output cap gets the one its reservation assumed
(``gateway.serve.pipeline``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.backends.upstream import BackendCaller
from gateway.config import BackendConfig
from gateway.errors import InvalidRequest

TASK_HEADER = "x-tollgate-task-id"
TAGS_HEADER = "x-tollgate-require-tags"
REQUEST_TAGS_HEADER = "x-tollgate-tags"  # the request's own tags (tag budgets, reports)
MAX_TASK_ID = 256
MAX_OUTPUT_TOKENS = 1_048_576  # no model writes more in one answer; larger is a typo or abuse
MAX_TAGS = 16
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,63}$")
# Fields an upstream may obey as its output cap: the budget reserves for the largest.
OUTPUT_CAP_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _task_ref(headers: Mapping[str, str], body: Mapping[str, Any]) -> str:
    ref = headers.get(TASK_HEADER)
    if ref is None:
        meta = body.get("metadata")
        if isinstance(meta, dict) and meta.get("task_id") is not None:
            ref = str(meta["task_id"])
    if ref is not None and not (
        0 < len(ref) <= MAX_TASK_ID and ref.isascii() and ref.isprintable()
    ):
        raise InvalidRequest(
            f"task id must be 1..{MAX_TASK_ID} printable ASCII characters (it is echoed in the "
            f"{TASK_HEADER} response header)",
            param=TASK_HEADER,
        )
    return ref or ""


def _check_forwardable(body: Mapping[str, Any]) -> None:
    """The body must be JSON a backend can read: a lone UTF-16 surrogate (``"\\ud800"``
    decodes in Python but is not UTF-8) or an integer past 64 bits is the client's mistake, a
    400, never a failed call."""
    try:
        orjson.dumps(body)
    except TypeError as exc:
        raise InvalidRequest(f"the request body cannot be forwarded as JSON: {exc}") from None


def _request_tags(headers: Mapping[str, str], body: Mapping[str, Any]) -> frozenset[str]:
    """The request's tags: the ``x-tollgate-tags`` header (comma-separated), else
    ``metadata.tags`` (a list of strings or one comma-separated string)."""
    raw: Any = headers.get(REQUEST_TAGS_HEADER)
    param = REQUEST_TAGS_HEADER
    if raw is None:
        meta = body.get("metadata")
        raw = meta.get("tags") if isinstance(meta, dict) else None
        param = "metadata.tags"
    if raw is None:
        return frozenset()
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        raise InvalidRequest("tags must be a list of strings", param=param)
    tags = frozenset(t.strip() for t in items if t.strip())
    bad = sorted(t for t in tags if not TAG_RE.match(t))
    if bad or len(tags) > MAX_TAGS:
        raise InvalidRequest(
            f"at most {MAX_TAGS} tags of 1..64 characters (letters, digits, _ . : / @ -)"
            + (f"; not a tag: {bad[0]!r}" if bad else ""),
            param=param,
        )
    return tags


def _output_cap(body: Mapping[str, Any]) -> int | None:
    """The largest output cap the client set in any field an upstream may obey (the budget
    reserves for it); a cap that is not a whole number in 1..MAX_OUTPUT_TOKENS is a 400."""
    caps = []
    for name in OUTPUT_CAP_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value != int(value)
            or not 1 <= value <= MAX_OUTPUT_TOKENS
        ):
            raise InvalidRequest(
                f"{name} must be a whole number from 1 to {MAX_OUTPUT_TOKENS}", param=name
            )
        caps.append(int(value))
    return max(caps) if caps else None


def _needs_vision(messages: list[Any]) -> bool:
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") in ("image_url", "input_image") for p in content
        ):
            return True
    return False


@dataclass(frozen=True)
class ClientRequest:
    """What the gateway reads of one request (``body``: what the backend gets)."""

    endpoint: str  # chat | completions | embeddings
    body: dict[str, Any]
    headers: Mapping[str, str]
    stream: bool
    forward_usage: bool  # the client asked for the usage chunk of a stream
    task_ref: str  # the client's task id ("" = none given)
    messages: list[Any] | None  # chat messages (None: a prompt or an input)
    prompt_text: str  # the prompt or input, a list joined with spaces ("" for chat)
    query: str  # the text the predictor scores: the last user message, else the prompt
    needs_vision: bool
    has_tools: bool
    json_mode: bool
    max_tokens: int | None  # the client's output cap
    answers: int  # answers generated: n, times the prompts of a list prompt
    required_tags: frozenset[str]
    tags: frozenset[str] = frozenset()  # the request's own tags (x-tollgate-tags)

    @property
    def model(self) -> str:
        return str(self.body["model"])

    def count_prompt(self, caller: BackendCaller, backend: BackendConfig) -> int:
        """The prompt's tokens with ``backend``'s tokenizer (tool definitions included: the
        provider bills them as prompt tokens)."""
        tools = self.body.get("tools")
        extra = caller.count_text_tokens(backend, json.dumps(tools)) if tools else 0
        if self.messages is not None:
            return caller.count_message_tokens(backend, self.messages) + extra
        return caller.count_text_tokens(backend, self.prompt_text) + extra


def parse_request(
    endpoint: str, body: dict[str, Any], headers: Mapping[str, str], *, streamable: bool
) -> ClientRequest:
    """Read ``body`` (already validated by its schema) and the request headers once; an
    invalid task id or a body no backend could read is a 400 before anything else happens."""
    max_tokens = _output_cap(body)  # before the generic check: its error names the field
    _check_forwardable(body)
    task_ref = _task_ref(headers, body)
    messages = body.get("messages") if "messages" in body else None
    raw = body.get("prompt") or body.get("input") or ""
    prompt_text = raw if isinstance(raw, str) else " ".join(map(str, raw))
    query = prompt_text
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            query = message_text(message.get("content"))
            break
    answers = int(body.get("n") or 1)
    if isinstance(body.get("prompt"), list):
        answers *= max(1, len(body["prompt"]))
    options = body.get("stream_options") or {}
    fmt = body.get("response_format") or {}
    tags = headers.get(TAGS_HEADER, "")
    return ClientRequest(
        endpoint=endpoint,
        body=body,
        headers=headers,
        stream=bool(body.get("stream")) and streamable,
        forward_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        task_ref=task_ref,
        messages=messages,
        prompt_text=prompt_text,
        query=query,
        needs_vision=_needs_vision(messages or []),
        has_tools=bool(body.get("tools")),
        json_mode=isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"),
        max_tokens=max_tokens,
        answers=answers,
        required_tags=frozenset(t.strip() for t in tags.split(",") if t.strip()),
        tags=_request_tags(headers, body),
    )
