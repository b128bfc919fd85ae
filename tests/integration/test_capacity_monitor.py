"""The capacity monitor on real servers: an HTTP endpoint publishing vLLM's metrics, real Redis
shared by two monitors (two replicas), and stored calibrations in a real SQL store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.capacity import CapacityMonitor
from gateway.config import Config
from gateway.state import InProcessState, RedisState
from gateway.store.calibrations import calibration_history, latest_calibrations, save_calibration
from gateway.store.database import create_engine
from gateway.store.migrate import upgrade_database
from tests.support.fakes import FakeCaller
from tests.support.harness import backend
from tests.support.stub_server import QuietHandler, StubServer


class MetricsServer(StubServer):
    """Serves ``/metrics`` in vLLM's exposition format with values the test sets; counts hits."""

    def __init__(self) -> None:
        self.running, self.waiting, self.kv = 0, 0, 0.1
        self.hits = 0
        outer = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_response(404)
                    self.end_headers()
                    return
                outer.hits += 1
                body = (
                    "# TYPE vllm:num_requests_running gauge\n"
                    f'vllm:num_requests_running{{model_name="m"}} {outer.running}\n'
                    f'vllm:num_requests_waiting{{model_name="m"}} {outer.waiting}\n'
                    f'vllm:kv_cache_usage_perc{{model_name="m"}} {outer.kv}\n'
                ).encode()
                self.send_body(200, "text/plain; version=0.0.4", body)

        super().__init__(Handler)
        self.start()


@pytest.fixture
def metrics() -> Iterator[MetricsServer]:
    server = MetricsServer()
    yield server
    server.close()


def config(port: int, **self_hosted: Any) -> Config:
    local = backend(
        "local",
        model="hosted_vllm/m",
        api_base=f"http://127.0.0.1:{port}/v1",
        input_cost_per_token=None,
        output_cost_per_token=None,
        self_hosted={"engine": "vllm", "gpu_hour_usd": "3.6", "poll_interval_s": 0.2,
                     **self_hosted},
    )  # fmt: skip
    return Config.model_validate({"backends": [local, backend("api")]})


def test_vllm_queue_saturates_and_drains(metrics: MetricsServer) -> None:
    cfg = config(metrics.port)
    local = cfg.backends[0]

    async def run() -> None:
        mon = CapacityMonitor(lambda: cfg, InProcessState())
        await mon.start(poll=False)
        try:
            await mon.poll_once()
            assert mon.saturation(local) is None
            metrics.running, metrics.waiting = 30, 9
            await asyncio.sleep(0.25)
            await mon.poll_once()
            assert mon.saturation(local) == "queue 9 > limit 4"
            metrics.waiting = 3  # under the limit, not yet under half of it: still out
            await asyncio.sleep(0.25)
            await mon.poll_once()
            reason = mon.saturation(local)
            assert reason is not None and "draining" in reason
            metrics.waiting = 1
            await asyncio.sleep(0.25)
            await mon.poll_once()
            assert mon.saturation(local) is None
            metrics.waiting, metrics.kv = 0, 0.97
            await asyncio.sleep(0.25)
            await mon.poll_once()
            assert mon.saturation(local) == "KV cache 97% > limit 95%"
        finally:
            await mon.close()

    asyncio.run(run())


def test_stale_reading_falls_back_to_the_in_flight_count(metrics: MetricsServer) -> None:
    cfg = config(metrics.port, max_in_flight=2)
    local = cfg.backends[0]

    async def run() -> None:
        mon = CapacityMonitor(lambda: cfg, InProcessState())
        caller = mon.wrap(FakeCaller())
        await mon.start(poll=False)
        try:
            metrics.running = 1
            await mon.poll_once()
            assert mon.saturation(local) is None
            metrics.close()  # the engine's endpoint goes away: its reading goes stale
            await asyncio.sleep(0.7)
            await mon.poll_once()
            assert mon.load(local).engine is None
            started = asyncio.Event()
            release = asyncio.Event()

            async def hold() -> None:
                async for _ in caller.chat_stream(local, {"messages": []}):
                    started.set()
                    await release.wait()

            tasks = [asyncio.create_task(hold()) for _ in range(3)]
            await started.wait()
            await asyncio.sleep(0.05)
            assert mon.in_flight["local"] == 3
            assert mon.saturation(local) == "3 requests in flight from the gateway (limit 2)"
            release.set()
            await asyncio.gather(*tasks)
            assert mon.in_flight["local"] == 0 and mon.saturation(local) is None
        finally:
            await mon.close()

    metrics.running = 0
    asyncio.run(run())


