"""What a replay knows of the config's backends: the policy engine's :class:`BackendFacts`
(from their prices, ``gateway.analytics.prices``), whether their credentials are set, and the
datasets' token convention."""

from __future__ import annotations

import math
from collections.abc import Mapping

from gateway.config import BackendConfig, Config
from gateway.pricing import Price
from gateway.serve.backend_facts import facts_for
from policies import BackendFacts


def credentials_ok(backend: BackendConfig) -> bool:
    """A backend can be called from here (same rule as the running gateway's)."""
    return backend.missing_credentials() is None


def backend_facts(
    config: Config,
    prices: Mapping[str, Price | None],
    *,
    healthy: Mapping[str, bool] | None = None,
    profiles: Mapping[str, str] | None = None,
) -> dict[str, BackendFacts]:
    """Facts for every configured backend: prices, window, capabilities, tags, tenant lists.

    ``healthy`` (default: all) marks backends the replay cannot use; ``profiles`` overrides the
    predictor profile (``backend.profile``). p95 latency is unknown, circuits are closed.
    """
    return {
        b.name: facts_for(
            b,
            prices.get(b.name),
            healthy=True if healthy is None else healthy.get(b.name, True),
            profile=(profiles or {}).get(b.name),
        )
        for b in config.backends
    }


def estimate_tokens(text: str) -> int:
    """The datasets' token convention (``../shared/data/README.md``): ceil(chars / 4)."""
    return math.ceil(len(text) / 4)
