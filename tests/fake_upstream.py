"""Fake OpenAI-compatible upstream LLM server (a vLLM/OpenAI stand-in) for tests and benchmarks.

This module owns the fake provider that Tollgate's integration tests and ``bench/`` talk to
instead of a real LLM: a raw-ASGI app served by uvicorn (uvloop + httptools, no access log),
its run-time control API, its CLI, and the :class:`FakeUpstream` context manager that runs it
in a subprocess.

Endpoints (OpenAI wire format)
    POST /v1/chat/completions   non-streaming and SSE streaming (``chat.completion.chunk``)
    POST /v1/completions        text completions, streaming too (``text_completion``)
    POST /v1/embeddings         deterministic unit vectors (``encoding_format`` float|base64)
    GET  /v1/models, GET /v1/models/{id}
    POST /_control/config       partial update of the behaviour (see ``DEFAULT_CONFIG``)
    GET  /_control/config       the current behaviour
    POST /_control/reset        start-up behaviour back and statistics cleared
    GET  /_control/stats        counters and the last ``history_size`` requests
    GET  /_control/health       readiness probe (never counted, never failed)

Token rule (so that every count is exactly predictable)
    A *token* is a whitespace-separated word: ``len(text.split())``.
    * prompt_tokens (chat) = words across the ``content`` of every message (string content, or
      the ``text`` parts of a content list); tool-call arguments and names are not counted.
    * prompt_tokens (completions, embeddings) = words of each input string, or the length of
      each token-id list, summed over all inputs.
    * The natural answer to a prompt is ``"Echo: <last user message>"`` as words, padded with
      ``t3 t4 ...`` (``t<position>``) or trimmed to exactly ``completion_tokens`` words
      (finish_reason ``stop``). ``max_tokens`` / ``max_completion_tokens`` below that truncates
      it (finish_reason ``length``); a ``stop`` string cuts the text before its first occurrence
      (finish_reason ``stop``). With ``response_format`` json_object/json_schema the text is
      wrapped as ``{"answer":"<text>"}`` (no added spaces, so the word count is unchanged).
    * A tool call (request has ``tools``, ``tool_choice`` is not "none" and the last user
      message contains "call tool", case-insensitive) answers with one call of the first tool
      (or the function named by ``tool_choice``); arguments are JSON built from the tool's
      ``parameters.properties`` (string -> "<name>-value", integer -> 42, number -> 4.2,
      boolean -> true, array -> [], object -> {}, enum -> first value); its completion tokens
      = 1 + words of the arguments string; finish_reason ``tool_calls``.
    * completion_tokens = sum over all choices (``n`` per prompt); total = prompt + completion.
      Streaming sends one content chunk per token and reports the same usage as the
      non-streaming answer to the same request.

Timing: the first token comes after ``latency_ms``, each further token ``token_interval_ms``
later; a non-streaming answer is sent after the same total time.

Streaming: first chunk carries ``delta.role``; then one chunk per token; then a chunk with the
finish_reason; then, only when ``stream_options.include_usage`` is true (and ``omit_usage`` is
off), a chunk with ``choices: []`` and ``usage``; then ``data: [DONE]``. A client that closes
the connection mid-stream is detected (a task waits on ``http.disconnect``) and counted in
``streams_aborted``.

Failure injection (``fail_next``, ``fail_rate``, ``hang``) applies to the three POST
``/v1/...`` endpoints only, never to ``/v1/models`` or ``/_control``. Errors are OpenAI-shaped
``{"error": {"message", "type", "param", "code"}}``; 429 carries ``retry-after``.

Model overrides: ``models: {"<request model>": {<any key of MODEL_KEYS>}}`` replaces those
keys for requests naming that model; a model override's own ``fail_next`` queue is used
instead of the global one.

Run: ``python -m tests.fake_upstream --host 127.0.0.1 --port 8000 --latency-ms 20``.
Only one process serves (stats live in memory), so do not run it with several workers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import random
import re
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Behaviour knobs and their start-up defaults (all settable at start-up and at run time).
DEFAULT_CONFIG: dict[str, Any] = {
    "latency_ms": 0.0,  # time to first token
    "token_interval_ms": 0.0,  # between streamed tokens
    "completion_tokens": 16,  # length of the natural answer, in words
    "fail_next": [],  # HTTP statuses returned, in order, by the next len(list) requests
    "fail_rate": 0.0,  # probability of answering fail_rate_status (seeded RNG)
    "fail_rate_status": 500,
    "seed": 0,
    "hang": False,  # never answer (until the client leaves or hang_max_s passes -> 504)
    "hang_max_s": 600.0,
    "omit_usage": False,  # never send usage, not even when include_usage is asked for
    "retry_after_s": 1,  # value of the retry-after header sent with 429
    "stall_after_tokens": None,  # streams stop sending after N tokens (until client leaves)
    "drop_after_tokens": None,  # streams drop the TCP connection after N tokens
    "embedding_dim": 16,
    "model_ids": ["fake-model"],  # listed by GET /v1/models (plus every key of ``models``)
    "models": {},  # per-model overrides: {model: {key of MODEL_KEYS: value}}
    "history_size": 20,  # how many recent request bodies /_control/stats keeps
}

#: Keys a per-model override may set.
MODEL_KEYS = frozenset(
    {
        "latency_ms",
        "token_interval_ms",
        "completion_tokens",
        "fail_next",
        "fail_rate",
        "fail_rate_status",
        "hang",
        "omit_usage",
        "retry_after_s",
        "stall_after_tokens",
        "drop_after_tokens",
        "embedding_dim",
    }
)

_ERROR_KINDS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("not_found_error", "model_not_found"),
    408: ("timeout_error", "timeout"),
    409: ("conflict_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", "unprocessable_entity"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", "internal_error"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
    504: ("timeout_error", "gateway_timeout"),
}

_MAX_BODY = 32 * 1024 * 1024
_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
_PIECE_RE = re.compile(r"\s*\S+")


class RequestError(Exception):
    """An OpenAI-shaped error to send back with ``status``."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


