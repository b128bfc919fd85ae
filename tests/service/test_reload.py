"""Hot reload under traffic: a request keeps the config snapshot it started with, and a reload
mid-request never leaks the old config (or its prices) into the requests that follow."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from gateway.outcomes.recording import drain_outcomes
from gateway.settings import Settings
from tests.support.fakes import FakeCaller, Script
from tests.support.harness import backend, chat_body, config_dict, create_key

ADMIN = {"authorization": "Bearer admin-secret-for-tests"}
OLD_IN, OLD_OUT = Decimal("0.000001"), Decimal("0.000002")
NEW_IN, NEW_OUT = Decimal("0.000004"), Decimal("0.000008")
PASS = '{"success": true, "score": 0.9, "reason": "fine"}'


def _write(path: Path, cfg: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(cfg))


def _settings(path: Path, cfg: dict[str, Any], url: str) -> Settings:
    from gateway.config import Config

    _write(path, cfg)
    return Settings(
        config=Config.model_validate(cfg),
        config_path=str(path),
        database_url=url,
        admin_key="admin-secret-for-tests",
    )


def _reload(client: TestClient) -> None:
    result = client.post("/admin/reload", headers=ADMIN)
    assert result.status_code == 200 and result.json()["changed"], result.text


def _wait_for(check: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class InFlight:
    """One request sent from a thread of its own, so a reload can happen while it runs."""

    def __init__(self, send: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = send()
            except BaseException as exc:  # reported by join()
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> Any:
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the in-flight request never finished"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def slow_cheap() -> Iterator[FakeCaller]:
    yield FakeCaller({"cheap": Script(delay_s=0.6), "judge": Script(text=PASS)})


def test_reload_mid_request_prices_new_requests_at_the_new_price(
    tmp_path: Path, sqlite_url: str, slow_cheap: FakeCaller
) -> None:
    """A request in flight during a reload is priced by its own config; once it ends, the next
    request is priced by the new config (it used to put the old price back in a shared cache,
    so new requests stayed at the old price until the next reload)."""
    path = tmp_path / "config.yaml"
    cfg = config_dict(tmp_path)
    settings = _settings(path, cfg, sqlite_url)
    with TestClient(_app(settings, slow_cheap)) as client:
        key = create_key(client)
        auth = {"authorization": f"Bearer {key}"}
        slow = InFlight(
            lambda: client.post("/v1/chat/completions", json=chat_body("cheap"), headers=auth)
        )
        _wait_for(lambda: slow_cheap.calls["cheap"] == 1)  # it is waiting on the backend
        cfg["backends"][0]["input_cost_per_token"] = str(NEW_IN)
        cfg["backends"][0]["output_cost_per_token"] = str(NEW_OUT)
        _write(path, cfg)
        _reload(client)
        started_before = slow.join()
        assert started_before.status_code == 200, started_before.text
        # 3 prompt words, 8 answer words: priced at the config it started with
        assert Decimal(started_before.headers["x-tollgate-cost-usd"]) == OLD_IN * 3 + OLD_OUT * 8

        slow_cheap.scripts["cheap"].delay_s = 0
        after = client.post("/v1/chat/completions", json=chat_body("cheap"), headers=auth)
        assert Decimal(after.headers["x-tollgate-cost-usd"]) == NEW_IN * 3 + NEW_OUT * 8
        models = client.get("/v1/models", headers=auth).json()["data"]
        (cheap,) = [m for m in models if m["id"] == "cheap"]
        assert Decimal(cheap["tollgate"]["input_cost_per_token"]) == NEW_IN


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_keeps_its_config_snapshot_to_its_end(
    tmp_path: Path, sqlite_url: str, slow_cheap: FakeCaller, stream: bool
) -> None:
    """A reload that removes the judge mid-request does not change how the request that was
    already running ends: it started under a config that grades every answer, so it is graded;
    the next request is not."""
    path = tmp_path / "config.yaml"
    cfg = config_dict(
        tmp_path,
        backends=[backend("cheap"), backend("premium"), backend("judge")],
        judge={"backend": "judge", "sample": 1.0},
    )
    if stream:
        slow_cheap.scripts["cheap"] = Script(token_delay_s=0.1)
    settings = _settings(path, cfg, sqlite_url)
    with TestClient(_app(settings, slow_cheap)) as client:
        key = create_key(client)
        auth = {"authorization": f"Bearer {key}"}

        def send() -> str:
            body = chat_body("cheap", stream=stream)
            if not stream:
                resp = client.post("/v1/chat/completions", json=body, headers=auth)
                assert resp.status_code == 200, resp.text
                return resp.text
            with client.stream("POST", "/v1/chat/completions", json=body, headers=auth) as resp:
                assert resp.status_code == 200
                return "".join(resp.iter_text())

        slow = InFlight(send)
        _wait_for(lambda: slow_cheap.calls["cheap"] == 1)
        del cfg["judge"]
        _write(path, cfg)
        _reload(client)
        assert "w7" in slow.join()
        assert client.portal is not None
        client.portal.call(drain_outcomes)
        assert slow_cheap.calls["judge"] == 1, "graded under the config it started with"

        slow_cheap.scripts["cheap"] = Script()
        send()
        client.portal.call(drain_outcomes)
        assert slow_cheap.calls["judge"] == 1, "the new config has no judge"


def _app(settings: Settings, caller: FakeCaller) -> Any:
    from gateway.app import create_app

    return create_app(settings, caller=caller, predictor=None)
