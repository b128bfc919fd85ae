"""Cost where clients look: a streamed answer's last chunk carries what the request cost
(``x_tollgate.cost_usd``; also ``usage.cost_usd`` when the client asked for usage), equal to
the recorded attempts; and catalog prices price the whole usage report through litellm's cost
map (cached input cheaper), while config and self-hosted prices stay the operator's Decimal."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.backends.litellm_adapter import usage_cost
from gateway.config import BackendConfig
from gateway.pricing import Price
from tests.support.fakes import FakeCaller, Script
from tests.support.harness import (
    PRICE_IN,
    PRICE_OUT,
    app_client,
    backend,
    chat_body,
    config_dict,
    create_key,
    settings_for,
)


def _chunks(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(ln[6:]) for ln in lines if ln.startswith("data: {")]


def _recorded(client: Any, key: str, request_id: str) -> Decimal:
    detail = client.get(f"/v1/requests/{request_id}", headers={"authorization": f"Bearer {key}"})
    (row,) = detail.json()["attempts"]
    assert row["status"] == "ok"
    return Decimal(row["cost_usd"])


def test_streamed_answers_carry_their_cost_in_the_last_chunk(
    tmp_path: Path, sqlite_url: str
) -> None:
    caller = FakeCaller({"cheap": Script(answer_tokens=7)})
    with app_client(settings_for(config_dict(tmp_path), sqlite_url), caller) as (client, _):
        key = create_key(client)
        auth = {"authorization": f"Bearer {key}"}
        expected = Decimal(PRICE_IN) * 3 + Decimal(PRICE_OUT) * 7
        for include_usage in (False, True):
            body = chat_body(text="one two three", stream=True)
            if include_usage:
                body["stream_options"] = {"include_usage": True}
            with client.stream("POST", "/v1/chat/completions", json=body, headers=auth) as s:
                lines = [ln for ln in s.iter_lines() if ln]
                request_id = s.headers["x-tollgate-request-id"]
            assert lines[-1] == "data: [DONE]"
            chunks = _chunks(lines)
            last = chunks[-1]
            assert [c for c in chunks if "x_tollgate" in c] == [last]  # only the last one
            assert Decimal(last["x_tollgate"]["cost_usd"]) == expected
            assert last["x_tollgate"]["request_id"] == request_id
            assert _recorded(client, key, request_id) == expected
            text = "".join(
                c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
            )
            assert text == "w0 w1 w2 w3 w4 w5 w6"  # nothing held back was lost
            if include_usage:
                assert last["choices"] == [] and Decimal(last["usage"]["cost_usd"]) == expected
                assert last["usage"]["completion_tokens"] == 7
            else:
                assert last["choices"][0]["finish_reason"] == "stop" and "usage" not in last


class CachedUsageCaller(FakeCaller):
    """Reports that most of the prompt was read from the provider's cache; catalog prices
    from litellm's map (the production caller's behaviour)."""

    async def chat(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]:
        resp = await super().chat(backend, body)
        resp["usage"]["prompt_tokens_details"] = {"cached_tokens": 3}
        return resp

    def catalog_price(self, backend: BackendConfig) -> tuple[Decimal, Decimal] | None:
        import litellm

        info = litellm.model_cost[backend.model.partition("/")[2]]
        return (
            Decimal(str(info["input_cost_per_token"])),
            Decimal(str(info["output_cost_per_token"])),
        )


def test_catalog_prices_price_the_whole_usage_report(tmp_path: Path, sqlite_url: str) -> None:
    catalog = backend("catalog", model="openai/gpt-4o")
    del catalog["input_cost_per_token"], catalog["output_cost_per_token"]
    cfg = config_dict(tmp_path, backends=[catalog, backend("cheap"), backend("premium")])
    caller = CachedUsageCaller({"catalog": Script(answer_tokens=10)})
    with app_client(settings_for(cfg, sqlite_url), caller) as (client, _):
        key = create_key(client)
        resp = client.post(
            "/v1/chat/completions",
            json=chat_body("catalog", "a b c d"),
            headers={"authorization": f"Bearer {key}"},
        )
        assert resp.status_code == 200, resp.text
        recorded = _recorded(client, key, resp.headers["x-tollgate-request-id"])
    usage = {
        "prompt_tokens": 4,
        "completion_tokens": 10,
        "total_tokens": 14,
        "prompt_tokens_details": {"cached_tokens": 3},
    }
    exact = usage_cost("openai/gpt-4o", usage)
    naive = usage_cost("openai/gpt-4o", {"prompt_tokens": 4, "completion_tokens": 10})
    assert exact is not None and naive is not None and exact < naive
    assert recorded == exact == Decimal(resp.headers["x-tollgate-cost-usd"])


def test_config_and_self_hosted_prices_ignore_the_cost_map() -> None:
    report = {
        "prompt_tokens": 1000,
        "completion_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 900},
    }
    config = Price(Decimal("0.000001"), Decimal("0.000002"), "config")
    assert config.cost_of(1000, 10, report) == Decimal("0.00102")
    gpu = Price(Decimal(1) / 24000, Decimal(1) / 2400, "self_hosted")
    assert gpu.cost_of(1000, 10, report) == Decimal(1000) / 24000 + Decimal(10) / 2400
