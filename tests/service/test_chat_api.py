"""Service tests: the ASGI app with in-process test backends (tests.support.fakes.FakeCaller)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from tests.support.fakes import FakeCaller, Script
from tests.support.harness import (
    PRICE_IN,
    PRICE_OUT,
    app_client,
    chat_body,
    config_dict,
    create_key,
    settings_for,
)


def expected_cost(prompt: int, completion: int) -> Decimal:
    return Decimal(PRICE_IN) * prompt + Decimal(PRICE_OUT) * completion


def test_chat_records_priced_attempt_and_headers(tmp_path: Path, sqlite_url: str) -> None:
    with app_client(settings_for(config_dict(tmp_path), sqlite_url)) as (client, _):
        key = create_key(client)
        auth = {"authorization": f"Bearer {key}", "x-tollgate-task-id": "task-42"}
        resp = client.post(
            "/v1/chat/completions", json=chat_body(text="one two three"), headers=auth
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["message"]["content"].startswith("w0")
        h = resp.headers
        assert h["x-tollgate-backend"] == "cheap"
        assert h["x-tollgate-task-id"] == "task-42"
        assert Decimal(h["x-tollgate-cost-usd"]) == expected_cost(3, 8)
        detail = client.get(f"/v1/requests/{h['x-tollgate-request-id']}", headers=auth).json()
        (attempt,) = detail["attempts"]
        assert attempt["status"] == "ok" and attempt["backend"] == "cheap"
        assert attempt["prompt_tokens"] == 3 and attempt["completion_tokens"] == 8
        assert attempt["usage_source"] == "upstream" and attempt["streamed"] is False
        assert Decimal(attempt["cost_usd"]) == expected_cost(3, 8)


def test_streamed_and_plain_calls_cost_the_same(tmp_path: Path, sqlite_url: str) -> None:
    for report_usage in (True, False):
        caller = FakeCaller({"cheap": Script(report_usage=report_usage, answer_tokens=12)})
        with app_client(settings_for(config_dict(tmp_path), sqlite_url), caller) as (client, _):
            key = create_key(client)
            auth = {"authorization": f"Bearer {key}"}
            plain = client.post("/v1/chat/completions", json=chat_body(), headers=auth)
            with client.stream(
                "POST", "/v1/chat/completions", json=chat_body(stream=True), headers=auth
            ) as s:
                lines = [ln for ln in s.iter_lines() if ln]
                stream_id = s.headers["x-tollgate-request-id"]
            assert lines[-1] == "data: [DONE]"
            # the client did not ask for usage, so the usage-only chunk is not forwarded
            assert not any('"usage"' in ln for ln in lines)
            costs = []
            for rid in (plain.headers["x-tollgate-request-id"], stream_id):
                (a,) = client.get(f"/v1/requests/{rid}", headers=auth).json()["attempts"]
                costs.append(
                    (a["prompt_tokens"], a["completion_tokens"], a["cost_usd"], a["usage_source"])
                )
            assert costs[0] == costs[1], costs
            assert costs[0][3] == ("upstream" if report_usage else "counted")


def test_stream_forwards_usage_when_asked(tmp_path: Path, sqlite_url: str) -> None:
    with app_client(settings_for(config_dict(tmp_path), sqlite_url)) as (client, _):
        key = create_key(client)
        body = chat_body(stream=True, stream_options={"include_usage": True})
        with client.stream(
            "POST", "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        ) as s:
            lines = [ln for ln in s.iter_lines() if ln]
        assert any('"usage"' in ln for ln in lines)
        assert s.headers["content-type"].startswith("text/event-stream")


def test_fallback_chain_records_every_attempt(tmp_path: Path, sqlite_url: str) -> None:
    caller = FakeCaller({"cheap": Script(fail=[503, 500])})
    with app_client(settings_for(config_dict(tmp_path), sqlite_url), caller) as (client, fake):
        key = create_key(client)
        auth = {"authorization": f"Bearer {key}"}
        resp = client.post("/v1/chat/completions", json=chat_body(model="auto"), headers=auth)
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-tollgate-backend"] == "premium"
        assert resp.headers["x-tollgate-policy"].startswith("default@")
        assert resp.headers["x-tollgate-attempts"] == "3"
        assert fake.calls == {"cheap": 2, "premium": 1}
        attempts = client.get(
            f"/v1/requests/{resp.headers['x-tollgate-request-id']}", headers=auth
        ).json()["attempts"]
        assert [(a["backend"], a["status"], a["http_status"]) for a in attempts] == [
            ("cheap", "error", 503),
            ("cheap", "error", 500),
            ("premium", "ok", 200),
        ]
        assert attempts[1]["fallback_of"] == attempts[0]["id"]
        assert attempts[2]["fallback_of"] == attempts[1]["id"]
        assert Decimal(attempts[0]["cost_usd"]) == 0


def test_upstream_failure_after_all_fallbacks(tmp_path: Path, sqlite_url: str) -> None:
    caller = FakeCaller({"cheap": Script(fail=[500] * 5), "premium": Script(fail=[503] * 5)})
    with app_client(settings_for(config_dict(tmp_path), sqlite_url), caller) as (client, _):
        key = create_key(client)
        resp = client.post(
            "/v1/chat/completions",
            json=chat_body(model="auto"),
            headers={"authorization": f"Bearer {key}"},
        )
        assert resp.status_code == 502
        err = resp.json()["error"]
        assert err["type"] == "upstream_error" and "all 4 attempts failed" in err["message"]


def test_client_fault_is_not_retried_elsewhere(tmp_path: Path, sqlite_url: str) -> None:
    caller = FakeCaller({"cheap": Script(fail=[400])})
    with app_client(settings_for(config_dict(tmp_path), sqlite_url), caller) as (client, fake):
        key = create_key(client)
        resp = client.post(
            "/v1/chat/completions",
            json=chat_body(model="auto"),
            headers={"authorization": f"Bearer {key}"},
        )
        assert resp.status_code == 400
        assert fake.calls == {"cheap": 1}


def test_circuit_breaker_skips_failing_backend(tmp_path: Path, sqlite_url: str) -> None:
    caller = FakeCaller({"cheap": Script(fail=[500] * 100)})
    with app_client(settings_for(config_dict(tmp_path), sqlite_url), caller) as (client, fake):
        key = create_key(client)
        auth = {"authorization": f"Bearer {key}"}
        for _ in range(3):  # threshold 3: opened during these requests
            assert (
                client.post(
                    "/v1/chat/completions", json=chat_body(model="auto"), headers=auth
                ).status_code
                == 200
            )
        before = fake.calls["cheap"]
        resp = client.post("/v1/chat/completions", json=chat_body(model="auto"), headers=auth)
        assert resp.status_code == 200 and resp.headers["x-tollgate-backend"] == "premium"
        assert fake.calls["cheap"] == before, "an open circuit must not be called"
        # pinned to the broken backend only: 503 with retry-after, not a hang
        resp = client.post("/v1/chat/completions", json=chat_body(model="cheap"), headers=auth)
        assert resp.status_code == 503 and "retry-after" in resp.headers
        metrics = client.get("/metrics").text
        assert 'tollgate_circuit_opened_total{backend="cheap"} 1.0' in metrics


def test_budget_is_enforced(tmp_path: Path, sqlite_url: str) -> None:
    with app_client(settings_for(config_dict(tmp_path), sqlite_url)) as (client, _):
        # each request reserves (3 prompt + 10 max_tokens) at the priciest backend
        key = create_key(client, budget=0.00005)
        auth = {"authorization": f"Bearer {key}"}
        ok = 0
        for _ in range(10):
            resp = client.post("/v1/chat/completions", json=chat_body(max_tokens=10), headers=auth)
            if resp.status_code == 200:
                ok += 1
            else:
                assert resp.status_code == 429
                assert resp.json()["error"]["type"] == "insufficient_quota"
                break
        # each request costs 3*1e-6 + 8*2e-6 = 1.9e-5 => two fit in 5e-5, the third is refused
        assert ok == 2


def test_embeddings_and_completions(tmp_path: Path, sqlite_url: str) -> None:
    with app_client(settings_for(config_dict(tmp_path), sqlite_url)) as (client, _):
        key = create_key(client)
        auth = {"authorization": f"Bearer {key}"}
        emb = client.post(
            "/v1/embeddings", json={"model": "cheap", "input": ["a b", "c"]}, headers=auth
        )
        assert emb.status_code == 200 and len(emb.json()["data"]) == 2
        assert Decimal(emb.headers["x-tollgate-cost-usd"]) == Decimal(PRICE_IN) * 3
        comp = client.post(
            "/v1/completions", json={"model": "cheap", "prompt": "x y"}, headers=auth
        )
        assert comp.status_code == 200 and comp.json()["choices"][0]["text"]


def test_models_lists_backends_policies_aliases(tmp_path: Path, sqlite_url: str) -> None:
    with app_client(settings_for(config_dict(tmp_path), sqlite_url)) as (client, _):
        key = create_key(client)
        ids = {
            m["id"]: m["tollgate"]["kind"]
            for m in client.get("/v1/models", headers={"authorization": f"Bearer {key}"}).json()[
                "data"
            ]
        }
        assert ids == {
            "cheap": "backend",
            "premium": "backend",
            "tollgate/default": "policy",
            "tollgate/auto": "policy",
            "auto": "alias",
        }


def test_non_ascii_task_id_is_refused_before_any_call(tmp_path: Path, sqlite_url: str) -> None:
    with app_client(settings_for(config_dict(tmp_path), sqlite_url)) as (client, fake):
        key = create_key(client)
        body = chat_body(stream=True, metadata={"task_id": "任务-1"})
        resp = client.post(
            "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        )
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "x-tollgate-task-id"
        assert fake.calls == {}


def test_request_specific_errors_do_not_open_the_circuit(tmp_path: Path, sqlite_url: str) -> None:
    # a prompt too long for one backend moves on to the next, but is the request's fault: it
    # must not open that backend's circuit for everyone else (threshold is 3 here)
    caller = FakeCaller({"cheap": Script(fail=[598] * 5)})
    with app_client(settings_for(config_dict(tmp_path), sqlite_url), caller) as (client, fake):
        key = create_key(client)
        auth = {"authorization": f"Bearer {key}"}
        for _ in range(5):
            resp = client.post("/v1/chat/completions", json=chat_body(model="auto"), headers=auth)
            assert resp.status_code == 200 and resp.headers["x-tollgate-backend"] == "premium"
        resp = client.post("/v1/chat/completions", json=chat_body(model="auto"), headers=auth)
        assert resp.headers["x-tollgate-backend"] == "cheap"
        assert fake.calls["cheap"] == 6
        # pinned to the one backend: every backend rejected the prompt -> 400, not 502
        caller.scripts["cheap"].fail = [598]
        resp = client.post("/v1/chat/completions", json=chat_body(model="cheap"), headers=auth)
        assert resp.status_code == 400
