"""Engine load readers (each engine's published format) and the saturation rule (pure)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from gateway.backends.engines import (
    EngineLoad,
    load_from_prometheus,
    load_from_slots,
    load_from_trtllm_stats,
    load_urls,
    parse_load,
    parse_prometheus,
    server_root,
)
from gateway.capacity import Limits, Load, assess

# Exposition text in the shape each engine publishes (names, labels, HELP/TYPE lines).
VLLM = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen3-30B-A3B"} 7.0
vllm:num_requests_running{engine="1",model_name="Qwen/Qwen3-30B-A3B"} 5.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen3-30B-A3B"} 3.0
vllm:num_requests_waiting{engine="1",model_name="Qwen/Qwen3-30B-A3B"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-30B-A3B"} 0.42
vllm:kv_cache_usage_perc{engine="1",model_name="Qwen/Qwen3-30B-A3B"} 0.61
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="Qwen/Qwen3-30B-A3B"} 1.2345e+06
vllm:prompt_tokens_created{engine="0",model_name="Qwen/Qwen3-30B-A3B"} 1.7e+09
"""

VLLM_V0 = """\
vllm:num_requests_running{model_name="m"} 2.0
vllm:num_requests_waiting{model_name="m"} 0.0
vllm:gpu_cache_usage_perc{model_name="m"} 0.125
"""

SGLANG = """\
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="qwen",tp_rank="0"} 31.0
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="qwen",tp_rank="0"} 12.0
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="qwen",tp_rank="0"} 0.97
"""

LLAMA_SERVER = """\
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 4
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 2
"""

TGI = "tgi_queue_size 6\ntgi_batch_current_size 16\ntgi_request_count 100\n"


def test_prometheus_parser_sums_label_sets_and_skips_comments() -> None:
    metrics = parse_prometheus(VLLM + "bad line here\nvllm:x NaN\n")
    assert metrics["vllm:num_requests_running"] == [7.0, 5.0]
    assert metrics["vllm:prompt_tokens_total"] == [1.2345e6]
    assert "vllm:x" not in metrics and "bad" not in metrics


@pytest.mark.parametrize(
    ("engine", "text", "expected"),
    [
        ("vllm", VLLM, (12, 3, 0.61)),  # data-parallel ranks summed; the fullest KV cache
        ("vllm", VLLM_V0, (2, 0, 0.125)),  # the older metric name
        ("sglang", SGLANG, (31, 12, 0.97)),
        ("llamacpp", LLAMA_SERVER, (4, 2, None)),
        ("tgi", TGI, (16, 6, None)),
    ],
)
def test_engine_prometheus_readers(
    engine: str, text: str, expected: tuple[int, int, float | None]
) -> None:
    load = load_from_prometheus(engine, text, "http://h/metrics")
    assert load is not None
    assert (load.running, load.waiting, load.kv_cache_usage) == expected
    assert load.source == "http://h/metrics" and load.read_at > 0


def test_reader_ignores_other_engines_metrics() -> None:
    assert load_from_prometheus("vllm", SGLANG) is None
    assert load_from_prometheus("openai", VLLM) is None


def test_llamacpp_slots_and_trtllm_stats() -> None:
    slots = [{"id": 0, "is_processing": True}, {"id": 1, "is_processing": False}, {"state": 1}]
    load = load_from_slots(slots)
    assert load is not None and (load.running, load.slots, load.waiting) == (2, 3, None)
    stats = [
        {"iter": 1, "numActiveRequests": 1, "numQueuedRequests": 0},
        {
            "iter": 2,
            "numActiveRequests": 8,
            "numQueuedRequests": 3,
            "kvCacheStats": {"maxNumBlocks": 200, "usedNumBlocks": 150, "freeNumBlocks": 50},
        },
    ]
    load = load_from_trtllm_stats(stats)
    assert load is not None and (load.running, load.waiting, load.kv_cache_usage) == (8, 3, 0.75)
    parsed = parse_load("trtllm", json.dumps(stats), "application/json", "u")
    assert parsed is not None and parsed.running == 8
    assert parse_load("llamacpp", "not json {", "application/json", "u") is None


def test_load_urls_live_on_the_api_base_host() -> None:
    assert server_root("http://gpu-1:8000/v1") == "http://gpu-1:8000"
    assert server_root("http://gpu-1:8000/v1/") == "http://gpu-1:8000"
    assert server_root("https://h/proxy/vllm/v1") == "https://h/proxy/vllm"
    assert load_urls("vllm", "http://127.0.0.1:8000/v1") == ["http://127.0.0.1:8000/metrics"]
    assert load_urls("llamacpp", "http://h:8080/v1") == [
        "http://h:8080/metrics",
        "http://h:8080/slots",
    ]
    assert load_urls("openai", "http://h:8080/v1") == []
    assert load_urls("vllm", "http://h/v1", "http://h:9000/m") == ["http://h:9000/m"]


def test_engine_load_round_trips_through_json() -> None:
    load = EngineLoad(3, 1, 0.5, None, "u", 12.5)
    assert EngineLoad.from_json(load.to_json()) == load


# --------------------------------------------------------------------------- assess

LIMITS = Limits(
    max_waiting=4, max_kv_cache_usage=0.9, max_in_flight=8, resume_fraction=0.5, in_flight_from="x"
)


def reading(running: int | None, waiting: int | None, kv: float | None) -> EngineLoad:
    return EngineLoad(running, waiting, kv, read_at=time.time())


