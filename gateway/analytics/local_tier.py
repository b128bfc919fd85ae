"""The local tier's account over a time window: self-hosted spend next to API spend, how much of
the paid GPU time served traffic, and what the same tokens would have cost at API prices.

Per self-hosted backend, from a spend report grouped by backend (``gateway.analytics.reports``):

- **spend**: what its attempts were priced at (calibrated GPU cost per token: the GPU time the
  tokens took at the calibrated operating point);
- **GPU cost**: what its GPUs cost over the window whether busy or not
  (``gpu_hour_usd * gpus * hours``);
- **utilisation** = spend ÷ GPU cost: the share of paid GPU time that served traffic;
- **at API prices**: the same prompt and completion tokens at a reference API backend's price
  (``--reference``, else the cheapest priced API backend of the config: a conservative bar);
- **saved** = at API prices - GPU cost (the GPUs are paid either way; negative: the local tier
  cost more than sending its traffic to the API would have).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from gateway.analytics.reports.results import Report
from gateway.config import Config
from gateway.pricing import Price


@dataclass(frozen=True)
class LocalBackend:
    backend: str
    prompt_tokens: int
    completion_tokens: int
    spend: Decimal
    gpu_cost: Decimal
    at_api_prices: Decimal | None

    @property
    def utilisation(self) -> float | None:
        return float(self.spend / self.gpu_cost) if self.gpu_cost > 0 else None

    @property
    def saved(self) -> Decimal | None:
        return None if self.at_api_prices is None else self.at_api_prices - self.gpu_cost


@dataclass(frozen=True)
class LocalTier:
    start: datetime
    end: datetime
    reference: str | None  # the API backend whose prices the savings are measured against
    local: list[LocalBackend]
    api_spend: Decimal  # every backend that is not self-hosted, over the same window
    unpriced_api_backends: list[str]

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600

    def as_dict(self) -> dict[str, Any]:
        def money(v: Decimal | None) -> str | None:
            return None if v is None else str(v.quantize(Decimal("1e-6")))

        saved = [b.saved for b in self.local]
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "hours": round(self.hours, 3),
            "reference": self.reference,
            "api_spend_usd": money(self.api_spend),
            "local_spend_usd": money(sum((b.spend for b in self.local), Decimal(0))),
            "gpu_cost_usd": money(sum((b.gpu_cost for b in self.local), Decimal(0))),
            "saved_usd": money(sum((s for s in saved if s is not None), Decimal(0)))
            if saved
            else None,
            "backends": [
                {
                    "backend": b.backend,
                    "prompt_tokens": b.prompt_tokens,
                    "completion_tokens": b.completion_tokens,
                    "spend_usd": money(b.spend),
                    "gpu_cost_usd": money(b.gpu_cost),
                    "utilisation": None if b.utilisation is None else round(b.utilisation, 4),
                    "at_api_prices_usd": money(b.at_api_prices),
                    "saved_usd": money(b.saved),
                }
                for b in self.local
            ],
            "unpriced_api_backends": self.unpriced_api_backends,
        }


def reference_backend(config: Config, prices: dict[str, Price | None]) -> str | None:
    """The cheapest priced backend that is not self-hosted (by output, then input price)."""
    api = [
        (p.output_per_token, p.input_per_token, b.name)
        for b in config.backends
        if b.self_hosted is None and (p := prices.get(b.name)) is not None
    ]
    return min(api)[2] if api else None


def local_tier(
    report: Report,
    config: Config,
    prices: dict[str, Price | None],
    start: datetime,
    end: datetime,
    reference: str | None = None,
) -> LocalTier:
    """The account of every self-hosted backend in ``config`` from a spend report grouped by
    backend over [start, end)."""
    by_backend = {row.group: row for row in report.rows}
    reference = reference or reference_backend(config, prices)
    ref_price = prices.get(reference) if reference else None
    hours = Decimal(str((end - start).total_seconds())) / Decimal(3600)
    local: list[LocalBackend] = []
    api_spend = Decimal(0)
    unpriced: list[str] = []
    for b in config.backends:
        row = by_backend.get(b.name)
        if b.self_hosted is None:
            if row is not None:
                api_spend += row.spend
                if row.unpriced_attempts:
                    unpriced.append(b.name)  # its spend above is a lower bound
            continue
        pt, ct = (row.prompt_tokens, row.completion_tokens) if row else (0, 0)
        gpu_cost = b.self_hosted.gpu_hour_usd * b.self_hosted.gpus * hours
        local.append(
            LocalBackend(
                backend=b.name,
                prompt_tokens=pt,
                completion_tokens=ct,
                spend=row.spend if row else Decimal(0),
                gpu_cost=gpu_cost,
                at_api_prices=ref_price.cost(pt, ct) if ref_price else None,
            )
        )
    return LocalTier(start, end, reference, local, api_spend, unpriced)
