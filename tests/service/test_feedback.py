"""Service tests of ``POST /v1/feedback``: ids, tenant scoping, idempotency, errors, and the
outcomes table on SQLite and on real PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.serve.context import task_uuid
from gateway.store.database import create_engine
from gateway.store.models import outcomes
from tests.support.harness import app_client, chat_body, config_dict, create_key, settings_for


def _rows(url: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                res = await conn.execute(select(outcomes).order_by(outcomes.c.created_at))
                return [dict(r) for r in res.mappings()]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _ask(client: TestClient, key: str, task: str | None = None) -> str:
    headers = {"authorization": f"Bearer {key}"}
    if task is not None:
        headers["x-tollgate-task-id"] = task
    resp = client.post("/v1/chat/completions", json=chat_body(), headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.headers["x-tollgate-request-id"]


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_feedback_by_task_and_request_is_idempotent_and_scoped(
    db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("sqlite_url" if db == "sqlite" else "pg_url")
    with app_client(settings_for(config_dict(tmp_path), url)) as (client, _):
        key = create_key(client, "acme")
        other = create_key(client, "globex")
        auth = {"authorization": f"Bearer {key}"}
        rid1 = _ask(client, key, task="job-1")
        rid2 = _ask(client, key, task="job-1")
        lone = _ask(client, key)  # no task header: its own one-request task

        first = client.post(
            "/v1/feedback",
            json={"task_id": "job-1", "success": True, "score": 0.9, "comment": "good"},
            headers=auth,
        )
        assert first.status_code == 201, first.text
        body = first.json()
        assert body["status"] == "created" and body["source"] == "feedback"
        assert body["task_id"] == "job-1" and body["success"] is True and body["score"] == 0.9

        again = client.post(
            "/v1/feedback",
            json={"task_id": "job-1", "success": True, "score": 0.9, "comment": "good"},
            headers=auth,
        )
        assert again.status_code == 200 and again.json()["status"] == "unchanged"
        assert again.json()["id"] == body["id"]

        fixed = client.post(
            "/v1/feedback", json={"task_id": "job-1", "success": False}, headers=auth
        )
        assert fixed.status_code == 200 and fixed.json()["status"] == "updated"
        assert fixed.json()["id"] == body["id"] and fixed.json()["success"] is False

        # feedback on one request of the task: its own row, resolved to the same task
        by_req = client.post(
            "/v1/feedback", json={"request_id": rid2, "success": True}, headers=auth
        )
        assert by_req.status_code == 201, by_req.text
        assert by_req.json()["task_id"] == "job-1" and by_req.json()["request_id"] == rid2
        lone_fb = client.post(
            "/v1/feedback", json={"request_id": lone, "success": True}, headers=auth
        )
        assert lone_fb.json()["task_id"] == lone  # default task id = the request id

        # another tenant can neither see nor touch acme's tasks and requests
        for ref in ({"task_id": "job-1"}, {"request_id": rid1}):
            denied = client.post(
                "/v1/feedback",
                json={**ref, "success": True},
                headers={"authorization": f"Bearer {other}"},
            )
            assert denied.status_code == 404, denied.text
            assert denied.json()["error"]["code"] == "not_found"

    rows = _rows(url)
    assert len(rows) == 3
    acme_tid = rows[0]["tenant_id"]
    by_scope = {r["scope"]: r for r in rows}
    assert by_scope[""]["task_id"] == task_uuid(acme_tid, "job-1")
    assert by_scope[""]["success"] is False and by_scope[""]["comment"] is None
    assert by_scope[rid2]["task_id"] == task_uuid(acme_tid, "job-1")
    assert by_scope[lone]["task_id"] == task_uuid(acme_tid, lone)
    assert {r["source"] for r in rows} == {"feedback"}


def test_feedback_errors_are_openai_shaped(tmp_path: Path, sqlite_url: str) -> None:
    with app_client(settings_for(config_dict(tmp_path), sqlite_url)) as (client, _):
        key = create_key(client)
        auth = {"authorization": f"Bearer {key}"}
        rid = _ask(client, key, task="t")
        cases: list[tuple[dict[str, Any], int, str | None]] = [
            ({"task_id": "nope", "success": True}, 404, "task_id"),
            ({"request_id": "0" * 32, "success": True}, 404, "request_id"),
            ({"success": True}, 400, None),
            ({"task_id": "t", "request_id": rid, "success": True}, 400, None),
            ({"task_id": "t"}, 400, "success"),
            ({"task_id": "t", "success": "maybe"}, 400, "success"),
            ({"task_id": "t", "success": True, "score": 7}, 400, "score"),
            ({"task_id": "t", "success": True, "colour": "red"}, 400, "colour"),
        ]
        for body, status, param in cases:
            resp = client.post("/v1/feedback", json=body, headers=auth)
            assert resp.status_code == status, (body, resp.text)
            err = resp.json()["error"]
            assert err["message"] and err["type"] == "invalid_request_error"
            if param is not None:
                assert err["param"] == param, (body, err)
        assert (
            "exactly one"
            in client.post("/v1/feedback", json={"success": True}, headers=auth).json()["error"][
                "message"
            ]
        )
        unauth = client.post("/v1/feedback", json={"task_id": "t", "success": True})
        assert unauth.status_code == 401


def test_validator_outcomes_are_recorded_and_feedback_wins(tmp_path: Path, sqlite_url: str) -> None:
    """A validator verdict (recorded off the request path) decides a task until the client's
    feedback says otherwise."""
    from gateway.analytics.reports import ReportQuery, report
    from gateway.outcomes.recording import drain_outcomes, schedule_outcome, validator_outcome
    from gateway.store.writer import RecordWriter
    from policies import run_validators
    from policies.schema import Policy

    policy = Policy.model_validate(
        {
            "candidates": ["cheap"],
            "objective": {"kind": "cheapest_adequate", "min_success": 0.0},
            "predictor_fallback": "cheap",
            "escalation": {
                "validators": [{"kind": "non_empty"}, {"kind": "max_length", "chars": 5}]
            },
        }
    )
    assert policy.escalation is not None
    with app_client(settings_for(config_dict(tmp_path), sqlite_url)) as (client, _):
        key = create_key(client)
        rid = _ask(client, key, task="checked")
        detail = client.get(f"/v1/requests/{rid}", headers={"authorization": f"Bearer {key}"})
        tenant_id = _rows_tenant(sqlite_url, rid)
        results = run_validators(policy.escalation.validators, "w0 w1 w2 w3")  # 11 chars
        outcome = validator_outcome(tenant_id, task_uuid(tenant_id, "checked"), rid, results)
        assert detail.status_code == 200 and outcome.success is False

        async def verdict() -> tuple[int, int]:
            engine = create_engine(sqlite_url)
            writer = RecordWriter(engine, tmp_path / "verdict-spool", journal=False)
            await writer.start()
            try:
                schedule_outcome(writer, outcome)
                await drain_outcomes(writer=writer)
                rep = await report(engine, "tasks", ReportQuery("policy"), rollups=False)
                return rep.total.succeeded, rep.total.failed
            finally:
                await writer.close()
                await engine.dispose()

        assert asyncio.run(verdict()) == (0, 1)
        (row,) = _rows(sqlite_url)
        assert row["source"] == "validator" and row["request_id"] == rid
        assert "max_length" in row["comment"] and row["detail"]["checks"][0]["ok"] is True
        ok = client.post(
            "/v1/feedback",
            json={"task_id": "checked", "success": True},
            headers={"authorization": f"Bearer {key}"},
        )
        assert ok.status_code == 201
        spend = client.get("/v1/spend?kind=tasks", headers={"authorization": f"Bearer {key}"})
        assert (spend.json()["total"]["succeeded"], spend.json()["total"]["failed"]) == (1, 0)


def _rows_tenant(url: str, request_id: str) -> str:
    from gateway.store.models import requests

    async def read() -> str:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                q = select(requests.c.tenant_id).where(requests.c.request_id == request_id)
                return str((await conn.execute(q)).scalar())
        finally:
            await engine.dispose()

    return asyncio.run(read())
