"""The contract between the gateway and whatever calls model backends.

``BackendCaller`` is what the request path uses; in production ``gateway.backends.selector``
sends each backend either to the OpenAI-compatible fast path (``gateway.backends.openai_http``)
or to the litellm adapter (``gateway.backends.litellm_adapter``); tests inject their own
through ``create_app``.
Callers speak OpenAI JSON (plain dicts) and raise ``UpstreamFailure`` for every upstream
problem, already classified (status, error type, retryable, retry-after). Anything else a caller
raises — ``InternalError`` for a bug it recognised, or the bug itself — is not the backend's
fault: dispatch catches only ``UpstreamFailure``, so such an error is never retried, never
counted against the backend's circuit breaker, and reaches the client as a 500.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any, Protocol

import orjson

from gateway.config import BackendConfig

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class UpstreamFailure(Exception):
    """A backend call failed. ``status`` is the upstream HTTP status (None: no response)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        error_type: str,
        retryable: bool,
        retry_after_s: float | None = None,
        client_fault: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.client_fault = client_fault  # the request itself is bad: no fallback will help


class InternalError(Exception):
    """A bug (ours, or the client library's) surfaced while calling a backend.

    Deliberately not an ``UpstreamFailure``: the backend did nothing wrong, so no retry, no
    fallback and no circuit-breaker failure; the error handler answers 500 and logs it with
    its cause chain."""


class UpstreamJSON(dict[str, Any]):
    """An upstream answer or stream chunk, parsed once, with the bytes it arrived as.

    The edge sends ``raw`` as it is (``json_bytes``) instead of serialising the dict again; a
    gateway step that changes an answer builds a new plain dict, which is serialised."""

    __slots__ = ("raw",)

    def __init__(self, data: dict[str, Any], raw: bytes) -> None:
        super().__init__(data)
        self.raw = raw


def json_bytes(obj: Any) -> bytes:
    """The JSON bytes of an answer or chunk: the upstream's own bytes when it is unchanged."""
    raw = getattr(obj, "raw", None)
    if isinstance(raw, bytes):
        return raw
    try:
        return orjson.dumps(obj)
    except TypeError:  # a key or number orjson does not take (non-str keys, huge ints)
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class BackendCaller(Protocol):
    async def chat(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]: ...

    def chat_stream(
        self, backend: BackendConfig, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]: ...

    async def completion(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]: ...

    def completion_stream(
        self, backend: BackendConfig, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]: ...

    async def embedding(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]: ...

    def catalog_price(self, backend: BackendConfig) -> tuple[Decimal, Decimal] | None:
        """(input, output) USD per token from the provider's published prices, if known."""
        ...

    def count_message_tokens(self, backend: BackendConfig, messages: list[Any]) -> int: ...

    def count_text_tokens(self, backend: BackendConfig, text: str) -> int: ...
