"""Each configured backend's price as the gateway resolves it (``gateway.pricing``), for offline
work: reports' savings, backtests, learning and ``tollgate config check``.

litellm's cost map (slow to import) is only loaded when a backend has neither a configured nor
a self-hosted price."""

from __future__ import annotations

from typing import Any

from gateway.config import Config
from gateway.pricing import Price, resolve_price


class _NoCatalog:
    def catalog_price(self, backend: Any) -> None:
        return None


def catalog_caller(config: Config) -> Any:
    """What ``resolve_price`` asks for catalog prices: litellm only when some backend needs it."""
    if all(
        b.input_cost_per_token is not None or b.self_hosted is not None for b in config.backends
    ):
        return _NoCatalog()
    from gateway.backends.litellm_adapter import LiteLLMCaller  # heavy: only for catalog prices

    return LiteLLMCaller()


def resolve_prices(config: Config) -> dict[str, Price | None]:
    """backend name -> its price (``None``: unpriced)."""
    caller = catalog_caller(config)
    return {b.name: resolve_price(b, caller) for b in config.backends}
