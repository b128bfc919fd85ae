"""OpenTelemetry end to end: a real ``tollgate serve`` with the standard ``OTEL_*`` variables
exports its spans over OTLP/HTTP to a local receiver that decodes the protobufs; the spans carry
the GenAI semantic conventions and Tollgate's own attributes for every request and attempt. The
same run checks the access log lines on the gateway's stderr."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from bench.gateway_process import GatewayProcess
from gateway.devtools.fake_upstream import FakeUpstream
from tests.support.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration

PRICE_IN, PRICE_OUT = Decimal("0.0000002"), Decimal("0.0000006")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def _config(upstream: FakeUpstream, work: Path) -> dict[str, Any]:
    def entry(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": f"openai/{name}-model",
            "api_base": upstream.base_url,
            "api_key": "os.environ/FAKE_KEY",
            "input_cost_per_token": str(PRICE_IN),
            "output_cost_per_token": str(PRICE_OUT),
            "retry_backoff_s": 0.01,
            "max_retries": 0,
            "timeout_s": 10,
        }

    return {
        "backends": [entry("flaky"), entry("backup")],
        "policies": {
            "chain": {
                "candidates": ["flaky", "backup"],
                "objective": {"kind": "cheapest_adequate", "min_success": 0.5},
                "predictor_fallback": "first_candidate",
            }
        },
        "routing": {"default": "chain"},
        "predictor": {"enabled": False},
        "store": {"spool_dir": str(work / "spool"), "flush_interval_ms": 20},
    }


def test_spans_reach_a_local_otlp_endpoint(tmp_path: Path) -> None:
    with OtlpReceiver() as receiver, FakeUpstream(port=0) as upstream:
        env = {
            "FAKE_KEY": "upstream-secret",
            "TOLLGATE_DATABASE_URL": f"sqlite:///{tmp_path}/tollgate.db",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_SERVICE_NAME": "tollgate-under-test",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        gw = GatewayProcess(_config(upstream, tmp_path), tmp_path, env)
        created = gw.cli("keys", "create", "--tenant", "acme")
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        upstream.configure(models={"flaky-model": {"fail_next": [503]}})
        gw.start(timeout_s=240)  # a loaded 2-core machine can take a minute to start it
        try:
            sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
            raw = sdk.chat.completions.with_raw_response.create(
                model="tollgate/chain",
                messages=[{"role": "user", "content": "one two three four"}],
                extra_headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"},
            )
            served = raw.parse()
            request_id = raw.headers["x-tollgate-request-id"]
            stream = sdk.chat.completions.create(
                model="backup", stream=True, messages=[{"role": "user", "content": "a b c"}]
            )
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

            def done(spans: list[dict[str, Any]]) -> bool:
                return sum(s["kind"] == 2 for s in spans) >= 2 and len(spans) >= 5

            spans = receiver.wait_for(done)
        finally:
            gw.stop()
        log_text = gw.log_path.read_text()

    servers = [s for s in spans if s["kind"] == 2]
    clients = [s for s in spans if s["kind"] == 3]
    (req,) = [s for s in servers if s["attributes"].get("tollgate.request_id") == request_id]
    # the caller's traceparent makes the request span its child
    assert req["trace_id"] == TRACE_ID and req["parent_span_id"] == CALLER_SPAN
    assert req["resource"]["service.name"] == "tollgate-under-test"
    a = req["attributes"]
    usage = served.usage
    assert usage is not None
    assert req["name"] == "chat tollgate/chain"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "tollgate/chain"
    assert a["gen_ai.response.model"] == "backup-model" and a["gen_ai.system"] == "openai"
    assert a["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert a["tollgate.policy"] == "chain" and a["tollgate.backend"] == "backup"
    assert a["tollgate.attempts"] == 2 and a["tollgate.task_id"]
    cost = PRICE_IN * usage.prompt_tokens + PRICE_OUT * usage.completion_tokens
    assert Decimal(str(a["tollgate.cost_usd"])) == cost
    assert Decimal(raw.headers["x-tollgate-cost-usd"]) == cost

    # one CLIENT span per attempt, children of the request span: the failed one, then backup
    attempts = sorted(
        (s for s in clients if s["parent_span_id"] == req["span_id"]),
        key=lambda s: s["attributes"]["tollgate.attempt"],
    )
    assert [s["attributes"]["tollgate.backend"] for s in attempts] == ["flaky", "backup"]
    failed, ok = attempts
    assert failed["status"] == 2 and failed["attributes"]["error.type"]  # the adapter's class
    assert failed["attributes"]["http.response.status_code"] == 503
    assert ok["status"] == 0 and ok["attributes"]["gen_ai.request.model"] == "backup-model"
    assert ok["attributes"]["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert Decimal(str(ok["attributes"]["tollgate.cost_usd"])) == cost
    assert ok["attributes"]["tollgate.task_id"] == a["tollgate.task_id"]
    assert req["start"] <= failed["start"] <= ok["start"] <= ok["end"] <= req["end"]

    # the streamed request: its own trace, its attempt priced from the streamed usage
    (streamed,) = [s for s in servers if s is not req]
    assert streamed["attributes"]["tollgate.backend"] == "backup"
    (s_attempt,) = [s for s in clients if s["parent_span_id"] == streamed["span_id"]]
    assert s_attempt["attributes"]["gen_ai.usage.input_tokens"] == 3
    assert s_attempt["attributes"]["tollgate.cost_usd"] > 0

    # the access log on the gateway's stderr: one JSON line per request, never the key
    lines = [json.loads(ln) for ln in log_text.splitlines() if ln.startswith('{"ts"')]
    (line,) = [ln for ln in lines if ln["request_id"] == request_id]
    assert line["attempts"] == 2 and line["backend"] == "backup" and line["status"] == 200
    assert Decimal(line["cost_usd"]) == cost
    assert key not in log_text and "upstream-secret" not in log_text
