"""Decisions made without the predictor, through the app: they say so (header, stored
decision, /metrics), an ordered ``predictor_fallback`` list serves from its first available
backend, and a client whose request nothing can serve is told which backends and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.support.fakes import FakeCaller, FakePredictor, Script
from tests.support.harness import (
    app_client,
    backend,
    chat_body,
    config_dict,
    create_key,
    settings_for,
)


def three_backends(tmp_path: Path, fallback: Any, **sections: Any) -> dict[str, Any]:
    """cheap needs a key that is not set; local and premium can be called."""
    backends = [
        backend("cheap", api_key="os.environ/TOLLGATE_TEST_UNSET_KEY"),
        backend("local"),
        backend("premium"),
    ]
    policy = {
        "candidates": ["cheap", "local", "premium"],
        "objective": {"kind": "cheapest_adequate", "min_success": 0.5},
        "predictor_fallback": fallback,
    }
    return config_dict(tmp_path, backends, policies={"default": policy}, **sections)


def post(client: TestClient, key: str) -> Any:
    return client.post(
        "/v1/chat/completions",
        json=chat_body(model="auto"),
        headers={"authorization": f"Bearer {key}"},
    )


def counter(client: TestClient, name: str, label: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name) and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_first_available_fallback_serves_and_the_response_says_why(
    tmp_path: Path, sqlite_url: str, monkeypatch: Any
) -> None:
    monkeypatch.delenv("TOLLGATE_TEST_UNSET_KEY", raising=False)
    settings = settings_for(three_backends(tmp_path, ["cheap", "local"]), sqlite_url)
    with app_client(settings) as (client, _):  # no predictor: every decision falls back
        key = create_key(client)
        resp = post(client, key)
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-tollgate-backend"] == "local"
        assert resp.headers["x-tollgate-predictor"] == "fallback:disabled"
        assert resp.headers["x-tollgate-fallbacks"] == "premium"
        assert counter(client, "tollgate_predictor_fallbacks_total", 'reason="disabled"') == 1
        assert counter(client, "tollgate_routing_decisions_total", 'predictor="fallback"') == 1


def test_a_slow_predictor_falls_back_with_reason_timeout(
    tmp_path: Path, sqlite_url: str, monkeypatch: Any
) -> None:
    monkeypatch.delenv("TOLLGATE_TEST_UNSET_KEY", raising=False)
    cfg = three_backends(
        tmp_path, ["cheap", "local"], predictor={"enabled": True, "timeout_ms": 20}
    )
    slow = FakePredictor({"local": 0.9, "premium": 0.9}, delay_s=1.0)
    with app_client(settings_for(cfg, sqlite_url), predictor=slow) as (client, _):
        key = create_key(client)
        resp = post(client, key)
        assert resp.status_code == 200
        assert resp.headers["x-tollgate-predictor"] == "fallback:timeout"
        assert counter(client, "tollgate_predictor_fallbacks_total", 'reason="timeout"') == 1
        # the wait is recorded with its outcome, and it ended at the timeout, not at the answer
        assert counter(client, "tollgate_predictor_wait_seconds_count", 'status="timeout"') == 1
        assert counter(client, "tollgate_predictor_wait_seconds_sum", 'status="timeout"') < 0.9


def test_a_predictor_that_answers_is_ok(tmp_path: Path, sqlite_url: str, monkeypatch: Any) -> None:
    monkeypatch.delenv("TOLLGATE_TEST_UNSET_KEY", raising=False)
    cfg = three_backends(tmp_path, "cheap", predictor={"enabled": True, "timeout_ms": 5000})
    fast = FakePredictor({"local": 0.9, "premium": 0.9})
    with app_client(settings_for(cfg, sqlite_url), predictor=fast) as (client, _):
        key = create_key(client)
        resp = post(client, key)
        assert resp.status_code == 200
        assert resp.headers["x-tollgate-predictor"] == "ok"
        assert resp.headers["x-tollgate-predictor-version"] == "fake-predictor-1"
        assert resp.headers["x-tollgate-decision"] == "objective"
        assert counter(client, "tollgate_routing_decisions_total", 'predictor="ok"') == 1
        assert counter(client, "tollgate_predictor_fallbacks_total", "reason=") == 0
        # how long the decision waited for it: one observation, under the request's timeout
        wait = "tollgate_predictor_wait_seconds"
        assert counter(client, f"{wait}_count", 'status="ok"') == 1
        assert 0 < counter(client, f"{wait}_sum", 'status="ok"') < 5.0


def test_no_available_fallback_tells_the_client_what_was_tried(
    tmp_path: Path, sqlite_url: str, monkeypatch: Any
) -> None:
    monkeypatch.delenv("TOLLGATE_TEST_UNSET_KEY", raising=False)
    settings = settings_for(three_backends(tmp_path, ["cheap", "error"]), sqlite_url)
    with app_client(settings) as (client, _):
        key = create_key(client)
        resp = post(client, key)
        assert resp.status_code == 503
        err = resp.json()["error"]
        assert err["code"] == "predictor_fallback_unavailable"
        assert (
            "cheap (health: environment variable TOLLGATE_TEST_UNSET_KEY is not set)"
            in err["message"]
        )


def test_when_every_attempt_fails_the_error_names_each_backend(
    tmp_path: Path, sqlite_url: str
) -> None:
    caller = FakeCaller({"cheap": Script(fail=[500] * 5), "premium": Script(fail=[503] * 5)})
    with app_client(settings_for(config_dict(tmp_path), sqlite_url), caller) as (client, _):
        key = create_key(client)
        resp = client.post(
            "/v1/chat/completions",
            json=chat_body(model="auto"),
            headers={"authorization": f"Bearer {key}"},
        )
        assert resp.status_code == 502
        message = resp.json()["error"]["message"]
        assert "cheap: " in message and "status 500" in message
        assert "premium: " in message and "status 503" in message


def test_the_dashboard_counts_decisions_made_without_the_predictor(
    tmp_path: Path, sqlite_url: str, monkeypatch: Any
) -> None:
    monkeypatch.delenv("TOLLGATE_TEST_UNSET_KEY", raising=False)
    settings = settings_for(three_backends(tmp_path, ["cheap", "local"]), sqlite_url)
    with app_client(settings) as (client, _):
        key = create_key(client)
        for _ in range(3):
            assert post(client, key).status_code == 200
        pinned = client.post(
            "/v1/chat/completions",
            json=chat_body(model="premium"),
            headers={"authorization": f"Bearer {key}"},
        )
        assert pinned.status_code == 200 and "x-tollgate-predictor" not in pinned.headers
        data = client.get("/v1/dashboard/data", headers={"authorization": f"Bearer {key}"}).json()
    assert data["predictor"] == {
        "decisions": 3,
        "predicted": 0,
        "fallbacks": 3,
        "fallback_rate": 1.0,
        "by_reason": {"disabled": 3},
        "unrecorded": 0,
    }
    page = client.get("/dashboard").text
    assert 'id="predictor"' in page and "predictor-fallbacks" in page