class _DropConnection(Exception):
    """Raised inside a stream to make uvicorn close the TCP connection (drop_after_tokens)."""


class _QuietDrop(logging.Filter):
    """Hide uvicorn's traceback for the deliberate connection drops."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _DropConnection)


# --------------------------------------------------------------------------- config


def _check_num(key: str, value: Any, *, lo: float = 0.0, hi: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise RequestError(400, f"config.{key} must be a number in [{lo}, {hi}]", key)


def _check_int(key: str, value: Any, *, lo: int = 0, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise RequestError(400, f"config.{key} must be an integer >= {lo}", key)


def _check_status(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise RequestError(400, f"config.{key} must hold HTTP error statuses (400-599)", key)


def _validate_keys(update: dict[str, Any], allowed: frozenset[str] | set[str], where: str) -> None:
    for key, value in update.items():
        if key not in allowed:
            raise RequestError(400, f"unknown {where} key {key!r}", key)
        if key in ("latency_ms", "token_interval_ms", "hang_max_s"):
            _check_num(key, value)
        elif key == "fail_rate":
            _check_num(key, value, hi=1.0)
        elif key in ("completion_tokens", "history_size", "seed", "retry_after_s"):
            _check_int(key, value)
        elif key == "embedding_dim":
            _check_int(key, value, lo=1)
        elif key in ("stall_after_tokens", "drop_after_tokens"):
            _check_int(key, value, optional=True)
        elif key == "fail_rate_status":
            _check_status(key, value)
        elif key == "fail_next":
            if not isinstance(value, list):
                raise RequestError(400, "config.fail_next must be a list of statuses", key)
            for status in value:
                _check_status(key, status)
        elif key in ("hang", "omit_usage"):
            if not isinstance(value, bool):
                raise RequestError(400, f"config.{key} must be a boolean", key)
        elif key == "model_ids":
            if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
                raise RequestError(400, "config.model_ids must be a list of strings", key)
        elif key == "models":
            if not isinstance(value, dict):
                raise RequestError(400, "config.models must be an object", key)
            for model, override in value.items():
                if override is None:
                    continue
                if not isinstance(override, dict):
                    raise RequestError(400, f"config.models.{model} must be an object", key)
                _validate_keys(override, MODEL_KEYS, f"models.{model}")


def merge_config(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated with ``update`` (validated; ``models`` merges per model, a
    model set to ``null`` loses its override)."""
    _validate_keys(update, set(DEFAULT_CONFIG), "config")
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if key == "models":
            models = merged.setdefault("models", {})
            for model, override in value.items():
                if override is None:
                    models.pop(model, None)
                else:
                    models[model] = copy.deepcopy(override)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# --------------------------------------------------------------------------- state


