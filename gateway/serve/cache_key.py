"""What makes two chat requests the same for the response cache: the normalised request.

``request_keys`` gives the *exact* key — a hash of the tenant, the model as resolved (the
policy, or the pinned backend and its model string), and every body field that can change the
answer (messages, sampling parameters, tools, response format, ...) in a canonical form — and
the *semantic scope*: the same hash with the last user message left out, within which the
semantic lookup compares that message's embedding.

Fields that cannot change the answer are left out: ``stream``, ``stream_options``, ``user``,
``metadata``, ``store``, ``service_tier``. Canonical form: keys sorted, ``None`` values
dropped, ``n: 1`` dropped, a ``stop`` string the same as a list of it, a content list of text
parts the same as their joined string, ``max_completion_tokens`` the same as ``max_tokens``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

IGNORED = frozenset(
    {"model", "stream", "stream_options", "user", "metadata", "store", "service_tier"}
)
VERSION = "1"  # bump when the normal form changes: old entries then simply stop matching


@dataclass(frozen=True)
class CacheKeys:
    exact: str  # the answer's key
    scope: str  # the semantic scope: the request without its last user message


def _clean(value: Any) -> Any:
    """``value`` with ``None`` dropped from every mapping, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _content(content: Any) -> Any:
    """A content list of text parts only is the same as the string of their texts."""
    if isinstance(content, list) and all(
        isinstance(p, Mapping) and p.get("type") == "text" and set(p) <= {"type", "text"}
        for p in content
    ):
        return "".join(str(p.get("text", "")) for p in content)
    return content


def normalise(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body in canonical form, without the fields that cannot change the answer."""
    out = {k: v for k, v in _clean(body).items() if k not in IGNORED}
    if "max_completion_tokens" in out and "max_tokens" not in out:
        out["max_tokens"] = out.pop("max_completion_tokens")
    if out.get("n") == 1:
        del out["n"]
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    messages = out.get("messages")
    if isinstance(messages, list):
        out["messages"] = [
            {**m, "content": _content(m["content"])}
            if isinstance(m, dict) and "content" in m
            else m
            for m in messages
        ]
    return out


def _last_user(messages: list[Any]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if isinstance(m, dict) and m.get("role") == "user":
            return i
    return None


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def request_keys(tenant_id: str, target: str, body: Mapping[str, Any]) -> CacheKeys:
    """The exact key and semantic scope of a chat request of ``tenant_id`` whose model resolved
    to ``target`` (e.g. ``policy:default`` or ``backend:cheap=openai/gpt-4o-mini``)."""
    norm = normalise(body)
    exact = _digest(VERSION, tenant_id, target, norm)
    messages = list(norm.get("messages") or [])
    last = _last_user(messages)
    if last is not None:
        messages[last] = {**messages[last], "content": None}
    scope = _digest(VERSION, "scope", tenant_id, target, {**norm, "messages": messages})
    return CacheKeys(exact, scope)
