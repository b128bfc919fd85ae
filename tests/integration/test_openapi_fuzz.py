"""Schemathesis against the gateway's own OpenAPI document, over real HTTP.

Whatever the generated input, the gateway must never answer 5xx for a client's mistake, and
every error body must be in the shape of the API that was called: OpenAI-shaped everywhere, except
the Anthropic Messages endpoints, which answer in Anthropic's own error shape (what the Anthropic
SDKs parse).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from bench.gateway_process import GatewayProcess
from gateway.devtools.fake_upstream import FakeUpstream

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work: Path = tmp_path_factory.mktemp("fuzz")
    with FakeUpstream(port=0) as upstream:
        cfg = {
            "backends": [
                {
                    "name": "fake",
                    "model": "openai/fake-model",
                    "api_base": upstream.base_url,
                    "input_cost_per_token": "0.000001",
                    "output_cost_per_token": "0.000002",
                    "max_retries": 0,
                }
            ],
            "store": {"spool_dir": str(work / "spool")},
        }
        env = {
            "TOLLGATE_DATABASE_URL": f"sqlite:///{work}/t.db",
            "TOLLGATE_ADMIN_KEY": "admin-secret-for-tests",
        }
        gw = GatewayProcess(cfg, work, env)
        key = gw.cli("keys", "create", "--tenant", "fuzz").stdout.strip().splitlines()[-1]
        with gw:
            yield {"url": gw.url, "key": key}


@pytest.fixture(scope="module")
def api_schema(gateway_stack: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_url(gateway_stack["url"] + "/openapi.json")


def test_gateway_never_fails_on_client_input(
    api_schema: Any, gateway_stack: dict[str, Any]
) -> None:
    # Driven through schemathesis' Python API (its pytest plugin does not support pytest 9 yet).
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case: Any) -> None:
            token = (
                "admin-secret-for-tests" if case.path.startswith("/admin") else gateway_stack["key"]
            )
            response = case.call(headers={"authorization": f"Bearer {token}"}, timeout=30)
            case.validate_response(response, checks=(not_a_server_error,))
            if response.status_code >= 400:
                body = response.json()
                if case.path.startswith("/v1/messages"):
                    assert body["type"] == "error", body
                    assert set(body["error"]) == {"message", "type"}, body
                else:
                    assert set(body["error"]) == {"message", "type", "param", "code"}, body

        check()
