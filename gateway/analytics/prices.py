"""Each configured backend's price as the gateway resolves it (``gateway.pricing``), for offline
work: reports' savings, backtests, learning and ``tollgate config check``. A self-hosted
backend is priced as the running gateway prices it: from its latest stored calibration when the
store has one (``calibrated_prices``), else from the throughput its config declares.

Catalog prices come from litellm's bundled cost map read directly
(``gateway.backends.cost_map``); litellm itself, seconds to import, is only loaded for a model
that reading cannot price."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway.backends.cost_map import CatalogPrices
from gateway.pricing import Price, resolve_price

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from gateway.config import Config
    from gateway.store.calibrations import StoredCalibration

log = logging.getLogger("tollgate.analytics")


def resolve_prices(
    config: Config, calibrations: Mapping[str, StoredCalibration] | None = None
) -> dict[str, Price | None]:
    """backend name -> its price (``None``: unpriced)."""
    catalog = CatalogPrices()
    cal = calibrations or {}
    return {b.name: resolve_price(b, catalog, cal.get(b.name)) for b in config.backends}


async def calibrated_prices(engine: AsyncEngine, config: Config) -> dict[str, Price | None]:
    """The prices with every self-hosted backend's latest stored calibration (``tollgate
    calibrate``); a store without the table, or unreachable, gives the declared ones."""
    if not any(b.self_hosted for b in config.backends):
        return resolve_prices(config)
    from gateway.store.calibrations import latest_calibrations  # SQLAlchemy: not for `config check`

    try:
        latest = await latest_calibrations(engine)
    except Exception:
        log.warning("no stored calibrations readable; pricing self-hosted backends as declared")
        latest = {}
    return resolve_prices(config, latest)
