"""The litellm error mapping (gateway.backends.litellm_errors).

Two halves: every exception class the installed litellm and openai packages define must be
named in ``ERROR_MAP`` (an upgrade that adds one fails here), and the real adapter, calling a
real local HTTP server through litellm, must turn each upstream answer (400..504, timeouts,
refused connections, context-window and content-policy errors, broken bodies) into the
specific failure dispatch acts on. Bugs (ours, wrapped by litellm) become InternalError.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import openai
import pytest

from gateway.backends.litellm_adapter import LiteLLMCaller
from gateway.backends.litellm_errors import ERROR_MAP, Kind, classify, kind_of
from gateway.backends.upstream import InternalError, UpstreamFailure
from gateway.config import BackendConfig
from tests.support.stub_server import QuietHandler, StubServer


def _exception_classes(module: Any, prefix: str) -> list[type[BaseException]]:
    return [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__.startswith(prefix)
    ]


def _litellm_classes() -> list[type[BaseException]]:
    import litellm
    import litellm.exceptions

    classes = set(_exception_classes(litellm.exceptions, "litellm"))
    classes |= set(litellm.LITELLM_EXCEPTION_TYPES)
    classes |= {c for c in _exception_classes(litellm, "litellm")}
    return sorted(classes, key=lambda c: c.__qualname__)


def _bare(cls: type[BaseException]) -> BaseException:
    """An instance without running the (class-specific) constructor: what classify reads is
    the class, a status and a message."""
    exc = cls.__new__(cls)
    exc.args = ("synthetic",)
    with contextlib.suppress(AttributeError):  # litellm's __str__ reads .message
        exc.message = "synthetic"  # type: ignore[attr-defined]
    return exc


def test_every_litellm_exception_class_is_mapped() -> None:
    classes = _litellm_classes()
    assert len(classes) >= 30, "enumerating litellm's exceptions found too few: check the test"
    unmapped = [c.__qualname__ for c in classes if c not in ERROR_MAP]
    assert not unmapped, f"litellm exception classes with no mapping in ERROR_MAP: {unmapped}"


def test_every_openai_exception_class_is_mapped() -> None:
    classes = _exception_classes(openai, "openai")
    assert len(classes) >= 15
    unmapped = [c.__qualname__ for c in classes if c not in ERROR_MAP]
    assert not unmapped, f"openai exception classes with no mapping in ERROR_MAP: {unmapped}"


def test_provider_and_transport_exceptions_resolve_to_a_kind() -> None:
    from litellm.llms.base_llm.chat.transformation import BaseLLMException

    def subclasses(cls: type[BaseException]) -> Iterator[type[BaseException]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    provider = list(subclasses(BaseLLMException))
    assert provider, "litellm's provider errors (BaseLLMException subclasses) were not loaded"
    transport = _exception_classes(httpx, "httpx") + [
        c for c in _exception_classes(aiohttp, "aiohttp") if issubclass(c, aiohttp.ClientError)
    ]
    missing = [c.__qualname__ for c in [*provider, *transport] if kind_of(c) is None]
    assert not missing


@pytest.mark.parametrize(
    "cls", [c for c in ERROR_MAP if c.__module__.split(".")[0] in ("litellm", "openai")]
)
def test_each_mapped_class_classifies_as_its_kind(cls: type[BaseException]) -> None:
    result = classify(_bare(cls))
    if ERROR_MAP[cls] is Kind.INTERNAL:
        assert isinstance(result, InternalError)
        return
    assert isinstance(result, UpstreamFailure), (cls, result)
    assert result.error_type and result.message
    if ERROR_MAP[cls] is not Kind.BY_STATUS:
        assert result.error_type == ERROR_MAP[cls].value


@pytest.mark.parametrize(
    "exc",
    [TypeError("x"), KeyError("choices"), AttributeError("y"), ValueError("z"), RuntimeError("w")],
)
def test_our_own_exceptions_are_internal_errors(exc: Exception) -> None:
    assert isinstance(classify(exc), InternalError)


def test_a_bug_litellm_wrapped_as_a_connection_error_is_internal() -> None:
    import litellm

    try:
        try:
            raise TypeError("'int' object is not iterable")
        except TypeError:
            raise litellm.APIConnectionError(message="boom", llm_provider="openai", model="m")  # noqa: B904
    except litellm.APIConnectionError as wrapped:
        result = classify(wrapped)
    assert isinstance(result, InternalError) and "TypeError" in str(result)


# -- the real adapter against a real HTTP server ------------------------------------------------
class _Upstream(StubServer):
    """A scripted OpenAI-compatible server: every POST gets ``reply`` (status, body, delay)."""

    def __init__(self) -> None:
        self.reply: tuple[int, bytes, str, float] = (200, b"{}", "application/json", 0.0)
        upstream = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                status, body, ctype, delay = upstream.reply
                time.sleep(delay)
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                if status == 429:
                    self.send_header("retry-after", "3")
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    return  # the client timed out and left

        super().__init__(Handler)
        self.start()

    @property
    def base(self) -> str:
        return self.url + "/v1"


@pytest.fixture(scope="module")
def upstream() -> Iterator[_Upstream]:
    server = _Upstream()
    yield server
    server.close()


def _err(message: str, kind: str = "invalid_request_error", code: str | None = None) -> bytes:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return json.dumps(body).encode()


def _backend(api_base: str, **kw: Any) -> BackendConfig:
    return BackendConfig.model_validate(
        {"name": "b", "model": "openai/m", "api_base": api_base, "timeout_s": 0.5, **kw}
    )


BODY = {"model": "b", "messages": [{"role": "user", "content": "hello"}]}

JSON = "application/json"
CASES: list[tuple[str, int, bytes, str, tuple[int | None, str, bool, bool]]] = [
    # name, upstream status, body, content type -> (status, error_type, retryable, client_fault)
    ("400", 400, _err("bad thing"), JSON, (400, "bad_request", False, True)),
    ("401", 401, _err("Incorrect API key provided", code="invalid_api_key"), JSON,
     (401, "authentication_error", False, False)),
    ("403", 403, _err("forbidden", "permission_error"), JSON,
     (403, "permission_denied", False, False)),
    ("404", 404, _err("The model m does not exist", code="model_not_found"), JSON,
     (404, "not_found", False, False)),
    ("408", 408, _err("slow", "timeout_error"), JSON, (408, "timeout", True, False)),
    ("413", 413, _err("too large"), JSON, (413, "request_too_large", False, True)),
    ("422", 422, _err("unprocessable"), JSON, (422, "unprocessable_entity", False, True)),
    ("429", 429, _err("slow down", "rate_limit_error"), JSON, (429, "rate_limited", True, False)),
    ("500", 500, _err("boom", "server_error"), JSON, (500, "server_error", True, False)),
    ("502", 502, _err("bad gateway", "server_error"), JSON, (502, "bad_gateway", True, False)),
    ("503", 503, _err("unavailable", "server_error"), JSON,
     (503, "service_unavailable", True, False)),
    ("504", 504, _err("gateway timeout", "server_error"), JSON, (504, "timeout", True, False)),
    ("418", 418, _err("teapot"), JSON, (418, "upstream_418", False, False)),
    ("context window", 400,
     _err("This model's maximum context length is 4096 tokens. However, your messages "
          "resulted in 5000 tokens.", code="context_length_exceeded"), JSON,
     (400, "context_window_exceeded", False, False)),
    ("content policy", 400,
     _err("Your request was rejected as a result of our safety system.",
          code="content_policy_violation"), JSON,
     (400, "content_policy_violation", False, True)),
    ("invalid content", 400,
     _err("Invalid content type. image_url is only supported by certain models."), JSON,
     (400, "bad_request", False, True)),
    ("400 html body", 400, b"<html><body>Bad Request</body></html>", "text/html",
     (400, "bad_request", False, True)),
    ("200 not json", 200, b"{not json", JSON, (None, "invalid_response", True, False)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "status", "body", "ctype", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_upstream_answers_map_to_specific_failures(
    upstream: _Upstream,
    name: str,
    status: int,
    body: bytes,
    ctype: str,
    expected: tuple[int | None, str, bool, bool],
) -> None:
    upstream.reply = (status, body, ctype, 0.0)
    with pytest.raises(UpstreamFailure) as info:
        asyncio.run(LiteLLMCaller().chat(_backend(upstream.base), dict(BODY)))
    failure = info.value
    got = (failure.status, failure.error_type, failure.retryable, failure.client_fault)
    assert got == expected, (name, failure.message)
    if status == 429:
        assert failure.retry_after_s == 3.0


@pytest.mark.parametrize("status", [400, 429, 503])
def test_streamed_calls_map_the_same(upstream: _Upstream, status: int) -> None:
    upstream.reply = (status, _err("no"), JSON, 0.0)

    async def first_chunk() -> None:
        stream = LiteLLMCaller().chat_stream(_backend(upstream.base), dict(BODY))
        await stream.__anext__()

    with pytest.raises(UpstreamFailure) as info:
        asyncio.run(first_chunk())
    assert info.value.status == status
    assert info.value.error_type == {400: "bad_request", 429: "rate_limited"}.get(
        status, "service_unavailable"
    )


def test_a_slow_upstream_is_a_retryable_timeout(upstream: _Upstream) -> None:
    upstream.reply = (200, b"{}", JSON, 2.0)
    with pytest.raises(UpstreamFailure) as info:
        asyncio.run(LiteLLMCaller().chat(_backend(upstream.base), dict(BODY)))
    assert (info.value.status, info.value.error_type, info.value.retryable) == (
        408,
        "timeout",
        True,
    )


def test_a_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UpstreamFailure) as info:
        asyncio.run(LiteLLMCaller().chat(_backend(f"http://127.0.0.1:{port}/v1"), dict(BODY)))
    assert (info.value.status, info.value.error_type, info.value.retryable) == (
        None,
        "connection_error",
        True,
    )


def test_an_unknown_provider_is_a_misconfigured_backend() -> None:
    backend = BackendConfig.model_validate({"name": "b", "model": "nosuchprovider/m"})
    with pytest.raises(UpstreamFailure) as info:
        asyncio.run(LiteLLMCaller().chat(backend, dict(BODY)))
    assert info.value.error_type in ("backend_misconfigured", "bad_request")
    assert not info.value.retryable


def test_a_bug_under_litellm_is_an_internal_error_not_a_backend_failure(
    upstream: _Upstream,
) -> None:
    upstream.reply = (200, b"{}", JSON, 0.0)
    # a body our request validation should have refused: litellm raises TypeError inside the
    # call and wraps it as an APIConnectionError (status 500)
    with pytest.raises(InternalError) as info:
        asyncio.run(LiteLLMCaller().chat(_backend(upstream.base), {"model": "b", "messages": 3}))
    assert "TypeError" in str(info.value)