def test_two_replicas_share_one_reading_and_their_in_flight_through_redis(
    metrics: MetricsServer, redis_url: str, redis_prefix: str
) -> None:
    cfg = config(metrics.port, max_in_flight=4, poll_interval_s=5)
    local = cfg.backends[0]

    async def run() -> None:
        a_state, b_state = RedisState(redis_url, redis_prefix), RedisState(redis_url, redis_prefix)
        a = CapacityMonitor(lambda: cfg, a_state)
        b = CapacityMonitor(lambda: cfg, b_state)
        await a.start(poll=False)
        await b.start(poll=False)
        try:
            metrics.running = 2
            a.in_flight["local"] = 3  # replica A has 3 requests at the engine
            await a.poll_once()
            await b.poll_once()
            assert metrics.hits == 1  # B used A's reading of this interval instead of polling
            assert b.load(local).engine is not None and b.load(local).engine.running == 2
            assert b.load(local).in_flight == 3  # A's requests, seen by B
            b.in_flight["local"] = 1  # B sends one: the engine has 2 + 1, under the limit
            assert b.saturation(local) is None
            b.in_flight["local"] = 2  # a second: 2 + 2, full
            assert b.saturation(local) == "4 requests in the engine (limit 4)"
        finally:
            await a.close()
            await b.close()
            await a_state.close()
            await b_state.close()

    asyncio.run(run())


def test_calibrations_are_versioned_and_picked_up(tmp_path: Path, metrics: MetricsServer) -> None:
    url = f"sqlite:///{tmp_path}/cal.db"
    upgrade_database(url)
    cfg = config(metrics.port)
    record = {
        "backend": "local", "engine": "vllm", "model": "m", "gpu_hour_usd": 3.6, "gpus": 1,
        "slo_p95_ms": 20000, "slo_met": True, "concurrency": 16,
        "output_tokens_per_second": 900.0, "input_tokens_per_second": 3000.0,
        "priced_output_tokens_per_second": 1000.0, "priced_input_tokens_per_second": 30000.0,
        "usd_per_mtok_input": 0.0333, "usd_per_mtok_output": 1.0, "points": [],
    }  # fmt: skip
    priced: list[int] = []

    async def run() -> None:
        engine = create_engine(url)
        mon = CapacityMonitor(
            lambda: cfg, InProcessState(), engine, on_calibration=lambda: priced.append(1)
        )
        try:
            await mon.refresh_calibrations()
            assert mon.calibrations == {} and priced == []
            assert await save_calibration(engine, record) == 1
            assert await save_calibration(engine, {**record, "concurrency": 24}) == 2
            await mon.refresh_calibrations()
            cal = mon.throughput("local")
            assert cal is not None and cal.version == 2 and cal.concurrency == 24
            assert priced == [1]
            limits = mon.limits(cfg.backends[0])
            assert limits is not None and limits.max_in_flight == 24
            assert limits.in_flight_from.startswith("calibration v2 ")
            history = await calibration_history(engine, "local")
            assert [h["version"] for h in history] == [2, 1]
            assert set(await latest_calibrations(engine)) == {"local"}
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_offline_tools_price_self_hosted_backends_from_their_calibration(
    tmp_path: Path, metrics: MetricsServer
) -> None:
    """Backtests and reports price a calibrated self-hosted backend as the gateway does: from
    the latest stored calibration, not from the throughput its config declares."""
    from gateway.analytics.prices import calibrated_prices, resolve_prices

    url = f"sqlite:///{tmp_path}/cal.db"
    upgrade_database(url)
    cfg = config(metrics.port)
    record = {
        "backend": "local", "engine": "vllm", "model": "m", "gpu_hour_usd": 3.6, "gpus": 1,
        "slo_p95_ms": 20000, "slo_met": True, "concurrency": 16,
        "output_tokens_per_second": 90.0, "input_tokens_per_second": 300.0,
        "priced_output_tokens_per_second": 100.0, "priced_input_tokens_per_second": 3000.0,
        "usd_per_mtok_input": 0.333, "usd_per_mtok_output": 10.0, "points": [],
    }  # fmt: skip

    async def run() -> None:
        engine = create_engine(url)
        try:
            declared = resolve_prices(cfg)["local"]
            assert (await calibrated_prices(engine, cfg))["local"] == declared  # none stored
            await save_calibration(engine, record)
            calibrated = (await calibrated_prices(engine, cfg))["local"]
            assert calibrated is not None and calibrated != declared
            assert calibrated.source.startswith("calibration v1")
            # $3.60 an hour over 100 priced output tokens a second: $10 per million
            assert abs(float(calibrated.output_per_token) * 1e6 - 10.0) < 0.01
        finally:
            await engine.dispose()

    asyncio.run(run())
