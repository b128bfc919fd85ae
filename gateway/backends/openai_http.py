"""The fast path to OpenAI-compatible backends: plain HTTP, no translation layer.

vLLM, SGLang, llama.cpp's server, OpenAI itself and any ``openai/…`` or ``hosted_vllm/…`` model
behind an ``api_base`` already speak the OpenAI wire format, so the gateway can talk to them
directly instead of through litellm's ``acompletion`` wrapper (which costs milliseconds of CPU
per call). This module owns that caller: one pooled, keep-alive HTTP/1.1 connection pool per
backend; the request body is sent as the client gave it (the gateway's own keys removed, the
backend's params and model name applied); answers are parsed once with orjson and keep the
bytes they came as, so the edge relays them unchanged (``UpstreamJSON.raw``); streams always ask
upstream for usage (``stream_options.include_usage``). Failures become the same
``UpstreamFailure`` values the litellm path produces (``STATUS_RULES`` of
``gateway.backends.litellm_errors``), so retries, fallbacks, breakers and the recorded
``error_type`` do not depend on the path; ``tests/integration/test_backend_callers.py`` runs one
contract suite against both.

The HTTP client is aiohttp, not httpx: on this workload httpx 0.28 / httpcore 1.0 spends 3 ms
of CPU per request at 8 concurrent requests and 9-14 ms at 32-64 (its pool scans every
connection on every request), aiohttp 0.35-0.55 ms (``bench/profile_clients.py``).

Pricing, the cost map and token counting stay with litellm: ``catalog_price`` and the token
counters are delegated to the caller given as ``counter`` (the litellm adapter in production).
Which backend takes which path is decided in ``gateway.backends.select``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import orjson

from gateway.backends.litellm_errors import STATUS_RULES
from gateway.backends.upstream import (
    RETRYABLE_STATUSES,
    BackendCaller,
    InternalError,
    UpstreamFailure,
    UpstreamJSON,
)
from gateway.config import BackendConfig

log = logging.getLogger("tollgate.openai_http")

# Keys the gateway consumes itself and never forwards upstream (as in the litellm adapter).
_GATEWAY_KEYS = frozenset({"model", "stream", "stream_options", "metadata"})
_NO_KEY = "sk-no-key-required"
# litellm model prefixes that are plain OpenAI wire format behind an api_base
MODEL_PREFIXES = ("openai/", "hosted_vllm/")
# litellm's phrases for a prompt that does not fit the model (kept in step with
# litellm_core_utils.exception_mapping_utils.is_error_str_context_window_exceeded)
_CONTEXT_PHRASES = (
    "exceed context limit",
    "this model's maximum context length is",
    "model's maximum context limit",
    "is longer than the model's context length",
    "input tokens exceed the configured limit",
    "`inputs` tokens + `max_new_tokens` must be",
    "exceeds the available context size",
    "exceeds the maximum number of tokens allowed",
    "context_length_exceeded",
)


def upstream_model(model: str) -> str:
    """The model name the upstream server expects (litellm's provider prefix removed)."""
    for prefix in MODEL_PREFIXES:
        if model.startswith(prefix):
            return model[len(prefix) :]
    return model


def _is_context_window(message: str) -> bool:
    low = message.lower()
    if any(p in low for p in _CONTEXT_PHRASES):
        return True
    return "current length is" in low and "while limit is" in low


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: the backoff schedule applies


def _error_message(status: int, raw: bytes) -> str:
    """The upstream's own error text (OpenAI ``{"error": {"message"}}`` or the raw body)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", "replace").strip()
        return text[:2000] or f"upstream answered HTTP {status}"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:2000]
        if isinstance(err, str):
            return err[:2000]
        if data.get("message"):
            return str(data["message"])[:2000]
    return raw.decode("utf-8", "replace")[:2000]


def classify_status(status: int, message: str, headers: Any = None) -> UpstreamFailure:
    """The failure for an upstream HTTP error answer: the litellm path's ``STATUS_RULES``."""
    if status in (400, 413, 422) and _is_context_window(message):
        return UpstreamFailure(
            message, status=400, error_type="context_window_exceeded", retryable=False
        )
    if status in STATUS_RULES:
        error_type, retryable, client_fault = STATUS_RULES[status]
    elif status >= 500:
        error_type, retryable, client_fault = "server_error", True, False
    else:  # another 4xx: this backend refuses; the next one in the chain may not
        error_type, retryable, client_fault = f"upstream_{status}", False, False
    return UpstreamFailure(
        message,
        status=status,
        error_type=error_type,
        retryable=retryable,
        retry_after_s=_retry_after(headers) if status in RETRYABLE_STATUSES else None,
        client_fault=client_fault,
    )


def classify_exception(exc: BaseException, backend: BackendConfig) -> UpstreamFailure:
    """The failure for a transport problem: no (complete, parseable) answer came back."""
    if isinstance(exc, UpstreamFailure):
        return exc
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamFailure(
            f"no answer from {backend.name} within {backend.timeout_s:g} s",
            status=408,
            error_type="timeout",
            retryable=True,
        )
    if isinstance(exc, orjson.JSONDecodeError | UnicodeError | aiohttp.ClientPayloadError):
        kind = "connection_error" if isinstance(exc, aiohttp.ClientPayloadError) else None
        return UpstreamFailure(
            f"{backend.name} sent an answer that cannot be read: {type(exc).__name__}: {exc}"[
                :2000
            ],
            status=None,
            error_type=kind or "invalid_response",
            retryable=True,
        )
    if isinstance(exc, aiohttp.InvalidURL):
        return UpstreamFailure(
            f"{backend.name}: invalid api_base: {exc}",
            status=None,
            error_type="backend_misconfigured",
            retryable=False,
        )
    if isinstance(exc, aiohttp.ClientError | OSError):
        return UpstreamFailure(
            f"connection to {backend.name} failed: {type(exc).__name__}: {exc}"[:2000],
            status=None,
            error_type="connection_error",
            retryable=True,
        )
    raise InternalError(f"{type(exc).__name__} while calling {backend.name}: {exc}") from exc


async def _sse_data(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The ``data`` payload of each server-sent event (comments and other fields skipped)."""
    buf = b""
    data: list[bytes] = []
    async for part in content.iter_any():
        buf += part
        if b"\n" not in part:
            continue
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    yield data[0] if len(data) == 1 else b"\n".join(data)
                    data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
    if buf.startswith(b"data:"):
        value = buf[5:].rstrip(b"\r")
        data.append(value[1:] if value.startswith(b" ") else value)
    if data:
        yield b"\n".join(data)


class OpenAIHTTPCaller:
    """BackendCaller over plain HTTP for OpenAI-compatible servers (see the module doc)."""

    def __init__(self, counter: BackendCaller, *, max_connections: int = 256) -> None:
        self.counter = counter  # prices and token counts (litellm's cost map and tokenizers)
        self.max_connections = max_connections
        self._pools: dict[tuple[str, str | None, int], aiohttp.ClientSession] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- connection pools --------------------------------------------------------------------
    def _session(self, backend: BackendConfig) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests): the old pools are unusable
            self._pools = {}
            self._loop = loop
        limit = backend.max_connections or self.max_connections
        key = (backend.name, backend.api_base, limit)
        session = self._pools.get(key)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=limit, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=300
            )
            session = aiohttp.ClientSession(
                connector=connector,
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
                skip_auto_headers=("user-agent",),
                auto_decompress=True,
            )
            self._pools[key] = session
        return session

    async def aclose(self) -> None:
        pools, self._pools = self._pools, {}
        for session in pools.values():
            try:
                await session.close()
            except Exception:
                log.debug("error closing a connection pool", exc_info=True)

    # -- one request ---------------------------------------------------------------------------
    @staticmethod
    def _request(
        backend: BackendConfig, body: dict[str, Any], *, stream: bool
    ) -> tuple[str, bytes, dict[str, str]]:
        """Base URL, JSON payload and headers of ``body`` sent to ``backend``."""
        payload = {k: v for k, v in body.items() if k not in _GATEWAY_KEYS}
        headers = {"content-type": "application/json", "accept": "application/json"}
        params = backend.params
        if params:
            extra_headers = params.get("extra_headers")
            extra_body = params.get("extra_body")
            payload.update(
                (k, v) for k, v in params.items() if k not in ("extra_headers", "extra_body")
            )
            if isinstance(extra_body, dict):
                payload.update(extra_body)
            if isinstance(extra_headers, dict):
                headers.update({str(k).lower(): str(v) for k, v in extra_headers.items()})
        payload["model"] = upstream_model(backend.model)
        if stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
            headers["accept"] = "text/event-stream"
        key = backend.api_key.value() if backend.api_key else None
        headers["authorization"] = f"Bearer {key or _NO_KEY}"
        base = (backend.api_base or "").rstrip("/")
        return base, orjson.dumps(payload), headers

    async def _post(self, backend: BackendConfig, path: str, body: dict[str, Any]) -> UpstreamJSON:
        base, payload, headers = self._request(backend, body, stream=False)
        timeout = aiohttp.ClientTimeout(total=backend.timeout_s)
        try:
            async with self._session(backend).post(
                base + path, data=payload, headers=headers, timeout=timeout
            ) as resp:
                raw = await resp.read()
                status, resp_headers = resp.status, resp.headers
            data = orjson.loads(raw) if status < 400 else None
        except Exception as exc:
            raise classify_exception(exc, backend) from exc
        if status >= 400:
            raise classify_status(status, _error_message(status, raw), resp_headers)
        if not isinstance(data, dict):
            raise UpstreamFailure(
                f"{backend.name} answered with JSON that is not an object",
                status=502,
                error_type="server_error",
                retryable=True,
            )
        return UpstreamJSON(data, raw)

    async def _stream(
        self, backend: BackendConfig, path: str, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield the upstream's chunks; closing this generator closes the upstream connection
        (a stream abandoned half-way is never put back in the pool)."""
        base, payload, headers = self._request(backend, body, stream=True)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=backend.timeout_s, sock_read=backend.timeout_s
        )
        try:
            resp = await self._session(backend).post(
                base + path, data=payload, headers=headers, timeout=timeout
            )
        except Exception as exc:
            raise classify_exception(exc, backend) from exc
        complete = False
        try:
            if resp.status >= 400:
                raw = await resp.read()
                complete = True
                raise classify_status(resp.status, _error_message(resp.status, raw), resp.headers)
            async for data in _sse_data(resp.content):
                if data == b"[DONE]":
                    continue  # read on to the end of the body: the connection is then reusable
                chunk = orjson.loads(data)
                if isinstance(chunk, dict) and "error" in chunk and not chunk.get("choices"):
                    raise _stream_error(chunk["error"])
                yield UpstreamJSON(chunk, data)
            complete = True
        except UpstreamFailure:
            raise
        except Exception as exc:
            raise classify_exception(exc, backend) from exc
        finally:
            if complete:
                resp.release()
            else:
                resp.close()

    # -- BackendCaller -------------------------------------------------------------------------
    async def chat(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post(backend, "/chat/completions", body)

    def chat_stream(
        self, backend: BackendConfig, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        return self._stream(backend, "/chat/completions", body)

    async def completion(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post(backend, "/completions", body)

    def completion_stream(
        self, backend: BackendConfig, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        return self._stream(backend, "/completions", body)

    async def embedding(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post(backend, "/embeddings", body)

    def catalog_price(self, backend: BackendConfig) -> tuple[Decimal, Decimal] | None:
        return self.counter.catalog_price(backend)

    def count_message_tokens(self, backend: BackendConfig, messages: list[Any]) -> int:
        return self.counter.count_message_tokens(backend, messages)

    def count_text_tokens(self, backend: BackendConfig, text: str) -> int:
        return self.counter.count_text_tokens(backend, text)


def _stream_error(error: Any) -> UpstreamFailure:
    """An error event inside a stream (vLLM and others send one instead of a chunk)."""
    if isinstance(error, dict):
        message = str(error.get("message") or error)
        code = error.get("code")
        status = code if isinstance(code, int) and 400 <= code <= 599 else 500
    else:
        message, status = str(error), 500
    return classify_status(status, message[:2000])
