"""Service tests of the judge (``gateway.outcomes.judge``): sampled answers are graded off the
request path by a judge backend, its verdicts are task outcomes with their own cost, that cost
is reported apart from traffic spend; on SQLite and real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from typer.testing import CliRunner

from gateway.config import DEFAULT_RUBRIC
from gateway.outcomes.judge import parse_verdict, rubric_sha, sampled
from gateway.outcomes.recording import drain_outcomes
from gateway.pricing import format_usd
from gateway.store.database import create_engine
from gateway.store.models import outcomes
from tests.support.fakes import FakeCaller, Script, prompt_words, words
from tests.support.harness import (
    app_client,
    backend,
    chat_body,
    config_dict,
    create_key,
    settings_for,
)

ADMIN = {"authorization": "Bearer admin-secret-for-tests"}
J_IN, J_OUT = Decimal("0.00001"), Decimal("0.00003")  # the judge's prices (traffic: 1e-6/2e-6)
PASS = '{"success": true, "score": 0.8, "reason": "answers the question"}'
FAIL = 'Verdict: ```json\n{"success": false, "score": 0.1, "reason": "off topic"}\n```'


def _config(tmp_path: Path, **judge: Any) -> dict[str, Any]:
    return config_dict(
        tmp_path,
        backends=[
            backend("cheap"),
            backend("premium"),
            backend(
                "judge",
                input_cost_per_token=str(J_IN),
                output_cost_per_token=str(J_OUT),
                capabilities=["streaming", "json_mode"],
            ),
        ],
        judge={"backend": "judge", "sample": 1.0, **judge},
    )


def _outcomes(url: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                res = await conn.execute(select(outcomes).order_by(outcomes.c.created_at))
                return [dict(r) for r in res.mappings()]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _settle(client: TestClient) -> None:
    """Wait for the judge tasks on the app's event loop (the client's portal runs it) and for
    the record writer to write their verdicts."""
    assert client.portal is not None
    writer = client.app.state.runtime.writer  # type: ignore[attr-defined]
    client.portal.call(partial(drain_outcomes, writer=writer))


def _metric(client: TestClient, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def _ask(client: TestClient, key: str, task: str | None = None, **body: Any) -> str:
    headers = {"authorization": f"Bearer {key}"}
    if task is not None:
        headers["x-tollgate-task-id"] = task
    resp = client.post("/v1/chat/completions", json=chat_body(**body), headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.headers["x-tollgate-request-id"]


def _judge_cost(body: dict[str, Any], answer: str) -> Decimal:
    """What the fake judge call costs: its prompt and answer words at the judge's prices."""
    return J_IN * prompt_words(body["messages"]) + J_OUT * words(answer)


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_sampled_answers_get_a_judge_outcome_with_backend_and_cost(
    db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("sqlite_url" if db == "sqlite" else "pg_url")
    caller = FakeCaller({"judge": Script(text=PASS)})
    with app_client(settings_for(_config(tmp_path), url), caller) as (client, fake):
        key = create_key(client)
        rid = _ask(client, key, text="what is the capital of France", model="auto")
        _settle(client)
        assert fake.calls["judge"] == 1
        (sent,) = fake.bodies["judge"]
        assert sent["response_format"] == {"type": "json_object"}  # json_mode capability
        assert sent["max_tokens"] == 256
        prompt = sent["messages"][1]["content"]
        assert "what is the capital of France" in prompt and "w0 w1 w2" in prompt
        assert "success" in sent["messages"][0]["content"]
        assert _metric(client, "tollgate_judge_verdicts_total", result="pass") == 1
        cost = _judge_cost(sent, PASS)
        assert _metric(client, "tollgate_judge_cost_usd_total", backend="judge") == pytest.approx(
            float(cost)
        )
        # the judge's own call is not an attempt of the client's request
        detail = client.get(f"/v1/requests/{rid}", headers={"authorization": f"Bearer {key}"})
        assert [a["backend"] for a in detail.json()["attempts"]] == ["cheap"]

    (row,) = _outcomes(url)
    assert row["source"] == "judge" and row["request_id"] == rid and row["scope"] == rid
    assert row["success"] is True and row["score"] == 0.8
    assert row["comment"] == "answers the question"
    assert row["backend"] == "judge"
    assert Decimal(str(row["cost_usd"])) == cost and cost > 0
    assert row["detail"]["rubric_sha"] == rubric_sha(DEFAULT_RUBRIC)
    assert row["detail"]["model"] == "openai/judge-model"


def test_sample_zero_and_policy_filter_judge_nothing(tmp_path: Path, sqlite_url: str) -> None:
    with app_client(settings_for(_config(tmp_path, sample=0.0), sqlite_url)) as (client, fake):
        key = create_key(client)
        for _ in range(5):
            _ask(client, key, model="auto")
        _settle(client)
        assert fake.calls["judge"] == 0
    assert _outcomes(sqlite_url) == []

    restricted = _config(tmp_path, policies=["default"])
    caller = FakeCaller({"judge": Script(text=PASS)})
    with app_client(settings_for(restricted, sqlite_url), caller) as (client, fake):
        key = create_key(client, "globex")
        routed = _ask(client, key, model="tollgate/default")
        _ask(client, key, model="cheap")  # pinned to a backend: no policy, not judged
        _settle(client)
        assert fake.calls["judge"] == 1
    assert [r["request_id"] for r in _outcomes(sqlite_url)] == [routed]


def test_sampling_is_deterministic_by_request_id(tmp_path: Path, sqlite_url: str) -> None:
    ids = [uuid.uuid5(uuid.NAMESPACE_URL, f"req-{i}").hex for i in range(200)]
    for fraction in (0.05, 0.3, 0.7):
        picked = [i for i in ids if sampled(i, fraction)]
        assert picked == [i for i in ids if sampled(i, fraction)]  # the same decision again
        assert abs(len(picked) / len(ids) - fraction) < 0.08, (fraction, len(picked))
    # a larger sample keeps every id a smaller one took (replicas and config changes agree)
    assert set(i for i in ids if sampled(i, 0.05)) <= set(i for i in ids if sampled(i, 0.3))
    assert not any(sampled(i, 0.0) for i in ids) and all(sampled(i, 1.0) for i in ids)

    # end to end: exactly the requests whose id falls in the sample are judged
    caller = FakeCaller({"judge": Script(text=PASS)})
    with app_client(settings_for(_config(tmp_path, sample=0.5), sqlite_url), caller) as (
        client,
        _,
    ):
        key = create_key(client)
        rids = [_ask(client, key, model="auto") for _ in range(24)]
        _settle(client)
    judged = {r["request_id"] for r in _outcomes(sqlite_url)}
    expected = {r for r in rids if sampled(r, 0.5)}
    assert judged == expected and 0 < len(judged) < len(rids)


def test_unparseable_judge_answer_records_nothing_but_counts(
    tmp_path: Path, sqlite_url: str
) -> None:
    caller = FakeCaller({"judge": Script(text="The answer looks fine to me {not json}.")})
    with app_client(settings_for(_config(tmp_path), sqlite_url), caller) as (client, fake):
        key = create_key(client)
        _ask(client, key, model="auto")
        _settle(client)
        assert fake.calls["judge"] == 1
        assert _metric(client, "tollgate_judge_verdicts_total", result="unparseable") == 1
        assert _metric(client, "tollgate_judge_verdicts_total", result="pass") == 0
        # the call was paid for even though it gave no verdict
        assert _metric(client, "tollgate_judge_cost_usd_total", backend="judge") > 0
    assert _outcomes(sqlite_url) == []


def test_judge_failure_never_touches_the_client_response(tmp_path: Path, sqlite_url: str) -> None:
    caller = FakeCaller({"judge": Script(fail=[500], text=PASS)})
    cfg = _config(tmp_path, timeout_s=0.3)
    with app_client(settings_for(cfg, sqlite_url), caller) as (client, fake):
        key = create_key(client)
        auth = {"authorization": f"Bearer {key}"}
        resp = client.post("/v1/chat/completions", json=chat_body(model="auto"), headers=auth)
        assert resp.status_code == 200 and resp.headers["x-tollgate-backend"] == "cheap"
        assert resp.json()["choices"][0]["message"]["content"].startswith("w0")
        _settle(client)
        assert _metric(client, "tollgate_judge_verdicts_total", result="error") == 1

        # a slow judge: the client does not wait for it, and the judge's timeout ends it
        fake.scripts["judge"].delay_s = 2.0
        t0 = time.monotonic()
        resp = client.post("/v1/chat/completions", json=chat_body(model="auto"), headers=auth)
        assert resp.status_code == 200 and time.monotonic() - t0 < 1.5
        _settle(client)
        assert fake.calls["judge"] == 2
        assert _metric(client, "tollgate_judge_verdicts_total", result="error") == 2
    assert _outcomes(sqlite_url) == []


def test_open_circuit_busy_judge_or_denied_tenant_skip_grading(
    tmp_path: Path, sqlite_url: str
) -> None:
    caller = FakeCaller({"judge": Script(fail=[500] * 4, text=PASS)})
    with app_client(settings_for(_config(tmp_path), sqlite_url), caller) as (client, fake):
        key = create_key(client)
        auth = {"authorization": f"Bearer {key}"}
        for _ in range(2):  # 2 tries each: the judge's circuit opens (threshold 3)
            resp = client.post("/v1/chat/completions", json=chat_body(model="judge"), headers=auth)
            assert resp.status_code == 502
        calls = fake.calls["judge"]
        _ask(client, key, model="auto")
        _settle(client)
        assert fake.calls["judge"] == calls, "an open circuit must not be called by the judge"
        assert _metric(client, "tollgate_judge_verdicts_total", result="skipped") == 1

    # at most max_concurrent gradings in flight: the rest are skipped, not queued
    busy = FakeCaller({"judge": Script(text=PASS, delay_s=1.5)})
    with app_client(settings_for(_config(tmp_path, max_concurrent=1), sqlite_url), busy) as (
        client,
        fake,
    ):
        key = create_key(client)
        for _ in range(3):
            _ask(client, key, model="auto")
        _settle(client)
        assert fake.calls["judge"] == 1
        assert _metric(client, "tollgate_judge_verdicts_total", result="skipped") == 2
        assert _metric(client, "tollgate_judge_verdicts_total", result="pass") == 1
    assert len(_outcomes(sqlite_url)) == 1

    denied = _config(tmp_path)
    denied["backends"][2]["denied_tenants"] = ["acme"]
    caller = FakeCaller({"judge": Script(text=PASS)})
    with app_client(settings_for(denied, sqlite_url), caller) as (client, fake):
        _ask(client, create_key(client, "acme"), model="auto")
        _settle(client)
        assert fake.calls["judge"] == 0  # acme's conversation is never sent there
        assert _metric(client, "tollgate_judge_verdicts_total", result="skipped") == 1
    assert len(_outcomes(sqlite_url)) == 1  # the one graded while the others were skipped


def test_judge_beats_validator_and_loses_to_feedback(tmp_path: Path, sqlite_url: str) -> None:
    cfg = _config(tmp_path)
    cfg["policies"]["default"]["escalation"] = {
        "validators": [{"kind": "non_empty"}],
        "max_escalations": 0,
    }
    caller = FakeCaller({"judge": Script(text=FAIL)})
    with app_client(settings_for(cfg, sqlite_url), caller) as (client, _):
        key = create_key(client)
        auth = {"authorization": f"Bearer {key}"}
        resp = client.post(
            "/v1/chat/completions",
            json=chat_body(model="auto"),
            headers={**auth, "x-tollgate-task-id": "graded"},
        )
        assert resp.headers["x-tollgate-validation"] == "passed"
        _settle(client)

        def verdict() -> tuple[int, int, int]:
            total = client.get("/v1/spend?kind=tasks", headers=auth).json()["total"]
            return total["succeeded"], total["failed"], total["unknown"]

        assert verdict() == (0, 1, 0)  # the validator passed it; the judge failed it: judge wins
        ok = client.post("/v1/feedback", json={"task_id": "graded", "success": True}, headers=auth)
        assert ok.status_code == 201
        assert verdict() == (1, 0, 0)  # the client's feedback wins over the judge
    rows = _outcomes(sqlite_url)
    assert sorted(r["source"] for r in rows) == ["feedback", "judge", "validator"]
    judged = next(r for r in rows if r["source"] == "judge")
    assert judged["success"] is False and judged["comment"] == "off topic"


def test_judge_spend_is_reported_apart_from_traffic_spend(tmp_path: Path, sqlite_url: str) -> None:
    cfg = _config(tmp_path)
    caller = FakeCaller({"judge": Script(text=PASS)})
    with app_client(settings_for(cfg, sqlite_url), caller) as (client, fake):
        acme, globex = create_key(client, "acme"), create_key(client, "globex")
        rids = [_ask(client, acme, model="auto") for _ in range(3)]
        _ask(client, globex, model="auto")
        _settle(client)
        traffic = sum(
            Decimal(
                client.get(f"/v1/requests/{r}", headers={"authorization": f"Bearer {acme}"}).json()[
                    "cost_usd"
                ]
            )
            for r in rids
        )
        judge_cost = sum(_judge_cost(b, PASS) for b in fake.bodies["judge"][:3])
        assert judge_cost > traffic > 0  # the judge is the pricier backend here

        spend = client.get("/v1/spend", headers={"authorization": f"Bearer {acme}"}).json()
        assert Decimal(spend["total"]["spend_usd"]) == traffic  # the judge is not in it
        assert spend["judge"] == {
            "verdicts": 3,
            "passed": 3,
            "failed": 0,
            "spend_usd": format_usd(judge_cost),
            "unpriced_verdicts": 0,
        }
        admin = client.get("/v1/spend", headers=ADMIN).json()
        assert admin["judge"]["verdicts"] == 4  # every tenant
        assert "judge" not in {r["group"] for r in admin["rows"]}
        tasks = client.get("/v1/spend?kind=tasks", headers=ADMIN).json()
        assert tasks["judge"] is None and Decimal(tasks["total"]["task_spend_usd"]) < judge_cost

    # the CLI shows the judge's spend under the table, apart from it
    from gateway.cli.report import app as report_app

    path = tmp_path / "tollgate.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = CliRunner().invoke(
        report_app,
        ["spend", "--tenant", "acme", "--config", str(path)],
        env={"TOLLGATE_DATABASE_URL": sqlite_url, "COLUMNS": "200"},
    )
    assert out.exit_code == 0, out.output
    assert "judge (evaluation overhead, not in the spend above): 3 verdicts" in out.output
    assert f"cost ${format_usd(judge_cost)}" in out.output
    as_json = CliRunner().invoke(
        report_app,
        ["spend", "-f", "json", "--config", str(path)],
        env={"TOLLGATE_DATABASE_URL": sqlite_url},
    )
    assert json.loads(as_json.output)["judge"]["verdicts"] == 4


