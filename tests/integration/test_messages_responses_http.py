"""The Anthropic Messages and OpenAI Responses APIs end to end: the official ``anthropic`` SDK
and the ``openai`` SDK's ``responses.create`` (plain and streamed, text and tools, a system
prompt, an image, a tool result) → a real ``tollgate serve`` (uvicorn, litellm) → the fake
OpenAI-compatible upstream; every attempt priced in the store."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest

from bench.gateway_process import GatewayProcess
from gateway.devtools.fake_upstream import FakeUpstream
from tests.support.fake_anthropic import TEXT, USAGE, FakeAnthropic

pytestmark = pytest.mark.integration

PRICE_IN, PRICE_OUT = Decimal("0.0000003"), Decimal("0.0000015")
NATIVE_MODEL = "claude-sonnet-4-5-20250929"  # in the pinned litellm's cost map
PIXEL = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
WEATHER = {
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("gw")
    with FakeUpstream(port=0) as upstream, FakeAnthropic() as native:
        config = {
            "backends": [
                {  # an Anthropic model: litellm calls it with the Messages API; catalog-priced
                    "name": "claude-native",
                    "model": f"anthropic/{NATIVE_MODEL}",
                    "api_base": native.base_url,
                    "api_key": "os.environ/FAKE_KEY",
                    "capabilities": ["streaming", "tools", "vision"],
                    "max_retries": 0,
                    "timeout_s": 20,
                },
                {
                    "name": "fake",
                    "model": "openai/fake-model",
                    "api_base": upstream.base_url,
                    "api_key": "os.environ/FAKE_KEY",
                    "input_cost_per_token": str(PRICE_IN),
                    "output_cost_per_token": str(PRICE_OUT),
                    "capabilities": ["streaming", "tools", "vision"],
                    "max_retries": 0,
                    "timeout_s": 20,
                },
            ],
            "aliases": {"claude-sonnet-4-5": "fake"},  # what Claude Code asks for by default
            "predictor": {"enabled": False},
            "store": {"spool_dir": str(work / "spool"), "flush_interval_ms": 20},
        }
        env = {"FAKE_KEY": "upstream-secret", "TOLLGATE_DATABASE_URL": f"sqlite:///{work}/t.db"}
        gw = GatewayProcess(config, work, env)
        created = gw.cli("keys", "create", "--tenant", "acme")
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        gw.start(timeout_s=240)  # a loaded 2-core machine can take a minute to start it
        try:
            yield {"gw": gw, "key": key, "upstream": upstream, "native": native}
        finally:
            gw.stop()


def priced(stack: dict[str, Any], request_id: str) -> dict[str, Any]:
    resp = httpx.get(
        f"{stack['gw'].url}/v1/requests/{request_id}",
        headers={"authorization": f"Bearer {stack['key']}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    (row,) = resp.json()["attempts"]
    assert row["status"] == "ok" and row["backend"] == "fake"
    expected = PRICE_IN * row["prompt_tokens"] + PRICE_OUT * row["completion_tokens"]
    assert row["cost_usd"] is not None and Decimal(row["cost_usd"]) == expected > 0
    return dict(row)


def attempt(stack: dict[str, Any], request_id: str) -> dict[str, Any]:
    resp = httpx.get(
        f"{stack['gw'].url}/v1/requests/{request_id}",
        headers={"authorization": f"Bearer {stack['key']}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    (row,) = resp.json()["attempts"]
    return dict(row)


def claude(stack: dict[str, Any]) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=stack["gw"].url, api_key=stack["key"], max_retries=0, timeout=60
    )


def test_anthropic_sdk_tools_images_and_tool_results(stack: dict[str, Any]) -> None:
    sdk = claude(stack)
    raw = sdk.messages.with_raw_response.create(
        model="claude-sonnet-4-5",
        max_tokens=256,
        system="You are terse.",
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
                    },
                    {"type": "text", "text": "please call tool for Paris"},
                ],
            }
        ],
    )
    message = raw.parse()
    assert message.stop_reason == "tool_use"
    (use,) = [b for b in message.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "city-value"}
    sent = stack["upstream"].stats()["requests"][-1]["body"]
    assert sent["messages"][0] == {"role": "system", "content": "You are terse."}
    assert any(p.get("type") == "image_url" for p in sent["messages"][1]["content"])
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    row = priced(stack, raw.headers["x-tollgate-request-id"])
    assert message.usage.input_tokens == row["prompt_tokens"]
    assert message.usage.output_tokens == row["completion_tokens"]

    follow = sdk.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=256,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "please call tool for Paris"},
            {"role": "assistant", "content": [use.model_dump()]},  # type: ignore[list-item]
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": "sunny and warm"},
                    {"type": "text", "text": "summarise it"},
                ],
            },
        ],
    )
    assert follow.stop_reason == "end_turn" and follow.content[0].type == "text"
    sent = stack["upstream"].stats()["requests"][-1]["body"]
    tool_msg = next(m for m in sent["messages"] if m["role"] == "tool")
    assert tool_msg["tool_call_id"] == use.id and "sunny" in str(tool_msg["content"])


def test_anthropic_sdk_stream(stack: dict[str, Any]) -> None:
    with claude(stack).messages.stream(
        model="fake", max_tokens=64, messages=[{"role": "user", "content": "count one two"}]
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
        request_id = stream.response.headers["x-tollgate-request-id"]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert events.count("content_block_start") == events.count("content_block_stop") == 1
    assert "message_delta" in events and final.stop_reason == "end_turn"
    assert final.content[0].text.startswith("Echo: count one two")  # type: ignore[union-attr]
    row = priced(stack, request_id)
    assert row["streamed"] is True and final.usage.output_tokens == row["completion_tokens"]

    with claude(stack).messages.stream(
        model="fake",
        max_tokens=64,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "call tool now"}],
    ) as stream:
        final = stream.get_final_message()
    (use,) = [b for b in final.content if b.type == "tool_use"]
    assert use.input == {"city": "city-value"} and final.stop_reason == "tool_use"


def test_openai_sdk_responses(stack: dict[str, Any]) -> None:
    sdk = openai.OpenAI(
        base_url=stack["gw"].url + "/v1", api_key=stack["key"], max_retries=0, timeout=60
    )
    raw = sdk.responses.with_raw_response.create(
        model="fake", input="say three words", instructions="be brief"
    )
    response = raw.parse()
    assert response.output_text.startswith("Echo: say three words")
    row = priced(stack, raw.headers["x-tollgate-request-id"])
    assert response.usage is not None and response.usage.output_tokens == row["completion_tokens"]

    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    called = sdk.responses.create(model="fake", input="call tool for Rome", tools=[tool])  # type: ignore[list-item]
    (call,) = [item for item in called.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.arguments == '{"city": "city-value"}'
    answered = sdk.responses.create(
        model="fake",
        tools=[tool],  # type: ignore[list-item]
        input=[
            {"role": "user", "content": "call tool for Rome"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "rainy"},
            {"role": "user", "content": "and now in words"},
        ],
    )
    assert answered.output_text.startswith("Echo: and now in words")

    with sdk.responses.with_streaming_response.create(
        model="fake", input="stream five words please", stream=True
    ) as streamed:
        request_id = streamed.headers["x-tollgate-request-id"]
        events = list(streamed.parse())
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.startswith("Echo: stream five words please")
    row = priced(stack, request_id)
    assert row["streamed"] is True
    assert events[-1].response.usage.output_tokens == row["completion_tokens"]  # type: ignore[union-attr]

    tool_events = list(
        sdk.responses.create(model="fake", input="call tool", tools=[tool], stream=True)  # type: ignore[list-item]
    )
    args = "".join(
        e.delta for e in tool_events if e.type == "response.function_call_arguments.delta"
    )
    assert args == '{"city": "city-value"}'
    (done,) = [e for e in tool_events if e.type == "response.output_item.done"]
    assert done.item.type == "function_call" and done.item.arguments == args  # type: ignore[union-attr]


def test_an_anthropic_backend_is_called_with_messages_and_priced_with_its_cache_tokens(
    stack: dict[str, Any],
) -> None:
    """/v1/messages to an Anthropic model: litellm calls the upstream's Messages API (the
    system prompt's cache_control kept, the backend's own key), and the attempt is priced from
    the whole usage report — cache writes and cache reads at their own prices — plain and
    streamed. The expected cost is computed from the cost map's entries, not copied."""
    import litellm

    entry = litellm.model_cost[NATIVE_MODEL]

    def per_token(key: str) -> Decimal:
        return Decimal(str(entry[key]))

    expected = (
        USAGE["input_tokens"] * per_token("input_cost_per_token")
        + USAGE["cache_creation_input_tokens"] * per_token("cache_creation_input_token_cost")
        + USAGE["cache_read_input_tokens"] * per_token("cache_read_input_token_cost")
        + USAGE["output_tokens"] * per_token("output_cost_per_token")
    )
    prompt = sum(v for k, v in USAGE.items() if k != "output_tokens")
    flat = prompt * per_token("input_cost_per_token") + 20 * per_token("output_cost_per_token")
    assert expected < flat  # cache reads are cheaper than the flat input price would say
    system = [
        {"type": "text", "text": "a long shared preamble", "cache_control": {"type": "ephemeral"}}
    ]
    sdk = claude(stack)
    native = stack["native"]

    raw = sdk.messages.with_raw_response.create(
        model="claude-native",
        max_tokens=64,
        system=system,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "hello"}],
    )
    message = raw.parse()
    assert message.content[0].text == TEXT  # type: ignore[union-attr]
    assert message.usage.cache_read_input_tokens == USAGE["cache_read_input_tokens"]
    assert message.usage.cache_creation_input_tokens == USAGE["cache_creation_input_tokens"]
    sent = native.requests[-1]
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert sent["path"] == "/v1/messages" and sent["body"]["system"] == system
    assert headers["x-api-key"] == "upstream-secret"  # the backend's key, never the client's
    row = attempt(stack, raw.headers["x-tollgate-request-id"])
    assert row["status"] == "ok" and row["backend"] == "claude-native"
    assert Decimal(row["cost_usd"]) == expected == Decimal(raw.headers["x-tollgate-cost-usd"])

    with sdk.messages.stream(
        model="claude-native",
        max_tokens=64,
        system=system,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "hello again"}],
    ) as stream:
        final = stream.get_final_message()
        request_id = stream.response.headers["x-tollgate-request-id"]
    assert final.content[0].text == TEXT  # type: ignore[union-attr]
    assert native.requests[-1]["body"].get("stream") is True
    row = attempt(stack, request_id)
    assert row["streamed"] is True and Decimal(row["cost_usd"]) == expected