def test_queue_over_limit_saturates_and_says_why() -> None:
    why = assess(LIMITS, Load(reading(4, 5, 0.3), 0, 0), saturated_before=False)
    assert why == "queue 5 > limit 4"
    assert assess(LIMITS, Load(reading(3, 4, 0.3), 0, 0), saturated_before=False) is None


def test_kv_cache_and_in_flight_limits() -> None:
    assert assess(LIMITS, Load(reading(2, 0, 0.95), 0, 0), saturated_before=False) == (
        "KV cache 95% > limit 90%"
    )
    why = assess(LIMITS, Load(reading(8, 0, 0.1), 0, 0), saturated_before=False)
    assert why == "8 requests in the engine (limit 8)"
    assert assess(LIMITS, Load(reading(7, 0, 0.1), 0, 0), saturated_before=False) is None


def test_requests_sent_since_the_reading_count() -> None:
    # the engine said 6 running; this gateway has sent 3 more since: 9, over 8
    why = assess(LIMITS, Load(reading(6, 0, 0.1), 5, 2), saturated_before=False)
    assert why == "9 requests in the engine (limit 8)"
    # a queue already forming grows with every request sent since
    why = assess(LIMITS, Load(reading(6, 2, 0.1), 5, 2), saturated_before=False)
    assert why is not None and why.startswith("queue 5 > limit 4")


def test_without_engine_metrics_the_gateways_in_flight_count_decides() -> None:
    assert assess(LIMITS, Load(None, 8, 8), saturated_before=False) == (
        "8 requests in flight from the gateway (limit 8)"
    )
    assert assess(LIMITS, Load(None, 7, 7), saturated_before=False) is None
    none = Limits(None, None, None, 0.5, "none")
    assert assess(none, Load(None, 1000, 1000), saturated_before=False) is None


def test_hysteresis_keeps_it_out_until_the_queue_drains() -> None:
    assert assess(LIMITS, Load(reading(8, 3, 0.5), 0, 0), saturated_before=True) == (
        "queue 3: draining (limit 4, back under 2)"
    )
    assert assess(LIMITS, Load(reading(4, 2, 0.5), 0, 0), saturated_before=True) is None
    kv = assess(LIMITS, Load(reading(2, 0, 0.85), 0, 0), saturated_before=True)
    assert kv is not None and kv.startswith("KV cache 85%: draining")
    assert assess(LIMITS, Load(reading(2, 0, 0.79), 0, 0), saturated_before=True) is None


# --------------------------------------------------------------------------- config and price


def test_self_hosted_config_forms() -> None:
    from decimal import Decimal

    from gateway.config import BackendConfig, ConfigError, load_config_text
    from gateway.pricing import resolve_price
    from gateway.store.calibrations import StoredCalibration
    from tests.support.fakes import FakeCaller

    issue = {"name": "gpu", "model": "hosted_vllm/m", "api_base": "http://127.0.0.1:8000/v1"}
    declared = BackendConfig.model_validate(
        {**issue, "self_hosted": {"engine": "vllm", "gpu_hour_usd": 3.60,
                                  "output_tokens_per_second": 1000,
                                  "input_tokens_per_second": 10000}}
    )  # fmt: skip
    sh = declared.self_hosted
    assert sh is not None and sh.engine == "vllm" and sh.gpus == 1 and sh.max_waiting == 4
    price = resolve_price(declared, FakeCaller())
    assert price is not None and price.source == "self_hosted"
    assert price.output_per_token == Decimal("0.000001")
    # measured throughput wins over the declared one; the GPU price is the config's
    cal = StoredCalibration("gpu", 3, datetime(2026, 11, 30, tzinfo=UTC), 32, 20000.0, 600.0,
                            580.0, 650.0, True)  # fmt: skip
    price = resolve_price(declared, FakeCaller(), cal)
    assert price is not None and price.source == "calibration v3 2026-11-30"
    assert price.output_per_token == Decimal("0.001") / Decimal(600)
    # two GPUs cost twice as much per token; no throughput and no calibration: unpriced
    two = BackendConfig.model_validate({**issue, "self_hosted": {"gpu_hour_usd": 2, "gpus": 2}})
    assert resolve_price(two, FakeCaller()) is None
    assert resolve_price(two, FakeCaller(), cal) == resolve_price(
        BackendConfig.model_validate({**issue, "self_hosted": {"gpu_hour_usd": 4}}),
        FakeCaller(),
        cal,
    )
    text = """
backends:
  - name: gpu
    model: hosted_vllm/m
    self_hosted: {engine: vllm, gpu_hour_usd: 3.6, output_tokens_per_second: 1000}
"""
    with pytest.raises(ConfigError) as err:
        load_config_text(text, "c.yaml")
    messages = " ".join(str(i) for i in err.value.issues)
    assert "backends[0].self_hosted" in messages and "declare both" in messages
    with pytest.raises(ConfigError) as err:
        load_config_text(text.replace(", output_tokens_per_second: 1000", ""), "c.yaml")
    (found,) = err.value.issues
    assert (
        found.path == "backends[0]" and "set api_base or self_hosted.metrics_url" in found.message
    )
    with pytest.raises(ConfigError) as err:
        load_config_text(text.replace("engine: vllm", "engine: ollama"), "c.yaml")
    assert any(i.path == "backends[0].self_hosted.engine" for i in err.value.issues)
