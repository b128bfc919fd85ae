"""Prices and costs: USD per token for each backend, and the Decimal cost of an attempt.

Order of precedence: the config's ``input_cost_per_token``/``output_cost_per_token``; a
self-hosted backend's GPU cost ÷ its throughput (its latest stored calibration, else the
declared throughput); the provider's published price from litellm's bundled cost map — for
which an answer's whole usage report is priced by the map (cached input, cache writes,
reasoning tokens, long-context tiers: ``Price.cost_of``). A backend with none of these is
*unpriced*: its attempts record a NULL cost and it is reported as such — it is never silently
treated as free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from gateway.config import BackendConfig

if TYPE_CHECKING:  # an annotation only: pricing a config must not load the store's tables
    from gateway.store.calibrations import StoredCalibration

SECONDS_PER_HOUR = Decimal(3600)


class CatalogSource(Protocol):
    """Where catalog prices come from: a ``BackendCaller`` (litellm's cost map), or the bundled
    map read without litellm (``gateway.backends.cost_map``) for offline commands."""

    def catalog_price(self, backend: BackendConfig) -> tuple[Decimal, Decimal] | None: ...


@dataclass(frozen=True)
class Price:
    input_per_token: Decimal
    output_per_token: Decimal
    source: str  # "config" | "self_hosted" | "calibration vN <date>" | "catalog"
    model: str | None = None  # catalog prices: the model the cost map prices usage reports for

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        return self.input_per_token * prompt_tokens + self.output_per_token * completion_tokens

    def cost_of(
        self, prompt_tokens: int, completion_tokens: int, reported: Mapping[str, Any] | None
    ) -> Decimal:
        """What one answer cost. A catalog price with the upstream's usage report prices the
        whole report from litellm's cost map (cached input, cache writes, reasoning tokens,
        tiers); config and self-hosted prices are the operator's Decimal per-token prices."""
        if self.model is not None and reported:
            # litellm is loaded already wherever a catalog price was resolved
            from gateway.backends.litellm_adapter import usage_cost

            exact = usage_cost(self.model, dict(reported))
            if exact is not None:
                return exact
        return self.cost(prompt_tokens, completion_tokens)


def resolve_price(
    backend: BackendConfig, caller: CatalogSource, calibration: StoredCalibration | None = None
) -> Price | None:
    if backend.input_cost_per_token is not None and backend.output_cost_per_token is not None:
        return Price(backend.input_cost_per_token, backend.output_cost_per_token, "config")
    sh = backend.self_hosted
    if sh is not None:
        # the GPU price is today's config; the throughputs are measured (or declared)
        per_second = sh.gpu_hour_usd * sh.gpus / SECONDS_PER_HOUR
        if calibration is not None:
            rates = (calibration.priced_input_tps, calibration.priced_output_tps)
            source = f"calibration {calibration.label}"
        elif sh.input_tokens_per_second and sh.output_tokens_per_second:
            rates, source = (sh.input_tokens_per_second, sh.output_tokens_per_second), "self_hosted"
        else:
            return None  # not calibrated yet and no throughput declared: unpriced, not free
        return Price(
            per_second / Decimal(str(rates[0])), per_second / Decimal(str(rates[1])), source
        )
    catalog = caller.catalog_price(backend)
    if catalog is not None:
        return Price(catalog[0], catalog[1], "catalog", model=backend.model)
    return None


def format_usd(value: Decimal | None) -> str:
    if value is None:
        return "unpriced"
    return format(value.quantize(Decimal("1e-10")).normalize(), "f")
