"""The BackendCaller contract, run against each caller: the litellm adapter and the
OpenAI-compatible fast path, both talking to the real fake upstream (its own uvicorn process).

Every test here runs once per caller: answers, streams (usage always asked for), what reaches
the upstream, and the ``UpstreamFailure`` every kind of failure becomes must be the same on
both paths, so retries, fallbacks, breakers, pricing and recorded rows do not depend on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from gateway.backends.litellm_adapter import LiteLLMCaller
from gateway.backends.litellm_errors import STATUS_RULES
from gateway.backends.openai_http import OpenAIHTTPCaller
from gateway.backends.upstream import BackendCaller, UpstreamFailure, json_bytes
from gateway.config import BackendConfig
from gateway.devtools.fake_upstream import FakeUpstream, free_port

pytestmark = pytest.mark.integration

USER = "please summarise this short text"  # 5 words; with the system prompt: 7 tokens
ANSWER = "Echo: please summarise this short text t7 t8 t9 t10 t11 t12"
CALLERS = ("litellm", "openai_http")


def msgs(text: str = USER) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(completion_tokens=12) as fake:
        yield fake


@pytest.fixture()
def fake(upstream: FakeUpstream) -> FakeUpstream:
    upstream.reset()
    return upstream


@pytest.fixture(params=CALLERS)
def caller(request: pytest.FixtureRequest) -> BackendCaller:
    litellm = LiteLLMCaller()
    return litellm if request.param == "litellm" else OpenAIHTTPCaller(litellm)


@pytest.fixture(autouse=True)
async def _close_pools(caller: BackendCaller) -> Any:
    yield
    close = getattr(caller, "aclose", None)
    if close is not None:
        await close()


def backend(fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> BackendConfig:
    monkeypatch.setenv("CONTRACT_UPSTREAM_KEY", "upstream-secret")
    entry: dict[str, Any] = {
        "name": "fake",
        "model": "openai/fake-model",
        "api_base": fake.base_url,
        "api_key": "os.environ/CONTRACT_UPSTREAM_KEY",
        "timeout_s": 10,
    }
    entry.update(kw)
    return BackendConfig.model_validate(entry)


async def collect(stream: Any) -> list[dict[str, Any]]:
    return [chunk async for chunk in stream]


def streamed_text(chunks: list[dict[str, Any]], key: str = "content") -> str:
    out = ""
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            if key == "text":
                out += choice.get("text") or ""
            else:
                out += (choice.get("delta") or {}).get("content") or ""
    return out


def last_request(fake: FakeUpstream) -> dict[str, Any]:
    return dict(fake.stats()["requests"][-1])


# ----------------------------------------------------------------------------- answers


async def test_chat_answer_usage_and_what_reaches_the_upstream(
    caller: BackendCaller, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = backend(fake, monkeypatch, params={"temperature": 0.25})
    body = {"model": "fake", "messages": msgs(), "metadata": {"task_id": "t1"}, "seed": 3}
    resp = await caller.chat(b, body)
    assert resp["choices"][0]["message"]["content"] == ANSWER
    assert resp["choices"][0]["finish_reason"] == "stop"
    usage = resp["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (7, 12)
    # what the edge sends back parses to the same answer
    assert orjson.loads(json_bytes(resp))["choices"] == resp["choices"]
    sent = last_request(fake)
    assert sent["body"]["model"] == "fake-model"  # the provider prefix is not sent
    assert sent["body"]["temperature"] == 0.25 and sent["body"]["seed"] == 3
    assert "metadata" not in sent["body"]  # the gateway's own key stays here
    assert sent["authorization"] == "Bearer upstream-secret"


async def test_no_key_sends_the_placeholder(
    caller: BackendCaller, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = backend(fake, monkeypatch, api_key=None)
    await caller.chat(b, {"messages": msgs()})
    assert last_request(fake)["authorization"] == "Bearer sk-no-key-required"


async def test_stream_matches_the_plain_answer_and_always_carries_usage(
    caller: BackendCaller, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = backend(fake, monkeypatch)
    plain = await caller.chat(b, {"messages": msgs(), "n": 2, "max_tokens": 5})
    chunks = await collect(caller.chat_stream(b, {"messages": msgs(), "n": 2, "max_tokens": 5}))
    sent = last_request(fake)["body"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert usage and usage[-1]["completion_tokens"] == plain["usage"]["completion_tokens"] == 10
    assert usage[-1]["prompt_tokens"] == plain["usage"]["prompt_tokens"]
    texts = ["", ""]
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            texts[choice["index"]] += (choice.get("delta") or {}).get("content") or ""
    assert texts == [c["message"]["content"] for c in plain["choices"]]
    assert orjson.loads(json_bytes(chunks[1]))["choices"] == chunks[1]["choices"]


async def test_stream_without_upstream_usage(
    caller: BackendCaller, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.configure(omit_usage=True)
    chunks = await collect(caller.chat_stream(backend(fake, monkeypatch), {"messages": msgs()}))
    assert streamed_text(chunks) == ANSWER
    if isinstance(caller, OpenAIHTTPCaller):
        # passed on as absent (dispatch then counts with litellm's tokenizer, as litellm
        # itself does on its path, where it fills the usage chunk in)
        assert not [c for c in chunks if c.get("usage")]


async def test_text_completions_plain_and_streamed(
    caller: BackendCaller, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = backend(fake, monkeypatch)
    plain = await caller.completion(b, {"prompt": "say something short", "max_tokens": 4})
    assert plain["choices"][0]["text"] == "Echo: say something short"
    assert plain["usage"]["completion_tokens"] == 4
    chunks = await collect(
        caller.completion_stream(b, {"prompt": "say something short", "max_tokens": 4})
    )
    assert streamed_text(chunks, "text") == plain["choices"][0]["text"]
    assert [c["usage"] for c in chunks if c.get("usage")][-1]["completion_tokens"] == 4


async def test_embeddings(
    caller: BackendCaller, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    resp = await caller.embedding(backend(fake, monkeypatch), {"input": ["a b c", "d"]})
    assert [d["index"] for d in resp["data"]] == [0, 1]
    assert len(resp["data"][0]["embedding"]) == 16
    assert resp["usage"]["prompt_tokens"] == 4
    assert last_request(fake)["body"]["model"] == "fake-model"


# ----------------------------------------------------------------------------- failures


def expected(status: int) -> tuple[int | None, str, bool, bool]:
    error_type, retryable, client_fault = STATUS_RULES[status]
    return status, error_type, retryable, client_fault


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("status", sorted(s for s in STATUS_RULES if s not in (402, 425)))
async def test_http_errors_classify_the_same(
    caller: BackendCaller,
    fake: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    streamed: bool,
) -> None:
    fake.configure(fail_next=[status], retry_after_s=2)
    b = backend(fake, monkeypatch)
    with pytest.raises(UpstreamFailure) as info:
        if streamed:
            await collect(caller.chat_stream(b, {"messages": msgs()}))
        else:
            await caller.chat(b, {"messages": msgs()})
    f = info.value
    assert (f.status, f.error_type, f.retryable, f.client_fault) == expected(status)
    assert f.retry_after_s == (2.0 if status == 429 else None)
    assert f"injected error {status}" in f.message


async def test_hung_upstream_times_out(
    caller: BackendCaller, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.configure(hang=True)
    b = backend(fake, monkeypatch, timeout_s=0.5)
    try:
        with pytest.raises(UpstreamFailure) as info:
            await asyncio.wait_for(caller.chat(b, {"messages": msgs()}), 20)
    finally:
        fake.configure(hang=False)
    f = info.value
    assert (f.status, f.error_type, f.retryable, f.client_fault) == (408, "timeout", True, False)


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_refused_connection(
    caller: BackendCaller, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    b = backend(fake, monkeypatch, api_base=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(UpstreamFailure) as info:
        if streamed:
            await collect(caller.chat_stream(b, {"messages": msgs()}))
        else:
            await caller.chat(b, {"messages": msgs()})
    f = info.value
    assert (f.status, f.error_type, f.retryable, f.client_fault) == (
        None,
        "connection_error",
        True,
        False,
    )


async def test_connection_dropped_mid_stream(
    caller: BackendCaller, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.configure(drop_after_tokens=3)
    got: list[dict[str, Any]] = []
    with pytest.raises(UpstreamFailure) as info:
        async for chunk in caller.chat_stream(backend(fake, monkeypatch), {"messages": msgs()}):
            got.append(chunk)
    assert streamed_text(got).startswith("Echo:")  # what came before the drop was delivered
    f = info.value
    assert f.retryable and not f.client_fault and f.status is None
    assert f.error_type == "connection_error"


async def test_closing_a_stream_early_cancels_the_upstream(
    caller: BackendCaller, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.configure(token_interval_ms=20, completion_tokens=200)
    stream = caller.chat_stream(backend(fake, monkeypatch), {"messages": msgs()})
    for _ in range(3):
        await stream.__anext__()
    await stream.aclose()  # type: ignore[attr-defined]
    for _ in range(100):
        if fake.stats()["streams_aborted"] == 1:
            break
        await asyncio.sleep(0.05)
    assert fake.stats()["streams_aborted"] == 1
    assert fake.stats()["streams_completed"] == 0
    # the pool still works after a connection was thrown away mid-stream
    fake.configure(token_interval_ms=0, completion_tokens=12)
    resp = await caller.chat(backend(fake, monkeypatch), {"messages": msgs()})
    assert resp["choices"][0]["message"]["content"] == ANSWER


async def test_many_concurrent_calls_share_the_pool(
    caller: BackendCaller, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.configure(latency_ms=20)
    b = backend(fake, monkeypatch, max_connections=8)
    answers = await asyncio.gather(*(caller.chat(b, {"messages": msgs()}) for _ in range(40)))
    assert all(a["choices"][0]["message"]["content"] == ANSWER for a in answers)
    assert fake.stats()["total_requests"] == 40
