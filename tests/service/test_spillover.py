"""Capacity-aware spill-over through the app: a self-hosted backend at its in-flight limit is
taken out of the candidates (the stored decision says why), traffic goes to the next backend,
and comes back when the local one drains; with nowhere to spill, requests queue locally."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from tests.support.fakes import FakeCaller, Script
from tests.support.harness import app_client, backend, chat_body, config_dict, settings_for


def config(tmp_path: Path, candidates: list[str]) -> dict[str, Any]:
    local = backend(
        "local",
        model="hosted_vllm/moe",
        input_cost_per_token=None,
        output_cost_per_token=None,
        self_hosted={"gpu_hour_usd": "3.6", "output_tokens_per_second": 1000,
                     "input_tokens_per_second": 10000, "max_in_flight": 1},
    )  # fmt: skip
    return config_dict(
        tmp_path,
        backends=[local, backend("api")],
        policies={
            "default": {
                "candidates": candidates,
                "objective": {"kind": "cheapest_adequate", "min_success": 0.5},
                "predictor_fallback": "cheapest",
            }
        },
        server={"anonymous_tenant": "t"},
    )


def decisions(db: str) -> dict[str, dict[str, Any]]:
    engine = create_engine(db)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT request_id, decision FROM requests")).all()
    engine.dispose()
    return {r[0]: json.loads(r[1]) if isinstance(r[1], str) else r[1] for r in rows}


def test_spill_over_while_busy_and_back_when_drained(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/t.db"
    fake = FakeCaller({"local": Script(answer_tokens=20, token_delay_s=0.05)})
    settings = settings_for(config(tmp_path, ["local", "api"]), db)
    with app_client(settings, fake) as (client, _):
        streaming = threading.Event()
        seen: dict[str, str] = {}

        def long_stream() -> None:
            with client.stream("POST", "/v1/chat/completions",
                               json=chat_body("auto", stream=True)) as resp:  # fmt: skip
                seen["backend"] = resp.headers["x-tollgate-backend"]
                for _ in resp.iter_lines():
                    streaming.set()

        worker = threading.Thread(target=long_stream)
        worker.start()
        assert streaming.wait(10)
        busy = client.post("/v1/chat/completions", json=chat_body("auto"))
        worker.join(10)
        assert seen["backend"] == "local"
        assert busy.status_code == 200 and busy.headers["x-tollgate-backend"] == "api"
        time.sleep(0.05)
        back = client.post("/v1/chat/completions", json=chat_body("auto"))
        assert back.headers["x-tollgate-backend"] == "local"
        time.sleep(0.5)  # the writer flushes
    found = decisions(db)
    spilled = found[busy.headers["x-tollgate-request-id"]]
    local = next(c for c in spilled["candidates"] if c["name"] == "local")
    assert local["removed_by"] == "health"
    assert local["detail"] == "saturated: 1 requests in flight from the gateway (limit 1)"
    assert spilled["capacity"] == {"local": "1 requests in flight from the gateway (limit 1)"}
    assert "api" not in spilled["fallbacks"] and spilled["backend"] == "api"
    assert "capacity" not in found[back.headers["x-tollgate-request-id"]]


def test_with_nowhere_to_spill_the_request_queues_at_the_local_tier(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/t.db"
    fake = FakeCaller({"local": Script(answer_tokens=20, token_delay_s=0.05)})
    settings = settings_for(config(tmp_path, ["local"]), db)
    with app_client(settings, fake) as (client, _):
        streaming = threading.Event()

        def long_stream() -> None:
            with client.stream("POST", "/v1/chat/completions",
                               json=chat_body("auto", stream=True)) as resp:  # fmt: skip
                for _ in resp.iter_lines():
                    streaming.set()

        worker = threading.Thread(target=long_stream)
        worker.start()
        assert streaming.wait(10)
        queued = client.post("/v1/chat/completions", json=chat_body("auto"))
        worker.join(10)
        assert queued.status_code == 200 and queued.headers["x-tollgate-backend"] == "local"
        time.sleep(0.5)
    record = decisions(db)[queued.headers["x-tollgate-request-id"]]
    assert record["capacity"] == {"local": "1 requests in flight from the gateway (limit 1)"}
    assert record["backend"] == "local"
