"""Which path a backend takes (gateway.backends.selector), and the fast path's pure parts:
status classification, the request it builds, the bytes it relays."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.backends.openai_http import OpenAIHTTPCaller, classify_status, upstream_model
from gateway.backends.selector import litellm_reason
from gateway.backends.upstream import UpstreamJSON, json_bytes
from gateway.config import BackendConfig


def backend(**kw: Any) -> BackendConfig:
    entry: dict[str, Any] = {"name": "b", "model": "openai/m", "api_base": "http://h:1/v1"}
    entry.update(kw)
    return BackendConfig.model_validate(entry)


@pytest.mark.parametrize(
    ("kw", "fast"),
    [
        ({}, True),
        ({"model": "hosted_vllm/Qwen/Qwen3-30B-A3B"}, True),
        ({"params": {"temperature": 0.2, "extra_headers": {"x": "1"}}}, True),
        ({"api_base": None}, False),  # litellm knows each provider's default URL
        ({"model": "anthropic/claude-sonnet-4-5"}, False),  # needs translation
        ({"model": "gpt-4o-mini"}, False),  # no provider prefix: litellm decides
        ({"api_version": "2024-06-01"}, False),
        ({"params": {"organization": "org-1"}}, False),  # only litellm knows what it means
        ({"transport": "litellm"}, False),
        ({"model": "anthropic/x", "transport": "openai_http"}, True),  # the operator's choice
    ],
)
def test_path_choice(kw: dict[str, Any], fast: bool) -> None:
    assert (litellm_reason(backend(**kw)) is None) is fast


def test_forced_fast_path_needs_an_api_base() -> None:
    with pytest.raises(ValueError, match="api_base"):
        backend(api_base=None, transport="openai_http")


def test_request_strips_gateway_keys_and_applies_params(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEL_KEY", "k-1")
    b = backend(
        model="hosted_vllm/org/model",
        api_key="os.environ/SEL_KEY",
        params={"temperature": 0.1, "extra_body": {"top_k": 5}, "extra_headers": {"X-A": "b"}},
    )
    body = {"model": "alias", "metadata": {"task_id": "t"}, "messages": [], "temperature": 1.0}
    base, payload, headers = OpenAIHTTPCaller._request(b, body, stream=True)
    sent = orjson.loads(payload)
    assert base == "http://h:1/v1"
    assert sent == {
        "messages": [],
        "temperature": 0.1,  # the backend's params win, as on the litellm path
        "top_k": 5,
        "model": "org/model",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert headers["authorization"] == "Bearer k-1" and headers["x-a"] == "b"
    assert upstream_model("openai/gpt-4o") == "gpt-4o"


def test_context_window_and_unknown_statuses() -> None:
    f = classify_status(400, "This model's maximum context length is 8192 tokens")
    assert (f.status, f.error_type, f.retryable, f.client_fault) == (
        400,
        "context_window_exceeded",
        False,
        False,
    )
    f = classify_status(418, "teapot")
    assert (f.error_type, f.retryable, f.client_fault) == ("upstream_418", False, False)
    f = classify_status(507, "full", {"retry-after": "3"})
    assert (f.error_type, f.retryable, f.retry_after_s) == ("server_error", True, None)
    f = classify_status(503, "busy", {"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"})
    assert f.retryable and f.retry_after_s is None


def test_unchanged_answers_relay_their_own_bytes() -> None:
    raw = b'{"id":"x","choices":[{"text":"\\u00e9t\\u00e9"}]}'
    answer = UpstreamJSON(orjson.loads(raw), raw)
    assert json_bytes(answer) is raw
    changed = {k: v for k, v in answer.items() if k != "id"}  # what a gateway step builds
    assert orjson.loads(json_bytes(changed)) == {"choices": [{"text": "été"}]}
    assert orjson.loads(json_bytes({1: "non-str key"})) == {"1": "non-str key"}
