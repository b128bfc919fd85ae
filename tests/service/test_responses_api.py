"""The OpenAI Responses API on the chat pipeline, driven by the ``openai`` SDK's
``responses.create`` over the in-process app (plain and streamed): priced and recorded like chat."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
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


def test_openai_sdk_responses_plain_and_streamed(tmp_path: Path, sqlite_url: str) -> None:
    caller = FakeCaller({"cheap": Script(answer_tokens=5)})
    with app_client(settings_for(config_dict(tmp_path), sqlite_url), caller) as (client, _):
        key = create_key(client)
        sdk = openai.OpenAI(
            base_url=f"{client.base_url}/v1", api_key=key, http_client=client, max_retries=0
        )
        raw = sdk.responses.with_raw_response.create(
            model="auto", input="one two three", instructions="be brief"
        )
        response = raw.parse()
        assert response.output_text == "w0 w1 w2 w3 w4"
        assert response.usage is not None and response.usage.input_tokens == 5
        assert response.usage.output_tokens == 5
        assert raw.headers["x-tollgate-backend"] == "cheap"
        (row,) = attempts(client, key, raw.headers["x-tollgate-request-id"])
        assert Decimal(row["cost_usd"]) == cost(5, 5)

        stream = sdk.responses.create(
            model="cheap", input=[{"role": "user", "content": "a b"}], stream=True
        )
        events = list(stream)
        kinds = [e.type for e in events]
        assert kinds[:2] == ["response.created", "response.in_progress"]
        assert kinds[-1] == "response.completed"
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text == "w0 w1 w2 w3 w4"
        completed = events[-1].response  # type: ignore[union-attr]
        assert completed.output_text == text and completed.usage.output_tokens == 5
        assert [e.sequence_number for e in events] == list(range(len(events)))
        request_id = stream.response.headers["x-tollgate-request-id"]
        (row,) = attempts(client, key, request_id)
        assert row["status"] == "ok" and row["streamed"] is True
        assert Decimal(row["cost_usd"]) == cost(2, 5)

        with pytest.raises(openai.BadRequestError):
            sdk.responses.create(model="cheap", input="x", previous_response_id="resp_1")
