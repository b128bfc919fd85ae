"""The bundled cost map read without litellm prices every model it answers for exactly as
litellm does, for every entry of the verified providers in the pinned litellm's map; models
it does not answer for fall back to litellm."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gateway.backends.cost_map import VERIFIED_PROVIDERS, CatalogPrices, _entries, bundled_price
from gateway.config import BackendConfig


def _litellm_price(litellm: Any, model: str) -> tuple[Decimal, Decimal] | None:
    try:
        info = litellm.get_model_info(model)
    except Exception:
        return None
    inp, out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    return None if inp is None or out is None else (Decimal(str(inp)), Decimal(str(out)))


def test_direct_lookup_agrees_with_litellm_for_every_verified_entry() -> None:
    from gateway.backends.litellm_adapter import litellm

    names = []
    for key, entry in _entries().items():
        provider = entry.get("litellm_provider") if isinstance(entry, dict) else None
        if provider in VERIFIED_PROVIDERS:
            names.append(key)
            if not key.startswith(f"{provider}/"):
                names.append(f"{provider}/{key}")
    assert len(names) > 500  # the map is there and the providers are in it
    answered = 0
    for model in names:
        found = bundled_price(model)
        if found is None:
            continue
        answered += 1
        assert found == _litellm_price(litellm, model), model
    assert answered > 500


def test_unverified_or_unknown_models_fall_back_to_litellm() -> None:
    assert bundled_price("openai/gpt-4o-mini") is not None
    assert bundled_price("no-such-provider/no-such-model") is None
    vertex = next(
        k
        for k, e in _entries().items()
        if isinstance(e, dict)
        and str(e.get("litellm_provider", "")).startswith("vertex_ai")
        and e.get("input_cost_per_token") is not None
    )
    assert bundled_price(vertex) is None  # litellm resolves these with its own rules

    prices = CatalogPrices()
    known = BackendConfig(name="a", model="openai/gpt-4o-mini")
    assert prices.catalog_price(known) == bundled_price("openai/gpt-4o-mini")
    assert prices._litellm is None  # answered without importing litellm
    unknown = BackendConfig(name="b", model="openai/not-a-model-anyone-prices")
    assert prices.catalog_price(unknown) is None and prices._litellm is not None
