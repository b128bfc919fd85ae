"""The fake upstream's answers, exactly predictable: the token rule (a token is a
whitespace-separated word), the natural answer to a prompt and how ``max_tokens``, ``stop``,
json mode and tool calls shape it, deterministic embeddings, and the request checks shared by
the endpoints. Pure functions; see the package docstring for the rules."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from typing import Any

from gateway.devtools.fake_upstream.state import RequestError

_PIECE_RE = re.compile(r"\s*\S+")


def words(text: str) -> int:
    """The token count of ``text`` under the fake's rule."""
    return len(text.split())


def content_text(content: Any) -> str:
    """Text of a message ``content``: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") in ("text", "input_text")
        ]
        return " ".join(parts)
    return ""


def prompt_tokens_of(messages: list[Any]) -> int:
    return sum(words(content_text(m.get("content"))) for m in messages if isinstance(m, dict))


def last_user_text(messages: list[Any]) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return content_text(m.get("content"))
    return ""


def natural_answer(prompt: str, completion_tokens: int) -> list[str]:
    """``Echo: <prompt>`` as exactly ``completion_tokens`` words (padded with t<position>)."""
    ws = ("Echo: " + prompt).split()
    if len(ws) >= completion_tokens:
        return ws[:completion_tokens]
    return ws + [f"t{i + 1}" for i in range(len(ws), completion_tokens)]


def shape_answer(
    prompt: str, cfg: dict[str, Any], body: dict[str, Any], *, json_mode: bool = False
) -> tuple[str, str]:
    """Apply max_tokens, stop and json mode to the natural answer: (text, finish_reason)."""
    ws = natural_answer(prompt, int(cfg["completion_tokens"]))
    finish = "stop"
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 <= limit < len(ws):
        ws = ws[:limit]
        finish = "length"
    text = " ".join(ws)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    cut = min(
        (i for i in (text.find(s) for s in stops if isinstance(s, str) and s) if i >= 0), default=-1
    )
    if cut >= 0:
        text = text[:cut]
        finish = "stop"
    if json_mode:
        text = '{"answer":' + json.dumps(text, ensure_ascii=False) + "}"
    return text, finish


def pieces(text: str) -> list[str]:
    """Split ``text`` into one piece per token; the pieces concatenate back to ``text``."""
    parts = _PIECE_RE.findall(text)
    if not parts:
        return [text] if text else []
    tail = text[sum(len(p) for p in parts) :]
    if tail:
        parts[-1] += tail
    return parts


def _schema_value(name: str, schema: Any) -> Any:
    if not isinstance(schema, dict):
        return f"{name}-value"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    return {
        "integer": 42,
        "number": 4.2,
        "boolean": True,
        "array": [],
        "object": {},
        "null": None,
    }.get(str(kind), f"{name}-value")


def tool_call_for(body: dict[str, Any], user_text: str) -> dict[str, Any] | None:
    """The tool call the fake answers with, or None when it answers with text."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    named = None
    if isinstance(choice, dict):
        named = (choice.get("function") or {}).get("name")
    if named is None and "call tool" not in user_text.lower():
        return None
    functions = [t.get("function") or {} for t in tools if isinstance(t, dict)]
    fn = next((f for f in functions if named and f.get("name") == named), None)
    fn = fn or (functions[0] if functions else {})
    props = (fn.get("parameters") or {}).get("properties") or {}
    args = {k: _schema_value(k, v) for k, v in props.items()} if isinstance(props, dict) else {}
    name = str(fn.get("name", "tool"))
    digest = hashlib.sha256(f"{name}:{user_text}".encode()).hexdigest()[:24]
    return {
        "id": f"call_{digest}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)},
    }


def embedding_vector(text: str, dim: int) -> list[float]:
    """A deterministic unit vector for ``text``."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    vec = [rng.uniform(-1.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def usage_of(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "you must provide a model parameter", "model")
    return model


def n_of(body: dict[str, Any]) -> int:
    n = body.get("n", 1)
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 128:
        raise RequestError(400, "n must be an integer between 1 and 128", "n")
    return n


def wants_usage(body: dict[str, Any], cfg: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    return bool(isinstance(opts, dict) and opts.get("include_usage")) and not cfg["omit_usage"]


# --------------------------------------------------------------------------- ASGI app
