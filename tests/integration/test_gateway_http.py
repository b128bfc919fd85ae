"""End to end over real HTTP: the official openai SDK → `tollgate serve` (uvicorn, litellm) →
the fake OpenAI-compatible upstream (its own uvicorn process)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from bench.gateway_process import GatewayProcess
from gateway.devtools.fake_upstream import FakeUpstream
from tests.support.harness import VENV_BIN

pytestmark = pytest.mark.integration

PRICE_IN, PRICE_OUT = Decimal("0.0000002"), Decimal("0.0000006")


def gateway_config(upstream: FakeUpstream, spool: Path) -> dict[str, Any]:
    def entry(name: str, model: str, **kw: Any) -> dict[str, Any]:
        return {
            "name": name,
            "model": f"openai/{model}",
            "api_base": upstream.base_url,
            "api_key": "os.environ/FAKE_KEY",
            "input_cost_per_token": str(PRICE_IN),
            "output_cost_per_token": str(PRICE_OUT),
            "retry_backoff_s": 0.01,
            "max_retries": 1,
            "timeout_s": 10,
            **kw,
        }

    return {
        "backends": [
            entry("fake", "fake-model"),
            entry("flaky", "flaky-model"),
            entry("backup", "backup-model"),
        ],
        "policies": {
            "chain": {
                "candidates": ["flaky", "backup"],
                "objective": {
                    "kind": "cheapest_adequate",
                    "min_success": 0.5,
                    "on_no_adequate": "most_capable",
                },
                "predictor_fallback": "first_candidate",
            }
        },
        "routing": {"default": "chain"},
        "predictor": {"enabled": False},
        "store": {"spool_dir": str(spool), "flush_interval_ms": 20},
        "server": {"key_cache_ttl_s": 0},
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("gw")
    with FakeUpstream(port=0) as upstream:
        env = {
            "FAKE_KEY": "upstream-secret",
            "TOLLGATE_DATABASE_URL": f"sqlite:///{work}/tollgate.db",
            "TOLLGATE_ADMIN_KEY": "admin-secret-for-tests",
        }
        gw = GatewayProcess(gateway_config(upstream, work / "spool"), work, env)
        created = gw.cli("keys", "create", "--tenant", "acme")
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        other = gw.cli("keys", "create", "--tenant", "globex").stdout.strip().splitlines()[-1]
        with gw:
            yield {"gw": gw, "upstream": upstream, "key": key, "other_key": other}


def client(stack: dict[str, Any], **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=stack["gw"].url + "/v1", api_key=stack["key"], max_retries=0, **kw
    )


def attempts(
    stack: dict[str, Any], request_id: str, key: str | None = None
) -> list[dict[str, Any]]:
    resp = httpx.get(
        f"{stack['gw'].url}/v1/requests/{request_id}",
        headers={"authorization": f"Bearer {key or stack['key']}"},
    )
    assert resp.status_code == 200, resp.text
    return list(resp.json()["attempts"])


def test_sdk_sync_call_is_priced_and_recorded(stack: dict[str, Any]) -> None:
    raw = client(stack).chat.completions.with_raw_response.create(
        model="fake", messages=[{"role": "user", "content": "one two three four"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("Echo: one two three four")
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens == 4 and usage.completion_tokens == 16
    expected = PRICE_IN * 4 + PRICE_OUT * 16
    assert Decimal(raw.headers["x-tollgate-cost-usd"]) == expected
    assert raw.headers["x-tollgate-backend"] == "fake"
    (row,) = attempts(stack, raw.headers["x-tollgate-request-id"])
    assert Decimal(row["cost_usd"]) == expected and row["status"] == "ok"
    # the upstream got the backend's own key, never the client's virtual key
    last = stack["upstream"].stats()["requests"][-1]
    assert "upstream-secret" in str(last) and stack["key"] not in str(last)


def test_streaming_and_plain_record_the_same_cost(stack: dict[str, Any]) -> None:
    sdk = client(stack)
    for omit_usage in (False, True):
        stack["upstream"].configure(omit_usage=omit_usage)
        messages = [{"role": "user", "content": "count the cost of this prompt please"}]
        plain = sdk.chat.completions.with_raw_response.create(model="fake", messages=messages)
        stream = sdk.chat.completions.with_raw_response.create(
            model="fake", messages=messages, stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
        assert text == plain.parse().choices[0].message.content
        rows = [attempts(stack, r.headers["x-tollgate-request-id"])[0] for r in (plain, stream)]
        assert rows[0]["streamed"] is False and rows[1]["streamed"] is True
        keys = ("prompt_tokens", "completion_tokens", "cost_usd")
        assert [rows[0][k] for k in keys] == [rows[1][k] for k in keys], rows
        assert Decimal(rows[0]["cost_usd"]) > 0
    stack["upstream"].configure(omit_usage=False)


def test_async_sdk_streaming_with_usage(stack: dict[str, Any]) -> None:
    async def run() -> tuple[str, Any]:
        sdk = openai.AsyncOpenAI(
            base_url=stack["gw"].url + "/v1", api_key=stack["key"], max_retries=0
        )
        stream = await sdk.chat.completions.create(
            model="fake",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        parts, usage = [], None
        async for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            parts.extend(c.delta.content or "" for c in chunk.choices)
        await sdk.close()
        return "".join(parts), usage

    text, usage = asyncio.run(run())
    assert text.startswith("Echo: hi")
    assert usage is not None and usage.prompt_tokens == 1 and usage.completion_tokens == 16


def test_client_disconnect_cancels_upstream_and_records_usage(stack: dict[str, Any]) -> None:
    up = stack["upstream"]
    up.configure(token_interval_ms=30, completion_tokens=400)
    before = up.stats()["streams_aborted"]
    body = {
        "model": "fake",
        "stream": True,
        "messages": [{"role": "user", "content": "long answer"}],
    }
    with httpx.stream(
        "POST",
        stack["gw"].url + "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {stack['key']}"},
        timeout=10,
    ) as resp:
        request_id = resp.headers["x-tollgate-request-id"]
        seen = 0
        for line in resp.iter_lines():
            if line.startswith("data:"):
                seen += 1
            if seen >= 5:
                break  # leave mid-stream: closing the response drops the connection
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and up.stats()["streams_aborted"] == before:
        time.sleep(0.05)
    up.configure(token_interval_ms=0, completion_tokens=16)
    assert up.stats()["streams_aborted"] == before + 1, "the upstream stream was not cancelled"
    deadline = time.monotonic() + 5
    while True:
        rows = httpx.get(
            f"{stack['gw'].url}/v1/requests/{request_id}",
            headers={"authorization": f"Bearer {stack['key']}"},
        )
        if rows.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    (row,) = rows.json()["attempts"]
    assert row["status"] == "cancelled"
    assert 3 <= row["completion_tokens"] < 400 and row["usage_source"] == "counted"
    assert Decimal(row["cost_usd"]) > 0


def test_retries_and_fallback_over_http(stack: dict[str, Any]) -> None:
    up = stack["upstream"]
    up.configure(models={"flaky-model": {"fail_next": [500, 503]}})
    raw = client(stack).chat.completions.with_raw_response.create(
        model="tollgate/chain", messages=[{"role": "user", "content": "x"}]
    )
    assert raw.headers["x-tollgate-backend"] == "backup"
    rows = attempts(stack, raw.headers["x-tollgate-request-id"])
    assert [(r["backend"], r["status"], r["http_status"]) for r in rows] == [
        ("flaky", "error", 500),
        ("flaky", "error", 503),
        ("backup", "ok", 200),
    ]
    up.configure(models={})


def test_rate_limit_retry_after_is_honoured(stack: dict[str, Any]) -> None:
    stack["upstream"].configure(fail_next=[429], retry_after_s=0)
    raw = client(stack).chat.completions.with_raw_response.create(
        model="fake", messages=[{"role": "user", "content": "x"}]
    )
    rows = attempts(stack, raw.headers["x-tollgate-request-id"])
    assert [r["http_status"] for r in rows] == [429, 200]


def test_tools_response_format_stop_n_pass_through(stack: dict[str, Any]) -> None:
    sdk = client(stack)
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    resp = sdk.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "please call tool"}], tools=[tool]
    )
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup" and "city" in call.function.arguments
    resp = sdk.chat.completions.create(
        model="fake",
        messages=[{"role": "user", "content": "json"}],
        response_format={"type": "json_object"},
        n=2,
        max_tokens=3,
    )
    assert len(resp.choices) == 2 and resp.choices[0].message.content.startswith("{")
    assert resp.choices[0].finish_reason == "length"


def test_completions_and_embeddings(stack: dict[str, Any]) -> None:
    sdk = client(stack)
    emb = sdk.embeddings.create(model="fake", input=["a b c", "d"])
    assert len(emb.data) == 2 and emb.usage.prompt_tokens == 4
    comp = sdk.completions.create(model="fake", prompt="say something", max_tokens=4)
    assert comp.choices[0].text


@pytest.mark.parametrize(
    ("body", "headers", "status", "code_or_type"),
    [
        (b"{not json", {}, 400, "invalid_request_error"),
        (b'{"model": "fake"}', {}, 400, "invalid_request_error"),
        (
            b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}',
            {},
            404,
            "model_not_found",
        ),
        (b'{"model": "fake", "messages": []}', {}, 400, "invalid_request_error"),
        (
            b'{"model": "fake", "messages": [{"role": "user", "content": "x"}]}',
            {"authorization": "Bearer tg-wrong"},
            401,
            "invalid_api_key",
        ),
        (
            b'{"model": "fake", "messages": [{"role": "user", "content": "x"}]}',
            {"authorization": ""},
            401,
            "invalid_api_key",
        ),
        (
            b'{"model": "fake", "messages": [{"role": "user", "content": "'
            + b"x" * (5 * 1024 * 1024)
            + b'"}]}',
            {},
            413,
            "request_too_large",
        ),
    ],
)
def test_errors_are_openai_shaped(
    stack: dict[str, Any], body: bytes, headers: dict[str, str], status: int, code_or_type: str
) -> None:
    h = {"authorization": f"Bearer {stack['key']}", "content-type": "application/json", **headers}
    if not h["authorization"]:
        del h["authorization"]
    resp = httpx.post(stack["gw"].url + "/v1/chat/completions", content=body, headers=h, timeout=30)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert code_or_type in (err["type"], err["code"])
    assert err["message"] and resp.headers.get("x-tollgate-request-id")


def test_sdk_raises_typed_errors(stack: dict[str, Any]) -> None:
    with pytest.raises(openai.NotFoundError):
        client(stack).chat.completions.create(
            model="missing", messages=[{"role": "user", "content": "x"}]
        )
    bad = openai.OpenAI(base_url=stack["gw"].url + "/v1", api_key="tg-bad", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="fake", messages=[{"role": "user", "content": "x"}])


def test_tenant_sees_only_its_own_requests(stack: dict[str, Any]) -> None:
    raw = client(stack).chat.completions.with_raw_response.create(
        model="fake", messages=[{"role": "user", "content": "mine"}]
    )
    rid = raw.headers["x-tollgate-request-id"]
    resp = httpx.get(
        f"{stack['gw'].url}/v1/requests/{rid}",
        headers={"authorization": f"Bearer {stack['other_key']}"},
    )
    assert resp.status_code == 404


def test_keys_cli_revoke_and_admin_api(stack: dict[str, Any]) -> None:
    gw = stack["gw"]
    created = gw.cli("keys", "create", "--tenant", "temp", "--max-budget-usd", "1.5")
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("tg-")
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    sdk.chat.completions.create(model="fake", messages=[{"role": "user", "content": "x"}])
    listing = gw.cli("keys", "list", "--tenant", "temp")
    assert key[:9] in listing.stdout and key not in listing.stdout
    assert gw.cli("keys", "revoke", key[:9]).returncode == 0
    with pytest.raises(openai.AuthenticationError):
        sdk.chat.completions.create(model="fake", messages=[{"role": "user", "content": "x"}])
    admin = {"authorization": "Bearer admin-secret-for-tests"}
    made = httpx.post(gw.url + "/admin/keys", json={"tenant": "api-made"}, headers=admin)
    assert made.status_code == 201
    assert (
        httpx.post(
            gw.url + "/admin/keys",
            json={"tenant": "x"},
            headers={"authorization": f"Bearer {stack['key']}"},
        ).status_code
        == 401
    )
    listed = httpx.get(gw.url + "/admin/keys", params={"tenant": "api-made"}, headers=admin).json()
    assert [k["id"] for k in listed["data"]] == [made.json()["id"]]
    assert (
        httpx.delete(f"{gw.url}/admin/keys/{made.json()['id']}", headers=admin).status_code == 200
    )


def test_health_ready_models_metrics(stack: dict[str, Any]) -> None:
    gw = stack["gw"]
    assert httpx.get(gw.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gw.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["store"]["ok"] is True
    ids = [m.id for m in client(stack).models.list().data]
    assert {"fake", "flaky", "backup", "tollgate/chain"} <= set(ids)
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'tollgate_attempts_total{backend="fake",status="ok"}' in metrics
    assert "tollgate_cost_usd_total" in metrics


def test_keys_never_logged(stack: dict[str, Any]) -> None:
    log = stack["gw"].log_path.read_text()
    assert (
        stack["key"] not in log
        and "upstream-secret" not in log
        and "admin-secret-for-tests" not in log
    )


def test_refuses_public_bind_without_admin_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "backends:\n  - name: a\n    model: openai/x\n    api_base: http://127.0.0.1:9/v1\n"
    )
    env = {"PATH": str(VENV_BIN), "TOLLGATE_DATABASE_URL": f"sqlite:///{tmp_path}/t.db"}
    proc = subprocess.run(
        [
            str(VENV_BIN / "tollgate"),
            "serve",
            "--config",
            str(cfg),
            "--host",
            "0.0.0.0",
            "--port",
            "1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "admin key" in proc.stderr


def test_config_file_edit_and_sighup_reload_a_running_server(stack: dict[str, Any]) -> None:
    import signal

    import yaml

    gw = stack["gw"]
    admin = {"authorization": f"Bearer {stack['key']}"}
    cfg = yaml.safe_load(gw.config_path.read_text())
    cfg["aliases"] = {"cheapest": "fake"}
    gw.config_path.write_text(yaml.safe_dump(cfg))  # picked up by the file watcher
    deadline = time.monotonic() + 15
    ids: list[str] = []
    while time.monotonic() < deadline and "cheapest" not in ids:
        time.sleep(0.2)
        ids = [m["id"] for m in httpx.get(gw.url + "/v1/models", headers=admin).json()["data"]]
    assert "cheapest" in ids
    gw.config_path.write_text(gw.config_path.read_text() + "\nnot: [valid\n")
    time.sleep(2.5)  # the watcher sees the broken file and keeps the running config
    models = httpx.get(gw.url + "/v1/models", headers=admin).json()["data"]
    assert "cheapest" in [m["id"] for m in models]
    assert "rejected" in gw.log_path.read_text()
    cfg.pop("aliases")
    gw.config_path.write_text(yaml.safe_dump(cfg))
    time.sleep(2.5)
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "config reload (SIGHUP)" not in gw.log_path.read_text():
        time.sleep(0.1)
    assert "config reload (SIGHUP)" in gw.log_path.read_text()
