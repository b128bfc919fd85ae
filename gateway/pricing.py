"""Prices and costs: USD per token for each backend, and the Decimal cost of an attempt.

Order of precedence: the config's ``input_cost_per_token``/``output_cost_per_token``; a
self-hosted backend's GPU cost ÷ declared throughput; the provider's published price from
litellm's bundled cost map. A backend with none of these is *unpriced*: its attempts record
a NULL cost and it is reported as such — it is never silently treated as free.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from gateway.backends.upstream import BackendCaller
from gateway.config import BackendConfig

SECONDS_PER_HOUR = Decimal(3600)


@dataclass(frozen=True)
class Price:
    input_per_token: Decimal
    output_per_token: Decimal
    source: str  # "config" | "self_hosted" | "catalog"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        return self.input_per_token * prompt_tokens + self.output_per_token * completion_tokens


def resolve_price(backend: BackendConfig, caller: BackendCaller) -> Price | None:
    if backend.input_cost_per_token is not None and backend.output_cost_per_token is not None:
        return Price(backend.input_cost_per_token, backend.output_cost_per_token, "config")
    if backend.self_hosted is not None:
        per_second = backend.self_hosted.gpu_hour_usd / SECONDS_PER_HOUR
        return Price(
            per_second / Decimal(str(backend.self_hosted.input_tokens_per_second)),
            per_second / Decimal(str(backend.self_hosted.output_tokens_per_second)),
            "self_hosted",
        )
    catalog = caller.catalog_price(backend)
    if catalog is not None:
        return Price(catalog[0], catalog[1], "catalog")
    return None


def format_usd(value: Decimal | None) -> str:
    if value is None:
        return "unpriced"
    return format(value.quantize(Decimal("1e-10")).normalize(), "f")
