"""The Anthropic Messages API on the chat pipeline, driven by the official ``anthropic`` SDK over
the in-process app: same routing, pricing and recording as chat completions; Anthropic-shaped
errors; the key in ``x-api-key``; count_tokens."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.support.fakes import FakeCaller, Script
from tests.support.harness import (
    PRICE_IN,
    PRICE_OUT,
    app_client,
    config_dict,
    create_key,
    settings_for,
)


def cost(prompt: int, completion: int) -> Decimal:
    return Decimal(PRICE_IN) * prompt + Decimal(PRICE_OUT) * completion


def attempts(client: Any, key: str, request_id: str) -> list[dict[str, Any]]:
    resp = client.get(f"/v1/requests/{request_id}", headers={"authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.text
    return list(resp.json()["attempts"])


def test_anthropic_sdk_plain_streamed_and_counted(tmp_path: Path, sqlite_url: str) -> None:
    caller = FakeCaller({"cheap": Script(answer_tokens=6)})
    with app_client(settings_for(config_dict(tmp_path), sqlite_url), caller) as (client, _):
        key = create_key(client)
        sdk = anthropic.Anthropic(
            base_url=str(client.base_url), api_key=key, http_client=client, max_retries=0
        )
        raw = sdk.messages.with_raw_response.create(
            model="tollgate/default",
            max_tokens=64,
            system="answer briefly",
            messages=[{"role": "user", "content": "one two three"}],
            extra_headers={"x-tollgate-task-id": "claude-task"},
        )
        message = raw.parse()
        assert message.type == "message" and message.role == "assistant"
        assert message.content[0].type == "text" and message.content[0].text == "w0 w1 w2 w3 w4 w5"
        assert message.stop_reason == "end_turn"
        # the system prompt became the first chat message (5 words in all)
        assert message.usage.input_tokens == 5 and message.usage.output_tokens == 6
        assert caller.bodies["cheap"][-1]["messages"][0] == {
            "role": "system",
            "content": "answer briefly",
        }
        assert raw.headers["x-tollgate-backend"] == "cheap"
        assert raw.headers["x-tollgate-task-id"] == "claude-task"
        assert Decimal(raw.headers["x-tollgate-cost-usd"]) == cost(5, 6)
        (row,) = attempts(client, key, raw.headers["x-tollgate-request-id"])
        assert row["status"] == "ok" and Decimal(row["cost_usd"]) == cost(5, 6)

        with sdk.messages.stream(
            model="cheap", max_tokens=64, messages=[{"role": "user", "content": "a b c d"}]
        ) as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_message()
            request_id = stream.response.headers["x-tollgate-request-id"]
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
        assert "content_block_start" in kinds and "content_block_stop" in kinds
        assert kinds[-2] == "message_delta"
        assert final.content[0].text == "w0 w1 w2 w3 w4 w5"
        assert final.usage.output_tokens == 6 and final.stop_reason == "end_turn"
        (row,) = attempts(client, key, request_id)
        assert row["status"] == "ok" and row["streamed"] is True
        assert Decimal(row["cost_usd"]) == cost(4, 6)

        counted = sdk.messages.count_tokens(
            model="tollgate/default", messages=[{"role": "user", "content": "a b c d e"}]
        )
        assert counted.input_tokens == 5


def test_anthropic_errors_have_anthropic_shape(tmp_path: Path, sqlite_url: str) -> None:
    with app_client(settings_for(config_dict(tmp_path), sqlite_url)) as (client, _):
        key = create_key(client)
        bad = anthropic.Anthropic(
            base_url=str(client.base_url), api_key="tg-wrong", http_client=client, max_retries=0
        )
        with pytest.raises(anthropic.AuthenticationError) as denied:
            bad.messages.create(
                model="cheap", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            )
        assert denied.value.body["type"] == "error"  # type: ignore[index]
        sdk = anthropic.Anthropic(
            base_url=str(client.base_url), api_key=key, http_client=client, max_retries=0
        )
        with pytest.raises(anthropic.NotFoundError):
            sdk.messages.create(
                model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            )
        resp = client.post(
            "/v1/messages",
            json={"model": "cheap", "messages": [{"role": "user", "content": "x"}]},
            headers={"x-api-key": key},
        )
        assert resp.status_code == 400
        assert resp.json()["error"]["type"] == "invalid_request_error"
        assert "max_tokens" in resp.json()["error"]["message"]
