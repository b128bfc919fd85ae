"""The local tier's account: utilisation and savings against API prices (pure arithmetic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from gateway.analytics.local_tier import local_tier, reference_backend
from gateway.analytics.reports.query import ReportQuery
from gateway.analytics.reports.results import GroupStats, Report
from gateway.config import Config
from gateway.pricing import Price


def config() -> Config:
    return Config.model_validate(
        {
            "backends": [
                {"name": "gpu", "model": "hosted_vllm/m", "api_base": "http://127.0.0.1:8000/v1",
                 "self_hosted": {"engine": "vllm", "gpu_hour_usd": "3.60", "gpus": 2}},
                {"name": "mini", "model": "openai/mini", "input_cost_per_token": "0.00000015",
                 "output_cost_per_token": "0.0000006"},
                {"name": "big", "model": "openai/big", "input_cost_per_token": "0.0000025",
                 "output_cost_per_token": "0.00001"},
            ]
        }
    )  # fmt: skip


def row(name: str, pt: int, ct: int, spend: str, unpriced: int = 0) -> GroupStats:
    return GroupStats(group=name, label=name, prompt_tokens=pt, completion_tokens=ct,
                      spend=Decimal(spend), unpriced_attempts=unpriced)  # fmt: skip


def test_utilisation_and_savings_against_the_cheapest_api() -> None:
    cfg = config()
    prices = {
        "gpu": Price(Decimal("1e-8"), Decimal("4e-7"), "calibration v1 2026-11-30"),
        "mini": Price(Decimal("0.00000015"), Decimal("0.0000006"), "config"),
        "big": Price(Decimal("0.0000025"), Decimal("0.00001"), "config"),
    }
    assert reference_backend(cfg, prices) == "mini"
    start = datetime(2026, 11, 30, tzinfo=UTC)
    rows = [row("gpu", 400_000_000, 100_000_000, "44.0"), row("big", 1000, 1000, "0.0125"),
            row("mini", 10, 10, "0.0000075", unpriced=1)]  # fmt: skip
    rep = Report("spend", ReportQuery(), rows, GroupStats(group="t", label="t"))
    account = local_tier(rep, cfg, prices, start, start + timedelta(hours=10))
    (gpu,) = account.local
    assert gpu.gpu_cost == Decimal("72.0")  # $3.60 x 2 GPUs x 10 h
    assert gpu.utilisation is not None and abs(gpu.utilisation - 44 / 72) < 1e-9
    # 400M in x $0.15/M + 100M out x $0.60/M = $120 at the cheapest API's prices
    assert gpu.at_api_prices == Decimal("120.0") and gpu.saved == Decimal("48.0")
    data = account.as_dict()
    assert data["api_spend_usd"] == "0.012508" and data["saved_usd"] == "48.000000"
    assert data["unpriced_api_backends"] == ["mini"] and data["hours"] == 10.0
    big = local_tier(rep, cfg, prices, start, start + timedelta(hours=10), "big")
    assert big.local[0].at_api_prices == Decimal("2000.0")  # $2.5/M in, $10/M out
    idle = local_tier(Report("spend", ReportQuery(), [], rows[0]), cfg, prices, start,
                      start + timedelta(hours=1))  # fmt: skip
    assert idle.local[0].saved == Decimal("-7.2") and idle.local[0].utilisation == 0.0