class FakeState:
    """Behaviour, RNG and statistics of one fake upstream process."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.initial = merge_config(DEFAULT_CONFIG, config or {})
        self.config: dict[str, Any] = {}
        self.rng = random.Random(0)
        self.stats: dict[str, Any] = {}
        self.history: deque[dict[str, Any]] = deque()
        self._ids = 0
        self.reset()

    def reset(self, *, config: bool = True, stats: bool = True) -> None:
        if config:
            self.config = copy.deepcopy(self.initial)
            self.rng = random.Random(self.config["seed"])
        if stats:
            self.stats = {
                "total_requests": 0,
                "endpoints": {},
                "models": {},
                "streams_started": 0,
                "streams_completed": 0,
                "streams_aborted": 0,
                "streams_dropped": 0,
                "in_flight": 0,
                "failures_injected": {},
                "hangs": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
            }
            self.history = deque(maxlen=self.config["history_size"])

    def update(self, update: dict[str, Any]) -> None:
        self.config = merge_config(self.config, update)
        if "seed" in update:
            self.rng = random.Random(self.config["seed"])
        if "history_size" in update:
            self.history = deque(self.history, maxlen=self.config["history_size"])

    def next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-fake{self._ids:010d}"

    def effective(self, model: str) -> dict[str, Any]:
        override = self.config["models"].get(model)
        if not override:
            return self.config
        cfg = dict(self.config)
        cfg.update(override)
        return cfg

    def injected_failure(self, model: str) -> int | None:
        override = self.config["models"].get(model)
        queue = override["fail_next"] if override and "fail_next" in override else None
        if queue is None:
            queue = self.config["fail_next"]
        if queue:
            return int(queue.pop(0))
        cfg = self.effective(model)
        if cfg["fail_rate"] > 0 and self.rng.random() < cfg["fail_rate"]:
            return int(cfg["fail_rate_status"])
        return None

    def record(self, endpoint: str, model: str, scope: Scope, body: Any) -> None:
        stats = self.stats
        stats["total_requests"] += 1
        stats["endpoints"][endpoint] = stats["endpoints"].get(endpoint, 0) + 1
        if model:
            stats["models"][model] = stats["models"].get(model, 0) + 1
        if self.history.maxlen:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            self.history.append(
                {
                    "endpoint": endpoint,
                    "model": model,
                    "authorization": headers.get("authorization"),
                    "headers": headers,
                    "body": body,
                }
            )

    def snapshot(self) -> dict[str, Any]:
        out = copy.deepcopy(self.stats)
        out["requests"] = list(self.history)
        return out


# --------------------------------------------------------------------------- answers


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


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "you must provide a model parameter", "model")
    return model


def _n_of(body: dict[str, Any]) -> int:
    n = body.get("n", 1)
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 128:
        raise RequestError(400, "n must be an integer between 1 and 128", "n")
    return n


def _wants_usage(body: dict[str, Any], cfg: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    return bool(isinstance(opts, dict) and opts.get("include_usage")) and not cfg["omit_usage"]


# --------------------------------------------------------------------------- ASGI app


class FakeUpstreamApp:
    """The raw ASGI application (one instance per process; state in memory)."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.state = FakeState(config)

    # ---- plumbing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if path.startswith("/v1/") or path.startswith("/_control/"):
                await self._route(method, path, scope, receive, send)
            else:
                raise RequestError(404, f"no route for {method} {path}")
        except RequestError as exc:
            await self._error(send, exc.status, exc.message, exc.param)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        for _ in range(16):
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(
        self, method: str, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        state = self.state
        if method == "POST" and path in _ENDPOINTS:
            endpoint = _ENDPOINTS[path]
            body = await self._json_body(receive)
            raw_model = body.get("model")
            model = raw_model if isinstance(raw_model, str) else ""
            state.record(endpoint, model, scope, body)
            state.stats["in_flight"] += 1
            try:
                await self._serve(endpoint, model, body, receive, send)
            finally:
                state.stats["in_flight"] -= 1
        elif method == "GET" and path == "/v1/models":
            state.record("models", "", scope, None)
            await self._json(send, 200, {"object": "list", "data": self._model_cards()})
        elif method == "GET" and path.startswith("/v1/models/"):
            state.record("models", "", scope, None)
            wanted = path[len("/v1/models/") :]
            card = next((c for c in self._model_cards() if c["id"] == wanted), None)
            if card is None:
                raise RequestError(404, f"The model '{wanted}' does not exist", "model")
            await self._json(send, 200, card)
        elif path == "/_control/health":
            await self._json(send, 200, {"ok": True})
        elif method == "GET" and path == "/_control/stats":
            await self._json(send, 200, state.snapshot())
        elif method == "GET" and path == "/_control/config":
            await self._json(send, 200, state.config)
        elif method == "POST" and path == "/_control/config":
            update = await self._json_body(receive)
            state.update(update)
            await self._json(send, 200, state.config)
        elif method == "POST" and path == "/_control/reset":
            raw = await self._read_body(receive)
            opts = json.loads(raw) if raw.strip() else {}
            state.reset(config=bool(opts.get("config", True)), stats=bool(opts.get("stats", True)))
            await self._json(send, 200, state.config)
        else:
            raise RequestError(404, f"no route for {method} {path}")

    def _model_cards(self) -> list[dict[str, Any]]:
        ids = list(dict.fromkeys([*self.state.config["model_ids"], *self.state.config["models"]]))
        return [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake-upstream"} for m in ids
        ]

    @staticmethod
    async def _read_body(receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for _ in range(1_000_000):  # bounded: at most _MAX_BODY bytes anyway
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > _MAX_BODY:
                raise RequestError(413, "request body too large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _json_body(self, receive: Receive) -> dict[str, Any]:
        raw = await self._read_body(receive)
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise RequestError(400, "request body must be a JSON object")
        return body

    @staticmethod
    async def _json(
        send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        hdrs = [*_JSON_HEADERS, (b"content-length", str(len(data)).encode())]
        if headers:
            hdrs.extend(headers)
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": data})

    async def _error(
        self,
        send: Send,
        status: int,
        message: str,
        param: str | None = None,
        cfg: dict[str, Any] | None = None,
    ) -> None:
        kind, code = _ERROR_KINDS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", str(status))
        )
        extra: list[tuple[bytes, bytes]] = []
        if status == 429:
            retry_after = (cfg or self.state.config)["retry_after_s"]
            extra.append((b"retry-after", str(retry_after).encode()))
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        await self._json(send, status, body, extra)

    # ---- model endpoints

    async def _serve(
        self, endpoint: str, model: str, body: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        state = self.state
        cfg = state.effective(model)
        failure = state.injected_failure(model)
        if failure is not None:
            injected = state.stats["failures_injected"]
            injected[str(failure)] = injected.get(str(failure), 0) + 1
            await self._error(send, failure, f"fake upstream injected error {failure}", None, cfg)
            return
        if cfg["hang"]:
            state.stats["hangs"] += 1
            gone = await _wait_disconnect(receive, float(cfg["hang_max_s"]))
            if not gone:
                await self._error(send, 504, "fake upstream hung (hang_max_s passed)", None, cfg)
            return
        _require_model(body)
        if endpoint == "chat.completions":
            await self._chat(model, body, cfg, receive, send)
        elif endpoint == "completions":
            await self._completions(model, body, cfg, receive, send)
        else:
            await self._embeddings(model, body, cfg, send)

    async def _chat(
        self, model: str, body: dict[str, Any], cfg: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError(400, "messages must be a non-empty list", "messages")
        n = _n_of(body)
        user = last_user_text(messages)
        prompt_tokens = prompt_tokens_of(messages)
        fmt = body.get("response_format")
        json_mode = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
        call = tool_call_for(body, user)
        if call is not None:
            text, finish = "", "tool_calls"
            per_choice = 1 + words(call["function"]["arguments"])
        else:
            text, finish = shape_answer(user, cfg, body, json_mode=json_mode)
            per_choice = words(text)
        completion_tokens = per_choice * n
        usage = _usage(prompt_tokens, completion_tokens)
        self.state.stats["prompt_tokens"] += prompt_tokens
        self.state.stats["completion_tokens"] += completion_tokens
        rid = self.state.next_id("chatcmpl")
        created = int(time.time())
        if body.get("stream"):
            await self._chat_stream(
                rid, created, model, n, text, finish, call, usage, body, cfg, receive, send
            )
            return
        await _sleep_ms(cfg["latency_ms"] + cfg["token_interval_ms"] * max(0, per_choice - 1))
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if call is not None:
            message["content"] = None
            message["tool_calls"] = [call]
        payload: dict[str, Any] = {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
                for i in range(n)
            ],
        }
        if not cfg["omit_usage"]:
            payload["usage"] = usage
        await self._json(send, 200, payload)

    async def _chat_stream(
        self,
        rid: str,
        created: int,
        model: str,
        n: int,
        text: str,
        finish: str,
        call: dict[str, Any] | None,
        usage: dict[str, int],
        body: dict[str, Any],
        cfg: dict[str, Any],
        receive: Receive,
        send: Send,
    ) -> None:
        base = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
        }

        def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
            return {**base, "choices": choices}

        def choice(i: int, delta: dict[str, Any], fin: str | None = None) -> dict[str, Any]:
            return {"index": i, "delta": delta, "logprobs": None, "finish_reason": fin}

        def events() -> Iterator[tuple[int, dict[str, Any]]]:
            yield (
                _CONTROL,
                chunk([choice(i, {"role": "assistant", "content": ""}) for i in range(n)]),
            )
            if call is not None:
                head = {
                    "index": 0,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""},
                }
                yield _NEW_TOKEN, chunk([choice(i, {"tool_calls": [head]}) for i in range(n)])
                for piece in pieces(call["function"]["arguments"]):
                    delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                    yield _NEW_TOKEN, chunk([choice(i, delta) for i in range(n)])
            else:
                for piece in pieces(text):
                    for i in range(n):
                        yield (
                            (_NEW_TOKEN if i == 0 else _SAME_TOKEN),
                            chunk([choice(i, {"content": piece})]),
                        )
            yield _CONTROL, chunk([choice(i, {}, finish) for i in range(n)])
            if _wants_usage(body, cfg):
                yield _CONTROL, {**base, "choices": [], "usage": usage}

        await self._stream(events(), cfg, receive, send)

    async def _completions(
        self, model: str, body: dict[str, Any], cfg: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        prompt = body.get("prompt")
        prompts: list[Any]
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt:
            prompts = prompt
        else:
            raise RequestError(400, "prompt must be a string or a non-empty list", "prompt")
        n = _n_of(body)
        texts: list[tuple[str, str]] = []
        prompt_tokens = 0
        for p in prompts:
            if isinstance(p, str):
                prompt_tokens += words(p)
                source = p
            elif isinstance(p, list):
                prompt_tokens += len(p)
                source = " ".join(str(t) for t in p)
            else:
                raise RequestError(400, "prompt items must be strings or token lists", "prompt")
            texts.append(shape_answer(source, cfg, body))
        choices = [(pi * n + j, t, f) for pi, (t, f) in enumerate(texts) for j in range(n)]
        completion_tokens = sum(words(t) for _, t, _ in choices)
        usage = _usage(prompt_tokens, completion_tokens)
        self.state.stats["prompt_tokens"] += prompt_tokens
        self.state.stats["completion_tokens"] += completion_tokens
        rid = self.state.next_id("cmpl")
        created = int(time.time())
        base = {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
        }
        if body.get("stream"):

            def events() -> Iterator[tuple[int, dict[str, Any]]]:
                split = [(idx, pieces(t), f) for idx, t, f in choices]
                longest = max((len(p) for _, p, _ in split), default=0)
                for k in range(longest):
                    kind = _NEW_TOKEN
                    for idx, ps, _ in split:
                        if k < len(ps):
                            yield (
                                kind,
                                {
                                    **base,
                                    "choices": [
                                        {
                                            "text": ps[k],
                                            "index": idx,
                                            "logprobs": None,
                                            "finish_reason": None,
                                        }
                                    ],
                                },
                            )
                            kind = _SAME_TOKEN
                for idx, _, fin in split:
                    yield (
                        _CONTROL,
                        {
                            **base,
                            "choices": [
                                {"text": "", "index": idx, "logprobs": None, "finish_reason": fin}
                            ],
                        },
                    )
                if _wants_usage(body, cfg):
                    yield _CONTROL, {**base, "choices": [], "usage": usage}

            await self._stream(events(), cfg, receive, send)
            return
        longest = max((words(t) for _, t, _ in choices), default=0)
        await _sleep_ms(cfg["latency_ms"] + cfg["token_interval_ms"] * max(0, longest - 1))
        payload = {
            **base,
            "choices": [
                {"text": t, "index": idx, "logprobs": None, "finish_reason": f}
                for idx, t, f in choices
            ],
        }
        if not cfg["omit_usage"]:
            payload["usage"] = usage
        await self._json(send, 200, payload)

    async def _embeddings(
        self, model: str, body: dict[str, Any], cfg: dict[str, Any], send: Send
    ) -> None:
        raw = body.get("input")
        inputs: list[Any]
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
            inputs = [raw]
        elif isinstance(raw, list) and raw:
            inputs = raw
        else:
            raise RequestError(400, "input must be a string or a non-empty list", "input")
        dim = body.get("dimensions") or cfg["embedding_dim"]
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 65536:
            raise RequestError(400, "dimensions must be a positive integer", "dimensions")
        as_b64 = body.get("encoding_format") == "base64"
        data = []
        prompt_tokens = 0
        for i, item in enumerate(inputs):
            if isinstance(item, str):
                prompt_tokens += words(item)
                key = item
            elif isinstance(item, list):
                prompt_tokens += len(item)
                key = json.dumps(item)
            else:
                raise RequestError(400, "input items must be strings or token lists", "input")
            vec = embedding_vector(key, dim)
            emb: Any = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode() if as_b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        self.state.stats["prompt_tokens"] += prompt_tokens
        await _sleep_ms(cfg["latency_ms"])
        payload: dict[str, Any] = {"object": "list", "data": data, "model": model}
        if not cfg["omit_usage"]:
            payload["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        await self._json(send, 200, payload)

    # ---- streaming engine

    async def _stream(
        self,
        events: Iterator[tuple[int, dict[str, Any]]],
        cfg: dict[str, Any],
        receive: Receive,
        send: Send,
    ) -> None:
        """Send ``events`` as SSE, pacing tokens, noticing a client that leaves mid-stream."""
        stats = self.state.stats
        stats["streams_started"] += 1
        gone = asyncio.Event()
        finished = False

        async def watch() -> None:
            for _ in range(64):  # bounded; a request body is already fully read
                message = await receive()
                if message["type"] == "http.disconnect":
                    if not finished:
                        gone.set()
                    return

        watcher = asyncio.create_task(watch())
        stall = cfg["stall_after_tokens"]
        drop = cfg["drop_after_tokens"]
        interval = float(cfg["token_interval_ms"])
        try:
            await _sleep_ms(cfg["latency_ms"])
            if gone.is_set():
                stats["streams_aborted"] += 1
                return
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            positions = 0  # token positions sent (the n choices of a position go together)
            for kind, event in events:
                if kind == _NEW_TOKEN:
                    if positions and interval:
                        await _sleep_ms(interval)
                    if stall is not None and positions >= stall:
                        await _wait_event(gone, float(cfg["hang_max_s"]))
                    if drop is not None and positions >= drop:
                        stats["streams_dropped"] += 1
                        raise _DropConnection
                    positions += 1
                if gone.is_set():
                    stats["streams_aborted"] += 1
                    return
                data = b"data: " + json.dumps(event).encode() + b"\n\n"
                await send({"type": "http.response.body", "body": data, "more_body": True})
            if gone.is_set():
                stats["streams_aborted"] += 1
                return
            finished = True
            await send(
                {"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False}
            )
            stats["streams_completed"] += 1
        finally:
            finished = True
            watcher.cancel()


_CONTROL, _NEW_TOKEN, _SAME_TOKEN = 0, 1, 2  # stream event kinds (pacing unit: a token)

_ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}


async def _sleep_ms(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000.0)


async def _wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)
    return event.is_set()


async def _wait_disconnect(receive: Receive, timeout_s: float) -> bool:
    """Wait until the client leaves (True) or ``timeout_s`` passes (False)."""

    async def until_gone() -> None:
        for _ in range(64):
            if (await receive())["type"] == "http.disconnect":
                return

    try:
        await asyncio.wait_for(until_gone(), timeout_s)
    except TimeoutError:
        return False
    return True


def create_app(config: dict[str, Any] | None = None) -> FakeUpstreamApp:
    """Build the ASGI app (for in-process use, e.g. ``httpx.ASGITransport``)."""
    return FakeUpstreamApp(config)


# --------------------------------------------------------------------------- serving / CLI


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def serve(
    host: str,
    port: int,
    config: dict[str, Any] | None = None,
    log_level: str = "warning",
    keep_alive_s: int = 75,
) -> None:
    """Serve the fake in this process (blocking); prints ``FAKE_UPSTREAM_PORT=<port>`` once
    the socket is bound (port 0 picks a free one)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    print(f"FAKE_UPSTREAM_PORT={sock.getsockname()[1]}", flush=True)
    logging.getLogger("uvicorn.error").addFilter(_QuietDrop())
    uv_config = uvicorn.Config(
        create_app(config),
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level=log_level,
        backlog=2048,
        timeout_keep_alive=keep_alive_s,  # long: clients under test keep pooled connections
    )
    uvicorn.Server(uv_config).run(sockets=[sock])


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.fake_upstream",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--latency-ms", type=float)
    p.add_argument("--token-interval-ms", type=float)
    p.add_argument("--completion-tokens", type=int)
    p.add_argument("--fail-rate", type=float)
    p.add_argument("--fail-rate-status", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--omit-usage", action="store_true", default=None)
    p.add_argument("--embedding-dim", type=int)
    p.add_argument("--history-size", type=int)
    p.add_argument("--models", help="comma-separated ids listed by GET /v1/models")
    p.add_argument("--config-json", help="full behaviour as JSON (flags override it)")
    p.add_argument("--log-level", default="warning")
    p.add_argument("--keep-alive-s", type=int, default=75, help="idle keep-alive timeout")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    config: dict[str, Any] = json.loads(args.config_json) if args.config_json else {}
    for key in (
        "latency_ms",
        "token_interval_ms",
        "completion_tokens",
        "fail_rate",
        "fail_rate_status",
        "seed",
        "omit_usage",
        "embedding_dim",
        "history_size",
    ):
        value = getattr(args, key)
        if value is not None:
            config[key] = value
    if args.models:
        config["model_ids"] = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        merge_config(DEFAULT_CONFIG, config)
    except RequestError as exc:
        raise SystemExit(f"fake_upstream: {exc.message}") from None
    serve(args.host, args.port, config, args.log_level, args.keep_alive_s)


# --------------------------------------------------------------------------- library handle

_REPO_ROOT = Path(__file__).resolve().parents[1]


class FakeUpstream:
    """Run the fake upstream in a uvicorn subprocess for the duration of a ``with`` block.

    ``FakeUpstream(port=0, latency_ms=20)`` picks a free port (the child binds it, so there
    is no race); ``.base_url`` ends in ``/v1``; ``.configure(**kw)``, ``.stats()`` and
    ``.reset()`` talk to the control API.
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        startup_timeout_s: float = 15.0,
        **config: Any,
    ) -> None:
        merge_config(DEFAULT_CONFIG, config)  # fail fast on a bad key, in the parent
        self.host = host
        self.port = port
        self.config = config
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None
        self._client: httpx.Client | None = None

    @property
    def url(self) -> str:
        """Server root, e.g. ``http://127.0.0.1:12345``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI base URL, e.g. ``http://127.0.0.1:12345/v1``."""
        return f"{self.url}/v1"

    def start(self) -> FakeUpstream:
        if self.proc is not None:
            return self
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        cmd = [
            sys.executable,
            "-m",
            "tests.fake_upstream",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--config-json",
            json.dumps(self.config),
        ]
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            cmd,
            cwd=_REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
        )
        try:
            self.port = self._read_port()
            self._client = httpx.Client(base_url=self.url, timeout=10.0)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _failure(self, what: str) -> RuntimeError:
        err = b""
        if self._stderr is not None:
            self._stderr.seek(0)
            err = self._stderr.read()[-4000:]
        return RuntimeError(f"fake upstream {what}: {err.decode(errors='replace')}")

    def _read_port(self) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + self.startup_timeout_s
        buf = b""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self._failure(f"exited with {self.proc.returncode}")
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                data = os.read(self.proc.stdout.fileno(), 4096)
                buf += data
                match = re.search(rb"FAKE_UPSTREAM_PORT=(\d+)\n", buf)
                if match:
                    return int(match.group(1))
        raise self._failure("did not report its port in time")

    def _wait_ready(self) -> None:
        assert self._client is not None and self.proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self._failure(f"exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if self._client.get("/_control/health", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.02)
        raise self._failure("was not ready in time")

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _control(self) -> httpx.Client:
        if self._client is None:
            raise RuntimeError("FakeUpstream is not running")
        return self._client

    def configure(self, **kw: Any) -> dict[str, Any]:
        """Partially update the behaviour; returns the whole current config."""
        resp = self._control().post("/_control/config", json=kw)
        if resp.status_code != 200:
            raise ValueError(resp.json()["error"]["message"])
        return dict(resp.json())

    def config_now(self) -> dict[str, Any]:
        return dict(self._control().get("/_control/config").raise_for_status().json())

    def stats(self) -> dict[str, Any]:
        return dict(self._control().get("/_control/stats").raise_for_status().json())

    def reset(self, *, config: bool = True, stats: bool = True) -> None:
        """Back to the start-up behaviour (``config``) and zeroed statistics (``stats``)."""
        self._control().post("/_control/reset", json={"config": config, "stats": stats})

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    main()
