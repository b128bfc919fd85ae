"""The calibration's arithmetic: points, the operating point under an SLO, and the price."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.analytics.calibrate import served_model_name
from gateway.analytics.calibration_stats import (
    Point,
    Sample,
    choose,
    percentile,
    prices,
    saturated,
    summarise,
)
from gateway.analytics.prompt_mix import builtin_mix, default_mix, read_mix


def point(c: int, out_tps: float, p95: float, errors: int = 0, in_tps: float = 100.0) -> Point:
    return Point(c, 10, errors, 1.0, out_tps, in_tps, 1.0, 10.0, 20.0, p95 / 2, p95, 100.0)


def test_summarise_counts_only_answered_requests() -> None:
    samples = [
        Sample(True, 1.0, 0.1, 100, 50),
        Sample(True, 3.0, 0.3, 300, 150),
        Sample(False, 0.5, error="503 overloaded"),
    ]
    p = summarise(4, samples, 2.0)
    assert (p.requests, p.errors, p.first_error) == (3, 1, "503 overloaded")
    assert p.output_tokens_per_second == 100.0 and p.input_tokens_per_second == 200.0
    assert p.requests_per_second == 1.0 and p.mean_output_tokens == 100.0
    assert p.ttft_p50_ms == 200.0 and p.latency_p95_ms == 2900.0
    assert percentile([], 0.5) is None and percentile([1.0], 0.95) == 1.0


def test_operating_point_is_the_most_throughput_under_the_slo() -> None:
    points = [point(1, 40, 5_000), point(8, 300, 12_000), point(32, 600, 19_000),
              point(64, 800, 32_000)]  # fmt: skip
    chosen, met = choose(points, 20_000)
    assert (chosen.concurrency, met) == (32, True)
    chosen, met = choose(points, 40_000)
    assert chosen.concurrency == 64
    # errors disqualify a point; nothing under the SLO: the lowest concurrency, flagged
    chosen, _ = choose([point(1, 40, 5_000), point(8, 300, 9_000, errors=3)], 20_000)
    assert chosen.concurrency == 1
    chosen, met = choose(points, 1_000)
    assert (chosen.concurrency, met) == (1, False)


def test_rising_stops_at_errors_latency_or_a_flat_curve() -> None:
    assert saturated([point(1, 40, 5_000, errors=2)], 20_000)
    assert saturated([point(1, 40, 45_000)], 20_000)
    assert saturated([point(1, 100, 1), point(2, 102, 1), point(4, 103, 1)], 20_000)
    assert not saturated([point(1, 100, 1), point(2, 180, 1), point(4, 185, 1)], 20_000)


def test_the_operating_points_tokens_cost_exactly_the_gpu_time() -> None:
    op = point(32, out_tps=600.0, p95=1, in_tps=660.0)
    money = prices(op, prefill_tps=20_000.0, gpu_hour_usd=3.5, gpus=1)
    assert money["prefill_share"] == pytest.approx(0.033)
    per_second = 3.5 / 3600
    spent = (op.input_tokens_per_second * money["usd_per_mtok_input"]
             + op.output_tokens_per_second * money["usd_per_mtok_output"]) / 1e6  # fmt: skip
    assert spent == pytest.approx(per_second, rel=1e-4)
    double = prices(op, prefill_tps=20_000.0, gpu_hour_usd=3.5, gpus=2)
    assert double["usd_per_mtok_output"] == pytest.approx(2 * money["usd_per_mtok_output"])
    with pytest.raises(ValueError, match="cannot price"):
        prices(op, prefill_tps=None, gpu_hour_usd=3.5, gpus=1)


def test_served_model_names() -> None:
    assert served_model_name("hosted_vllm/Qwen/Qwen3-30B-A3B") == "Qwen/Qwen3-30B-A3B"
    assert served_model_name("openai//tmp/olmoe") == "/tmp/olmoe"
    assert served_model_name("anthropic/claude") == "anthropic/claude"
    assert served_model_name("smollm2") == "smollm2"


def test_mixes(tmp_path: Path) -> None:
    mix, name = default_mix(tmp_path)  # no shared data here: the built-in mix
    assert name.startswith("built-in") and mix == builtin_mix()
    assert all(p.text and p.max_tokens >= 8 for p in mix)
    path = tmp_path / "mix.jsonl"
    path.write_text(json.dumps({"prompt": "hi", "max_tokens": 7}) + "\n\n")
    (only,) = read_mix(path)
    assert (only.text, only.max_tokens) == ("hi", 7)
