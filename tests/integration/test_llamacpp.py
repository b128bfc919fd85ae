"""The local tier end to end on a real model server: llama.cpp (llama-cpp-python[server], built
from source) serving the quantized SmolLM2-135M-Instruct GGUF on CPU, behind a real
``tollgate serve``, with the fake upstream as the API tier.

- ``tollgate calibrate`` measures the server and stores calibration v1; the gateway, started
  on that store, prices the local backend from it;
- real generations are routed through the gateway to the local tier (plain and streamed);
- while the local server is busy (its calibrated... here: configured one request at a time), new
  requests spill to the API tier with the reason in the stored decision, and come back when
  it drains.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.gateway_process import GatewayProcess
from gateway.devtools.fake_upstream import FakeUpstream
from tests.support.harness import VENV_BIN, backend, config_dict
from tests.support.llamacpp import MODEL_ALIAS, LlamaServer, llama_server_or_skip

pytestmark = pytest.mark.timeout(900)

GPU_HOUR_USD = Decimal("0.05")  # what the CPU is taken to cost per hour
API_IN, API_OUT = "0.000003", "0.000015"  # the API tier: $3 / $15 per million tokens
PROMPTS = [
    ("Name three primary colours.", 16),
    ("What is the capital of France? Answer in one word.", 8),
    ("Write one sentence about the sea.", 24),
    ("Count from one to five in words.", 16),
]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    llama_server_or_skip()
    with LlamaServer(tmp_path_factory.mktemp("llama")) as server:
        yield server


@pytest.fixture(scope="module")
def api() -> Iterator[FakeUpstream]:
    with FakeUpstream(port=0) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-tier")


def gateway_config(workdir: Path, llama: LlamaServer, api: FakeUpstream) -> dict[str, Any]:
    local = {
        "name": "local",
        "model": f"openai/{MODEL_ALIAS}",
        "api_base": llama.base_url,
        "self_hosted": {
            "engine": "llamacpp",  # llama-cpp-python publishes no /metrics or /slots: in-flight
            "gpu_hour_usd": str(GPU_HOUR_USD),
            "output_tokens_per_second": 10,  # declared, until calibrated
            "input_tokens_per_second": 100,
            "max_in_flight": 1,  # llama-cpp-python serves one request at a time
            "poll_interval_s": 0.2,
        },
        "timeout_s": 300,
        "max_retries": 0,
        "capabilities": ["streaming"],
    }
    remote = backend(
        "api",
        model="openai/api-model",
        api_base=api.base_url,
        input_cost_per_token=API_IN,
        output_cost_per_token=API_OUT,
    )
    return config_dict(
        workdir,
        backends=[local, remote],
        policies={
            "default": {
                "candidates": ["local", "api"],
                "objective": {"kind": "cheapest_adequate", "min_success": 0.5},
                "predictor_fallback": "cheapest",
            }
        },
        server={"anonymous_tenant": "local-tier"},
    )


@pytest.fixture(scope="module")
def calibration(workdir: Path, llama: LlamaServer, api: FakeUpstream) -> dict[str, Any]:
    """``tollgate calibrate local --json`` against the real server, stored in the store."""
    prompts = workdir / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": p, "max_tokens": n}) + "\n" for p, n in PROMPTS)
    )
    gw = GatewayProcess(gateway_config(workdir, llama, api), workdir, env(workdir))
    done = subprocess.run(
        [
            str(VENV_BIN / "tollgate"),
            "calibrate",
            "local",
            "--config",
            str(gw.config_path),
            "--json",
            "--max-concurrency",
            "2",
            "--requests-per-worker",
            "2",
            "--min-requests",
            "4",
            "--prompts",
            str(prompts),
            "--slo-p95-ms",
            "120000",
        ],
        env=gw.env,
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=600,
    )  # fmt: skip (2 shared cores: a point can take a minute)
    assert done.returncode == 0, done.stderr
    if os.environ.get("TOLLGATE_TEST_SHOW"):
        from gateway.analytics.calibration_stats import Calibration, table

        record = json.loads(done.stdout)
        print(done.stderr, table(Calibration(**record)), sep="\n")
    return dict(json.loads(done.stdout))


def env(workdir: Path) -> dict[str, str]:
    return {"TOLLGATE_DATABASE_URL": f"sqlite:///{workdir}/store.db", "TOLLGATE_REDIS_URL": ""}


@pytest.fixture(scope="module")
def gateway(
    workdir: Path, llama: LlamaServer, api: FakeUpstream, calibration: dict[str, Any]
) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(gateway_config(workdir, llama, api), workdir, env(workdir))
    gw.start(timeout_s=240)  # 2 shared cores: start-up can be slow
    try:
        yield gw
    finally:
        gw.stop()


def chat(gw: GatewayProcess, prompt: str, max_tokens: int, **kw: Any) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0, **kw}  # fmt: skip
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=300)


def rows(workdir: Path) -> list[dict[str, Any]]:
    for _ in range(50):  # the writer flushes every 20 ms
        with sqlite3.connect(workdir / "store.db") as db:
            db.row_factory = sqlite3.Row
            found = [dict(r) for r in db.execute("SELECT * FROM requests ORDER BY created_at")]
        if found:
            return found
        time.sleep(0.1)
    return []


def row_of(workdir: Path, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for row in rows(workdir):
            if row["request_id"] == request_id:
                return row
        time.sleep(0.1)
    raise AssertionError(f"request {request_id} not recorded")


def test_calibrate_measures_and_stores_the_server(calibration: dict[str, Any]) -> None:
    assert calibration["backend"] == "local" and calibration["version"] == 1
    assert calibration["output_tokens_per_second"] > 0
    assert calibration["input_tokens_per_second"] > 0
    assert calibration["usd_per_mtok_output"] > 0 and calibration["usd_per_mtok_input"] > 0
    assert [p["concurrency"] for p in calibration["points"]][:2] == [1, 2]
    assert all(p["errors"] == 0 for p in calibration["points"])
    # the identity the price comes from: the operating point's tokens cost the GPU's time
    per_second = float(GPU_HOUR_USD) / 3600
    spent = (
        calibration["input_tokens_per_second"] * calibration["usd_per_mtok_input"]
        + calibration["output_tokens_per_second"] * calibration["usd_per_mtok_output"]
    ) / 1e6
    assert spent == pytest.approx(per_second, rel=1e-3)


def test_real_generations_through_the_gateway_priced_by_the_calibration(
    gateway: GatewayProcess, workdir: Path, calibration: dict[str, Any]
) -> None:
    resp = chat(gateway, "What is the capital of France? Answer in one word.", 16)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-tollgate-backend"] == "local"
    answer = resp.json()
    assert answer["choices"][0]["message"]["content"].strip()
    assert answer["usage"]["completion_tokens"] > 0

    body = {"model": "auto", "stream": True, "max_tokens": 16, "temperature": 0,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Name three primary colours."}]}  # fmt: skip
    text = ""
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=300) as s:
        assert s.status_code == 200 and s.headers["x-tollgate-backend"] == "local"
        streamed_id = s.headers["x-tollgate-request-id"]
        for line in s.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices") or []:
                    text += (choice.get("delta") or {}).get("content") or ""
    assert text.strip()  # llama-cpp-python streams no usage: the gateway counts the tokens

    per_second = GPU_HOUR_USD / 3600
    price_in = per_second / Decimal(str(calibration["priced_input_tokens_per_second"]))
    price_out = per_second / Decimal(str(calibration["priced_output_tokens_per_second"]))
    for request_id in (resp.headers["x-tollgate-request-id"], streamed_id):
        row = row_of(workdir, request_id)
        assert row["backend"] == "local" and row["status"] == "ok"
        assert row["completion_tokens"] > 0
        expected = price_in * row["prompt_tokens"] + price_out * row["completion_tokens"]
        assert Decimal(str(row["cost_usd"])) == pytest.approx(expected, rel=Decimal("1e-6"))


def test_spills_to_the_api_while_the_local_server_is_busy_and_comes_back(
    gateway: GatewayProcess, workdir: Path
) -> None:
    first_chunk = threading.Event()
    long_done: dict[str, Any] = {}

    def long_stream() -> None:
        story = "Tell a long story about a lighthouse."
        body = {"model": "auto", "stream": True, "max_tokens": 40, "temperature": 0,
                "messages": [{"role": "user", "content": story}]}  # fmt: skip
        with httpx.stream(
            "POST", gateway.url + "/v1/chat/completions", json=body, timeout=300
        ) as s:
            long_done["backend"] = s.headers.get("x-tollgate-backend")
            for line in s.iter_lines():
                if line.startswith("data: ") and '"content"' in line:
                    first_chunk.set()
        long_done["finished"] = time.monotonic()

    worker = threading.Thread(target=long_stream)
    worker.start()
    assert first_chunk.wait(120), "the local server never started streaming"
    assert long_done.get("backend") == "local"

    spilled = [chat(gateway, "Say hi.", 8) for _ in range(2)]
    worker.join(600)  # 2 shared cores: a few tokens a second
    assert "finished" in long_done
    for resp in spilled:
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-tollgate-backend"] == "api"
        decision = json.loads(row_of(workdir, resp.headers["x-tollgate-request-id"])["decision"])
        local = next(c for c in decision["candidates"] if c["name"] == "local")
        assert local["removed_by"] == "health"
        assert local["detail"] == "saturated: 1 requests in flight from the gateway (limit 1)"
        assert decision["capacity"] == {"local": local["detail"].removeprefix("saturated: ")}

    time.sleep(0.3)  # the stream's slot is free: the local tier takes traffic again
    back = chat(gateway, "Say hi.", 8)
    assert back.status_code == 200 and back.headers["x-tollgate-backend"] == "local"


def test_report_shows_the_local_tier_next_to_the_api(
    gateway: GatewayProcess, workdir: Path, calibration: dict[str, Any]
) -> None:
    chat(gateway, "Say hi.", 8)  # at least one local answer, whatever ran before
    time.sleep(0.5)
    done = gateway.cli("report", "local", "--since", "2h", "--json")
    assert done.returncode == 0, done.stderr
    account = json.loads(done.stdout)
    (local,) = account["backends"]
    assert local["backend"] == "local" and local["completion_tokens"] > 0
    assert account["reference"] == "api"
    # its spend is its tokens at the calibrated price; the GPU is paid for the whole window
    assert Decimal(local["spend_usd"]) > 0
    assert Decimal(local["gpu_cost_usd"]) == pytest.approx(GPU_HOUR_USD * 2, rel=Decimal("0.01"))
    api_price = (
        Decimal(API_IN) * local["prompt_tokens"] + Decimal(API_OUT) * local["completion_tokens"]
    )
    assert Decimal(local["at_api_prices_usd"]) == pytest.approx(api_price, abs=Decimal("1e-6"))
    saved = Decimal(local["at_api_prices_usd"]) - Decimal(local["gpu_cost_usd"])
    assert Decimal(local["saved_usd"]) == pytest.approx(saved, abs=Decimal("2e-6"))
