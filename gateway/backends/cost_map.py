"""litellm's bundled cost map, read as the JSON file it is, without importing litellm.

Importing litellm takes seconds; commands that only need a price (``tollgate config check``,
reports, backtests) read the map that ships inside the pinned litellm package instead — the same
file litellm itself loads (``LITELLM_LOCAL_MODEL_COST_MAP``, ``gateway.settings``).

litellm resolves a model name with provider-specific rules (``get_model_info``). A direct
lookup — the name itself, or ``provider/name`` whose entry names that provider — gives the same
per-token prices for every entry of the providers in :data:`VERIFIED_PROVIDERS`
(``tests/unit/test_cost_map.py`` compares all of them with litellm's answers). For any other
model :func:`bundled_price` answers ``None`` and :class:`CatalogPrices` asks litellm.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.config import BackendConfig

MAP_FILE = "model_prices_and_context_window_backup.json"

#: providers whose entries a direct lookup prices exactly as litellm does (pinned version)
VERIFIED_PROVIDERS = frozenset(
    {
        "anthropic",
        "bedrock",
        "cerebras",
        "cohere",
        "cohere_chat",
        "databricks",
        "deepinfra",
        "deepseek",
        "fireworks_ai",
        "gemini",
        "groq",
        "mistral",
        "openai",
        "openrouter",
        "perplexity",
        "sambanova",
        "text-completion-openai",
        "together_ai",
        "xai",
    }
)


@functools.cache
def _entries() -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / MAP_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _entry(model: str) -> dict[str, Any] | None:
    entries = _entries()
    entry = entries.get(model)
    if entry is None and "/" in model:
        provider, _, name = model.partition("/")
        entry = entries.get(name)
        if not isinstance(entry, dict) or entry.get("litellm_provider") != provider:
            return None
    return entry if isinstance(entry, dict) else None


def bundled_price(model: str) -> tuple[Decimal, Decimal] | None:
    """(USD per input token, per output token) of ``model`` when the bundled map answers for it
    as litellm would; ``None`` otherwise (ask litellm: it may still know the model)."""
    entry = _entry(model)
    if entry is None or entry.get("litellm_provider") not in VERIFIED_PROVIDERS:
        return None
    inp, out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
    if inp is None or out is None:
        return None
    return Decimal(str(inp)), Decimal(str(out))


class CatalogPrices:
    """Catalog prices for ``gateway.pricing.resolve_price``: the bundled map read directly, and
    litellm (imported on first need) for the models it cannot answer for."""

    def __init__(self) -> None:
        self._litellm: Any = None

    def catalog_price(self, backend: BackendConfig) -> tuple[Decimal, Decimal] | None:
        found = bundled_price(backend.model)
        if found is not None:
            return found
        if self._litellm is None:
            from gateway.backends.litellm_adapter import LiteLLMCaller

            self._litellm = LiteLLMCaller()
        result: tuple[Decimal, Decimal] | None = self._litellm.catalog_price(backend)
        return result
