"""Integration tests of the fake upstream (``gateway.devtools.fake_upstream``): a real uvicorn
subprocess driven by the official openai SDK (sync, async, streaming) and raw httpx (wire
format, disconnects, control API)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.devtools.fake_upstream import FakeUpstream, free_port, prompt_tokens_of

pytestmark = pytest.mark.integration

KEY = "sk-fake-test"
USER = "please summarise this short text"  # 5 words
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "unit": {"type": "string", "enum": ["c", "f"]},
                },
            },
        },
    },
    {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}},
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(completion_tokens=12) as fake:
        yield fake


@pytest.fixture()
def fake(upstream: FakeUpstream) -> FakeUpstream:
    upstream.reset()
    return upstream


@pytest.fixture()
def client(fake: FakeUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0, timeout=10) as c:
        yield c


def msgs(text: str = USER) -> list[Any]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


def wait_for(pred: Any, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return bool(pred())


def stream_chat(client: openai.OpenAI, **kw: Any) -> tuple[list[str], list[Any], Any]:
    """Return (content per choice, finish_reason per choice, usage) of a streamed chat."""
    n = kw.get("n", 1)
    texts = [""] * n
    finish: list[Any] = [None] * n
    usage = None
    seen_role = False
    with client.chat.completions.create(model="fake-model", stream=True, **kw) as stream:
        for chunk in stream:
            assert chunk.object == "chat.completion.chunk"
            if chunk.usage is not None:
                assert chunk.choices == []
                usage = chunk.usage
            for ch in chunk.choices:
                seen_role = seen_role or ch.delta.role == "assistant"
                texts[ch.index] += ch.delta.content or ""
                if ch.finish_reason:
                    finish[ch.index] = ch.finish_reason
    assert seen_role
    return texts, finish, usage


# ----------------------------------------------------------------------------- chat


def test_chat_non_streaming_is_deterministic(client: openai.OpenAI) -> None:
    r1 = client.chat.completions.create(model="fake-model", messages=msgs())
    r2 = client.chat.completions.create(model="fake-model", messages=msgs())
    text = r1.choices[0].message.content
    assert text == r2.choices[0].message.content
    assert text == "Echo: please summarise this short text t7 t8 t9 t10 t11 t12"
    assert r1.choices[0].finish_reason == "stop"
    assert r1.usage is not None
    assert (r1.usage.prompt_tokens, r1.usage.completion_tokens) == (7, 12)
    assert r1.usage.total_tokens == 19
    assert prompt_tokens_of(msgs()) == 7


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"n": 3},
        {"max_tokens": 4},
        {"stop": ["short"]},
        {"stop": "t9", "n": 2},
        {"response_format": {"type": "json_object"}},
    ],
    ids=["plain", "n3", "max_tokens", "stop", "stop_n2", "json"],
)
def test_usage_parity_streaming_vs_non_streaming(
    client: openai.OpenAI, extra: dict[str, Any]
) -> None:
    full = client.chat.completions.create(model="fake-model", messages=msgs(), **extra)
    texts, finish, usage = stream_chat(
        client, messages=msgs(), stream_options={"include_usage": True}, **extra
    )
    assert full.usage is not None and usage is not None
    assert usage.model_dump() == full.usage.model_dump()
    assert texts == [c.message.content for c in full.choices]
    assert finish == [c.finish_reason for c in full.choices]
    words = sum(len((c.message.content or "").split()) for c in full.choices)
    assert full.usage.completion_tokens == words


def test_max_tokens_stop_and_json_mode(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="fake-model", messages=msgs(), max_tokens=3)
    assert r.choices[0].message.content == "Echo: please summarise"
    assert r.choices[0].finish_reason == "length"
    r = client.chat.completions.create(model="fake-model", messages=msgs(), stop=[" this"])
    assert r.choices[0].message.content == "Echo: please summarise"
    assert r.choices[0].finish_reason == "stop"
    r = client.chat.completions.create(
        model="fake-model", messages=msgs(), response_format={"type": "json_object"}
    )
    content = r.choices[0].message.content or ""
    assert json.loads(content)["answer"].startswith("Echo: please")
    assert r.usage is not None and r.usage.completion_tokens == 12


def test_stream_without_include_usage_sends_no_usage(client: openai.OpenAI) -> None:
    texts, finish, usage = stream_chat(client, messages=msgs())
    assert usage is None
    assert finish == ["stop"]
    assert len(texts[0].split()) == 12


def test_sse_wire_format(fake: FakeUpstream) -> None:
    body = {
        "model": "fake-model",
        "messages": msgs("hi"),
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 2,
    }
    with httpx.Client() as http:
        raw = http.post(f"{fake.base_url}/chat/completions", json=body).text
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["Echo:", " hi"]
    assert chunks[3]["choices"][0]["finish_reason"] == "length"
    assert chunks[4]["choices"] == []
    assert chunks[4]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


async def test_async_client_and_streaming(fake: FakeUpstream) -> None:
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0) as aclient:
        full = await aclient.chat.completions.create(model="fake-model", messages=msgs())
        stream = await aclient.chat.completions.create(
            model="fake-model",
            messages=msgs(),
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage = "", None
        async for chunk in stream:
            usage = chunk.usage or usage
            for ch in chunk.choices:
                text += ch.delta.content or ""
    assert text == full.choices[0].message.content
    assert usage is not None and full.usage is not None
    assert usage.model_dump() == full.usage.model_dump()
    stats = fake.stats()
    assert stats["streams_started"] == 1 and stats["streams_completed"] == 1


# ----------------------------------------------------------------------------- tools


def test_tool_call_non_streaming_and_streaming(client: openai.OpenAI) -> None:
    ask = msgs("Please call tool for Paris")
    r = client.chat.completions.create(model="fake-model", messages=ask, tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert args == {"city": "city-value", "days": 42, "unit": "c"}
    assert r.usage is not None
    assert r.usage.completion_tokens == 1 + len(call.function.arguments.split())

    name, arguments, finish, usage = "", "", None, None
    with client.chat.completions.create(
        model="fake-model",
        messages=ask,
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        for chunk in stream:
            usage = chunk.usage or usage
            for ch in chunk.choices:
                for tc in ch.delta.tool_calls or []:
                    name += (tc.function.name or "") if tc.function else ""
                    arguments += (tc.function.arguments or "") if tc.function else ""
                finish = ch.finish_reason or finish
    assert (name, arguments, finish) == ("get_weather", call.function.arguments, "tool_calls")
    assert usage is not None and usage.model_dump() == r.usage.model_dump()

    # no "call tool" in the message, or tool_choice none -> a plain text answer
    r = client.chat.completions.create(model="fake-model", messages=msgs(), tools=TOOLS)
    assert r.choices[0].finish_reason == "stop" and not r.choices[0].message.tool_calls
    r = client.chat.completions.create(
        model="fake-model", messages=ask, tools=TOOLS, tool_choice="none"
    )
    assert not r.choices[0].message.tool_calls
    r = client.chat.completions.create(
        model="fake-model",
        messages=msgs(),
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "other"}},
    )
    tool_calls = r.choices[0].message.tool_calls or []
    assert tool_calls[0].type == "function" and tool_calls[0].function.name == "other"


# ----------------------------------------------------------------------------- failures


def test_fail_next_statuses_and_error_shape(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.configure(fail_next=[429, 500, 503], retry_after_s=7)
    with pytest.raises(openai.RateLimitError) as rl:
        client.chat.completions.create(model="fake-model", messages=msgs())
    assert rl.value.status_code == 429
    assert rl.value.response.headers["retry-after"] == "7"
    err = rl.value.response.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "rate_limit_error"
    with pytest.raises(openai.InternalServerError) as ie:
        client.chat.completions.create(model="fake-model", messages=msgs())
    assert ie.value.status_code == 500
    with pytest.raises(openai.APIStatusError) as su:
        client.chat.completions.create(model="fake-model", messages=msgs(), stream=True)
    assert su.value.status_code == 503
    ok = client.chat.completions.create(model="fake-model", messages=msgs())
    assert ok.choices[0].finish_reason == "stop"
    stats = fake.stats()
    assert stats["failures_injected"] == {"429": 1, "500": 1, "503": 1}
    assert stats["endpoints"]["chat.completions"] == 4


def test_sdk_retries_through_injected_failure(fake: FakeUpstream) -> None:
    fake.configure(fail_next=[503])
    with openai.OpenAI(base_url=fake.base_url, api_key=KEY, max_retries=1) as c:
        r = c.chat.completions.create(model="fake-model", messages=msgs())
    assert r.choices[0].finish_reason == "stop"
    assert fake.stats()["total_requests"] == 2


def test_fail_rate_is_seeded(fake: FakeUpstream) -> None:
    def run() -> list[int]:
        with httpx.Client() as http:
            return [
                http.post(
                    f"{fake.base_url}/embeddings", json={"model": "e", "input": "x"}
                ).status_code
                for _ in range(20)
            ]

    fake.configure(fail_rate=0.5, fail_rate_status=502, seed=3)
    first = run()
    fake.configure(seed=3)
    assert run() == first
    assert set(first) == {200, 502}


def test_invalid_requests_are_400(fake: FakeUpstream, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="fake-model", messages=[])
    with httpx.Client() as http:
        r = http.post(f"{fake.base_url}/chat/completions", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(ValueError, match="unknown config key"):
        fake.configure(no_such_knob=1)


def test_hang_times_out_the_client(fake: FakeUpstream) -> None:
    fake.configure(hang=True)
    with (
        openai.OpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0, timeout=0.3) as c,
        pytest.raises(openai.APITimeoutError),
    ):
        c.chat.completions.create(model="fake-model", messages=msgs())
    assert fake.stats()["hangs"] == 1
    fake.configure(hang=False)
    assert wait_for(lambda: fake.stats()["in_flight"] == 0)


def test_omit_usage(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.configure(omit_usage=True)
    r = client.chat.completions.create(model="fake-model", messages=msgs())
    assert r.usage is None
    texts, _, usage = stream_chat(client, messages=msgs(), stream_options={"include_usage": True})
    assert usage is None and texts == [r.choices[0].message.content]
    e = client.embeddings.create(model="emb", input="a b c")
    assert getattr(e, "usage", None) is None


# ----------------------------------------------------------------------------- disconnects


def test_client_disconnect_mid_stream_is_counted(fake: FakeUpstream) -> None:
    fake.configure(token_interval_ms=40, completion_tokens=200)
    body = {"model": "fake-model", "messages": msgs(), "stream": True}
    with (
        httpx.Client(timeout=5) as http,
        http.stream("POST", f"{fake.base_url}/chat/completions", json=body) as resp,
    ):
        lines = resp.iter_lines()
        received = [next(lines) for _ in range(4)]  # role chunk, blank, first token, blank
        assert received[0].startswith("data: ")
    # leaving the with-blocks closed the connection mid-stream
    assert wait_for(lambda: fake.stats()["streams_aborted"] == 1)
    stats = fake.stats()
    assert stats["streams_started"] == 1 and stats["streams_completed"] == 0
    assert wait_for(lambda: fake.stats()["in_flight"] == 0)


async def test_async_sdk_stream_close_is_counted(fake: FakeUpstream) -> None:
    fake.configure(token_interval_ms=40, completion_tokens=200)
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0) as c:
        stream = await c.chat.completions.create(model="fake-model", messages=msgs(), stream=True)
        async for _chunk in stream:
            break
        await stream.close()
    assert wait_for(lambda: fake.stats()["streams_aborted"] == 1)


def test_drop_after_tokens_breaks_the_stream(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.configure(drop_after_tokens=2)
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        stream_chat(client, messages=msgs())
    assert fake.stats()["streams_dropped"] == 1


# ----------------------------------------------------------------------------- other endpoints


def test_completions_streaming_parity(fake: FakeUpstream, client: openai.OpenAI) -> None:
    full = client.completions.create(model="fake-model", prompt=["one two", "three"], n=2)
    assert [c.index for c in full.choices] == [0, 1, 2, 3]
    assert full.choices[0].text == "Echo: one two t4 t5 t6 t7 t8 t9 t10 t11 t12"
    assert full.usage is not None
    assert (full.usage.prompt_tokens, full.usage.completion_tokens) == (3, 48)
    texts = ["", "", "", ""]
    usage = None
    for chunk in client.completions.create(
        model="fake-model",
        prompt=["one two", "three"],
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    ):
        usage = chunk.usage or usage
        for ch in chunk.choices:
            texts[ch.index] += ch.text
    assert texts == [c.text for c in full.choices]
    assert usage is not None and usage.model_dump() == full.usage.model_dump()


def test_embeddings_and_models(fake: FakeUpstream, client: openai.OpenAI) -> None:
    e1 = client.embeddings.create(model="emb", input=["alpha beta", "gamma"])  # base64 on wire
    e2 = client.embeddings.create(model="emb", input=["alpha beta"], encoding_format="float")
    assert len(e1.data) == 2 and len(e1.data[0].embedding) == 16
    assert e1.data[0].embedding == pytest.approx(e2.data[0].embedding, abs=1e-6)
    assert e1.data[0].embedding != e1.data[1].embedding
    assert sum(v * v for v in e2.data[0].embedding) == pytest.approx(1.0, abs=1e-6)
    assert e1.usage.prompt_tokens == 3
    e3 = client.embeddings.create(model="emb", input="x", dimensions=4, encoding_format="float")
    assert len(e3.data[0].embedding) == 4
    fake.configure(models={"big-model": {"completion_tokens": 3}})
    assert {m.id for m in client.models.list()} == {"fake-model", "big-model"}


def test_model_overrides_and_stats(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.configure(models={"tiny": {"completion_tokens": 2, "fail_next": [500]}})
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="tiny", messages=msgs())
    r = client.chat.completions.create(model="tiny", messages=msgs())
    assert r.choices[0].message.content == "Echo: please"
    r = client.chat.completions.create(model="fake-model", messages=msgs())  # global unchanged
    assert r.usage is not None and r.usage.completion_tokens == 12
    stats = fake.stats()
    assert stats["models"] == {"tiny": 2, "fake-model": 1}
    assert stats["total_requests"] == 3
    last = stats["requests"][-1]
    assert last["authorization"] == f"Bearer {KEY}"
    assert last["body"]["model"] == "fake-model"
    fake.reset()
    assert fake.stats()["total_requests"] == 0
    assert fake.config_now()["models"] == {}


def test_latency_and_free_port() -> None:
    port = free_port()
    with FakeUpstream(port=port, latency_ms=150) as slow:
        assert slow.base_url == f"http://127.0.0.1:{port}/v1"
        with httpx.Client() as http:
            t0 = time.perf_counter()
            r = http.post(
                f"{slow.base_url}/chat/completions",
                json={"model": "m", "messages": msgs()},
            )
            elapsed = time.perf_counter() - t0
        assert r.status_code == 200 and 0.15 <= elapsed < 1.0