def test_streamed_answers_are_judged(tmp_path: Path, sqlite_url: str) -> None:
    caller = FakeCaller({"judge": Script(text=PASS), "cheap": Script(answer_tokens=5)})
    with app_client(settings_for(_config(tmp_path), sqlite_url), caller) as (client, fake):
        key = create_key(client)
        with client.stream(
            "POST",
            "/v1/chat/completions",
            json=chat_body(model="auto", stream=True, text="stream me please"),
            headers={"authorization": f"Bearer {key}"},
        ) as resp:
            assert resp.status_code == 200
            rid = resp.headers["x-tollgate-request-id"]
            body = "".join(resp.iter_text())
        assert "[DONE]" in body
        _settle(client)
        (sent,) = fake.bodies["judge"]
        prompt = sent["messages"][1]["content"]
        assert "stream me please" in prompt and "<answer>\nw0 w1 w2 w3 w4\n</answer>" in prompt
    (row,) = _outcomes(sqlite_url)
    assert row["request_id"] == rid and row["source"] == "judge" and row["success"] is True
    assert Decimal(str(row["cost_usd"])) == _judge_cost(sent, PASS)


def test_verdict_parsing_is_robust() -> None:
    found = parse_verdict(FAIL)
    assert found is not None and (found.success, found.score, found.reason) == (
        False,
        0.1,
        "off topic",
    )
    nested = parse_verdict('{"grading": {"success": "pass", "score": 7}} trailing')
    assert nested is not None and nested.success is True and nested.score is None  # not 0..1
    assert parse_verdict('{"score": 0.9}') is None  # no verdict in it
    assert parse_verdict("no json here") is None
    assert parse_verdict('{"success": maybe}') is None
