"""Tracing settings from the standard OTEL_* variables, and nothing on the hot path without them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from gateway.settings import telemetry_from_env
from gateway.telemetry import gen_ai_system

REPO = Path(__file__).resolve().parents[2]


def test_otel_variables() -> None:
    assert telemetry_from_env({}) is None
    assert telemetry_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}) is None  # compose's default
    base = telemetry_from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20abc,x-team=ml",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod",
        }
    )
    assert base is not None and base.traces_endpoint == "http://collector:4318/v1/traces"
    assert base.headers == {"authorization": "Bearer abc", "x-team": "ml"}
    assert "abc" not in repr(base)  # headers may carry a token: never in a repr
    assert base.service_name == "tollgate" and base.protocol == "http/protobuf"
    assert base.resource_attributes == {"deployment.environment": "prod"}
    exact = telemetry_from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:9999/custom",
            "OTEL_SERVICE_NAME": "edge",
        }
    )
    assert exact is not None and exact.traces_endpoint == "http://b:9999/custom"
    assert exact.service_name == "edge"
    on = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318"}
    assert telemetry_from_env({**on, "OTEL_SDK_DISABLED": "true"}) is None
    assert telemetry_from_env({**on, "OTEL_TRACES_EXPORTER": "none"}) is None
    grpc = telemetry_from_env({**on, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert grpc is not None and grpc.protocol == "grpc"  # build_tracing refuses it, with a warning


def test_gen_ai_system_from_litellm_model() -> None:
    assert gen_ai_system("openai/gpt-4o") == "openai"
    assert gen_ai_system("anthropic/claude-3-5-haiku") == "anthropic"
    assert gen_ai_system("bedrock/anthropic.claude-v2") == "aws.bedrock"
    assert gen_ai_system("hosted_vllm/Qwen/Qwen3") == "hosted_vllm"
    assert gen_ai_system("gpt-4o") == "openai"


def test_no_sdk_import_and_no_tracing_without_otel_variables(tmp_path: object) -> None:
    """A served request with tracing off never imports the OpenTelemetry SDK or exporter."""
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from tests.support.harness import app_client, chat_body, config_dict, create_key
        from tests.support.harness import settings_for
        tmp = Path({str(tmp_path)!r})
        settings = settings_for(config_dict(tmp), f"sqlite:///{{tmp}}/t.db")
        assert settings.telemetry is None
        with app_client(settings) as (client, _):
            key = create_key(client)
            r = client.post("/v1/chat/completions", json=chat_body(),
                            headers={{"authorization": f"Bearer {{key}}"}})
            assert r.status_code == 200, r.text
        loaded = [m for m in sys.modules if m.startswith(("opentelemetry.sdk",
                  "opentelemetry.exporter"))]
        assert not loaded, loaded
        print("no-sdk-ok")
        """
    )
    env = {"PATH": "/usr/bin:/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0 and "no-sdk-ok" in run.stdout, run.stderr[-3000:]
