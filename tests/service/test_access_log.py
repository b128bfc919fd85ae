"""The access log: one JSON line per request on ``tollgate.access`` — failed requests too — with
ids, tenant, policy, backend, status, attempts, tokens, cost, latency and error type, and never
a key or a prompt; ``server.access_log: false`` turns it off."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

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

PROMPT = "secret plans for the quarterly zebra launch"


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def parsed(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def access() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("tollgate.access")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _by_id(lines: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    (line,) = [x for x in lines if x["request_id"] == request_id]
    return line


def test_one_line_per_request_failures_included_no_key_no_prompt(
    tmp_path: Path, sqlite_url: str, access: Lines
) -> None:
    # "cheap" fails every try (1 + max_retries = 2), the policy falls back to "premium"
    caller = FakeCaller({"cheap": Script(fail=[503, 503, 503, 503])})
    cfg = config_dict(tmp_path, circuit_breaker={"failure_threshold": 10})
    with app_client(settings_for(cfg, sqlite_url), caller) as (client, _):
        key = create_key(client)
        auth = {"authorization": f"Bearer {key}", "x-tollgate-task-id": "ticket-7"}
        ok = client.post("/v1/chat/completions", json=chat_body("auto", PROMPT), headers=auth)
        assert ok.status_code == 200, ok.text
        # pinned to the failing backend: every attempt fails, the client gets a 502
        failed = client.post("/v1/chat/completions", json=chat_body("cheap", PROMPT), headers=auth)
        assert failed.status_code == 502, failed.text
        denied = client.post(
            "/v1/chat/completions",
            json=chat_body("cheap", PROMPT),
            headers={"authorization": "Bearer tg-not-a-real-key-0123456789abcdef"},
        )
        assert denied.status_code == 401
        with client.stream(
            "POST",
            "/v1/chat/completions",
            json=chat_body("premium", PROMPT, stream=True),
            headers=auth,
        ) as stream:
            assert [ln for ln in stream.iter_lines() if ln][-1] == "data: [DONE]"
            streamed_id = stream.headers["x-tollgate-request-id"]
        client.get("/healthz")  # probes leave no line

    lines = access.parsed()
    assert len(lines) == 5  # key creation, 3 chat calls, 1 stream; not the probe
    text = "\n".join(access.lines)
    assert key not in text and key[:12] not in text and "tg-not-a-real" not in text
    assert "zebra" not in text and "Bearer" not in text

    line = _by_id(lines, ok.headers["x-tollgate-request-id"])
    prompt, completion = len(PROMPT.split()), 8
    assert line["status"] == 200 and line["policy"] == "default" and line["backend"] == "premium"
    assert line["attempts"] == 3 and line["task_ref"] == "ticket-7" and line["tenant"]
    assert line["task_id"] and line["key_id"] and line["error_type"] is None
    assert line["prompt_tokens"] == prompt and line["completion_tokens"] == completion
    assert Decimal(line["cost_usd"]) == Decimal(PRICE_IN) * prompt + Decimal(PRICE_OUT) * completion
    assert Decimal(line["cost_usd"]) == Decimal(ok.headers["x-tollgate-cost-usd"])
    assert line["latency_ms"] > 0 and line["path"] == "/v1/chat/completions"

    line = _by_id(lines, failed.headers["x-tollgate-request-id"])
    assert line["status"] == 502 and line["attempts"] == 2 and line["backend"] == "cheap"
    assert line["error_type"] == "server_error" and Decimal(line["cost_usd"]) == 0

    line = _by_id(lines, denied.headers["x-tollgate-request-id"])
    assert line["status"] == 401 and line["attempts"] == 0 and line["tenant"] is None
    assert line["error_type"]

    line = _by_id(lines, streamed_id)
    assert line["status"] == 200 and line["streamed"] is True and line["backend"] == "premium"
    assert line["completion_tokens"] == completion and Decimal(line["cost_usd"]) > 0


def test_access_log_can_be_turned_off(tmp_path: Path, sqlite_url: str, access: Lines) -> None:
    cfg = config_dict(tmp_path, server={"access_log": False})
    with app_client(settings_for(cfg, sqlite_url)) as (client, _):
        key = create_key(client)
        resp = client.post(
            "/v1/chat/completions", json=chat_body(), headers={"authorization": f"Bearer {key}"}
        )
        assert resp.status_code == 200
    assert access.lines == []


def test_refused_before_any_attempt_still_names_tenant_key_policy_and_reason(
    tmp_path: Path, sqlite_url: str, access: Lines
) -> None:
    """A request refused after authentication but before any attempt (a budget, an unknown
    model) has no attempt row to read the tenant from: its line still says whose request it
    was, which policy refused it and why — on the Anthropic endpoint too, whose error body
    carries only the coarse Anthropic type."""
    with app_client(settings_for(config_dict(tmp_path), sqlite_url)) as (client, _):
        key = create_key(client, budget=0.0000001)  # less than any answer costs
        auth = {"authorization": f"Bearer {key}"}
        broke = client.post("/v1/chat/completions", json=chat_body("auto", PROMPT), headers=auth)
        assert broke.status_code == 429, broke.text
        messages = client.post(
            "/v1/messages",
            json={
                "model": "auto",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": PROMPT}],
            },
            headers={"x-api-key": key},
        )
        assert messages.status_code == 429, messages.text
        assert messages.json()["error"]["type"] == "rate_limit_error"
        unknown = client.post("/v1/chat/completions", json=chat_body("nope", PROMPT), headers=auth)
        assert unknown.status_code == 404, unknown.text
        counted = client.post(  # no pipeline call: the handler notes who asked
            "/v1/messages/count_tokens",
            json={"model": "auto", "messages": [{"role": "user", "content": PROMPT}]},
            headers={"x-api-key": key},
        )
        assert counted.status_code == 200, counted.text

    lines = access.parsed()
    tenants = {x["tenant"] for x in lines if x["path"] != "/admin/keys"}
    assert len(tenants) == 1 and None not in tenants
    for resp in (broke, messages):
        line = _by_id(lines, resp.headers["x-tollgate-request-id"])
        assert line["status"] == 429 and line["attempts"] == 0 and line["key_id"]
        assert line["policy"] == "default" and line["error_type"] == "budget_exceeded"
    line = _by_id(lines, unknown.headers["x-tollgate-request-id"])
    assert line["status"] == 404 and line["key_id"] and line["policy"] is None
    line = _by_id(lines, counted.headers["x-tollgate-request-id"])
    assert line["status"] == 200 and line["key_id"] and line["attempts"] == 0
    assert "zebra" not in "\n".join(access.lines) and key not in "\n".join(access.lines)


def test_refused_while_the_spool_is_full_still_names_tenant_and_key(
    tmp_path: Path, sqlite_url: str, access: Lines
) -> None:
    """The store down and the spool at its bound: every request is refused (503) before any
    attempt, and those lines are the ones an operator reads to see whom the outage hit."""
    with app_client(settings_for(config_dict(tmp_path), sqlite_url)) as (client, _):
        key = create_key(client)
        client.app.state.runtime.writer.max_spool_bytes = 0  # type: ignore[attr-defined]
        refused = client.post(
            "/v1/chat/completions",
            json=chat_body("auto", PROMPT),
            headers={"authorization": f"Bearer {key}"},
        )
        assert refused.status_code == 503, refused.text
    line = _by_id(access.parsed(), refused.headers["x-tollgate-request-id"])
    assert line["status"] == 503 and line["attempts"] == 0
    assert line["tenant"] and line["key_id"]
