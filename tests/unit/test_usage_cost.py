"""Catalog prices from litellm's cost map for a whole usage report: cached input, cache writes,
reasoning tokens and long-context tiers each change the price, as the map says they should.
Expected values are computed from the map's own entries (not copied numbers)."""

from __future__ import annotations

from decimal import Decimal

import litellm
import pytest

from gateway.backends.litellm_adapter import USD_RESOLUTION, usage_cost


def price(model: str, key: str) -> Decimal:
    return Decimal(str(litellm.model_cost[model][key]))


def usd(value: Decimal) -> Decimal:
    return value.quantize(USD_RESOLUTION)


def test_plain_usage_is_input_times_price_plus_output_times_price() -> None:
    got = usage_cost("openai/gpt-4o", {"prompt_tokens": 1000, "completion_tokens": 100})
    assert got == usd(
        1000 * price("gpt-4o", "input_cost_per_token")
        + 100 * price("gpt-4o", "output_cost_per_token")
    )


def test_cached_input_is_billed_at_the_cache_read_price() -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "prompt_tokens_details": {"cached_tokens": 800},
    }
    expected = (
        200 * price("gpt-4o", "input_cost_per_token")
        + 800 * price("gpt-4o", "cache_read_input_token_cost")
        + 100 * price("gpt-4o", "output_cost_per_token")
    )
    got = usage_cost("openai/gpt-4o", usage)
    assert got == usd(expected)
    plain = usage_cost("openai/gpt-4o", {"prompt_tokens": 1000, "completion_tokens": 100})
    assert got is not None and plain is not None and got < plain


def test_cache_writes_are_billed_at_the_cache_creation_price() -> None:
    model = "anthropic.claude-3-5-haiku-20241022-v1:0"
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "cache_creation_input_tokens": 500}
    expected = (
        500 * price(model, "input_cost_per_token")
        + 500 * price(model, "cache_creation_input_token_cost")
        + 100 * price(model, "output_cost_per_token")
    )
    assert usage_cost(f"bedrock/{model}", usage) == usd(expected)


def test_reasoning_tokens_are_billed_at_their_own_price() -> None:
    model = "dashscope/qwen-plus-2025-04-28"
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 300,
        "completion_tokens_details": {"reasoning_tokens": 200},
    }
    expected = (
        100 * price(model, "input_cost_per_token")
        + 100 * price(model, "output_cost_per_token")
        + 200 * price(model, "output_cost_per_reasoning_token")
    )
    assert usage_cost(model, usage) == usd(expected)


def test_long_prompts_are_billed_at_the_tier_above_200k() -> None:
    usage = {"prompt_tokens": 250_000, "completion_tokens": 100}
    expected = 250_000 * price(
        "gemini-2.5-pro", "input_cost_per_token_above_200k_tokens"
    ) + 100 * price("gemini-2.5-pro", "output_cost_per_token_above_200k_tokens")
    assert usage_cost("gemini-2.5-pro", usage) == usd(expected)


@pytest.mark.parametrize("model", ["openai/no-such-model-xyz", "hosted_vllm/Qwen/Qwen3-30B"])
def test_a_model_outside_the_map_has_no_catalog_cost(model: str) -> None:
    assert usage_cost(model, {"prompt_tokens": 10, "completion_tokens": 10}) is None
