"""Each configured backend's price as the gateway resolves it (``gateway.pricing``), for offline
work: reports' savings, backtests, learning and ``tollgate config check``.

Catalog prices come from litellm's bundled cost map read directly
(``gateway.backends.cost_map``); litellm itself, seconds to import, is only loaded for a model
that reading cannot price."""

from __future__ import annotations

from gateway.backends.cost_map import CatalogPrices
from gateway.config import Config
from gateway.pricing import Price, resolve_price


def resolve_prices(config: Config) -> dict[str, Price | None]:
    """backend name -> its price (``None``: unpriced)."""
    catalog = CatalogPrices()
    return {b.name: resolve_price(b, catalog) for b in config.backends}
