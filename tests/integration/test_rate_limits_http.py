"""Rate limits and model access over real HTTP (issue 13): two `tollgate serve` replicas on one
Redis and one store, keys made with the CLI, the fake upstream behind them.

* a key's requests per minute hold across both replicas: the request over the limit gets a
  429 in OpenAI's shape with retry-after, and every answer carries x-ratelimit-* headers;
* a key's tokens per minute reserve prompt + max_tokens and settle to the real usage (so
  requests that reserve more than half the limit still go through one after another);
  a request larger than the whole limit is a 429 of type tokens;
* a tenant's limits (``tollgate tenants set``) apply to its keys;
* a backend at its rpm is skipped by routing (the next candidate serves) and a request
  pinned to it gets a 429;
* model access: a key limited to some backends or policies gets a 403 for others, pinned
  or routed; a backend's allowed_tenants holds for pinned requests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.gateway_process import GatewayProcess
from gateway.devtools.fake_upstream import FakeUpstream
from tests.support.harness import REDIS_URL

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def config(upstream: FakeUpstream, work: Path, prefix: str) -> dict[str, Any]:
    def entry(name: str, **kw: Any) -> dict[str, Any]:
        return {
            "name": name,
            "model": "openai/fake-model",
            "api_base": upstream.base_url,
            "api_key": "os.environ/FAKE_KEY",
            "input_cost_per_token": "0.000001",
            "output_cost_per_token": "0.000002",
            "retry_backoff_s": 0.01,
            "max_retries": 0,
            **kw,
        }

    policy = {
        "objective": {"kind": "cheapest_adequate", "min_success": 0.5},
        "predictor_fallback": "first_candidate",
    }
    return {
        "backends": [
            entry("small"),
            entry("large"),
            entry("limited", rpm=2),
            entry("private", allowed_tenants=["globex"]),
        ],
        "policies": {
            "chain": {"candidates": ["small", "large"], **policy},
            "spill": {"candidates": ["limited", "large"], **policy},
        },
        "routing": {"default": "chain"},
        "predictor": {"enabled": False},
        "store": {"spool_dir": str(work / "spool"), "flush_interval_ms": 20},
        "server": {"key_cache_ttl_s": 0},
        "redis": {"key_prefix": prefix},
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("limits")
    prefix = f"tgtest:{uuid.uuid4().hex[:8]}:"
    with FakeUpstream(port=0) as upstream:
        env = {
            "FAKE_KEY": "upstream-secret",
            "TOLLGATE_DATABASE_URL": f"sqlite:///{work}/tollgate.db",
            "TOLLGATE_REDIS_URL": REDIS_URL,
            "TOLLGATE_ADMIN_KEY": "admin-secret-0123456789",
        }
        cfg = config(upstream, work, prefix)
        a = GatewayProcess(cfg, work, env)
        b = GatewayProcess(cfg, work, env)

        made = a.cli("keys", "create", "--tenant", "acme", "--rpm", "3")
        assert made.returncode == 0, made.stderr
        tenant = a.cli("tenants", "set", "initech", "--rpm", "2")
        assert tenant.returncode == 0, tenant.stderr
        with a, b:
            admin = {"authorization": "Bearer admin-secret-0123456789"}

            def key(tenant: str, **limits: Any) -> str:
                resp = httpx.post(
                    a.url + "/admin/keys", json={"tenant": tenant, **limits}, headers=admin
                )
                assert resp.status_code == 201, resp.text
                return str(resp.json()["key"])

            keys = {
                "rpm": made.stdout.strip().splitlines()[-1],
                "tpm": key("acme", tpm=1000),
                "small_only": key("acme", allowed_backends=["small"]),
                "large_only": key("acme", allowed_backends=["large"]),
                "spill_only": key("acme", allowed_policies=["spill"]),
                "plain": key("acme"),
                "globex": key("globex"),
                "initech": key("initech"),
                "initech2": key("initech"),
            }
            yield {"a": a, "b": b, "keys": keys, "upstream": upstream}


def chat(gw: GatewayProcess, key: str, model: str = "small", **body: Any) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi there"}], **body},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_requests_per_minute_hold_across_replicas(stack: dict[str, Any]) -> None:
    a, b, key = stack["a"], stack["b"], stack["keys"]["rpm"]
    answers = [chat(gw, key) for gw in (a, b, a, b)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in answers] == ["2", "1", "0", "0"]
    assert all(r.headers["x-ratelimit-limit-requests"] == "3" for r in answers)
    assert answers[0].headers["x-ratelimit-reset-requests"].endswith("s")
    refused = answers[3]
    error = refused.json()["error"]
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
    assert "Limit 3, Used 3, Requested 1" in error["message"], error
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "x-ratelimit-limit-tokens" not in refused.headers  # no token limit on this key
    # another key of the same tenant is not limited
    assert chat(b, stack["keys"]["plain"]).status_code == 200


def test_tokens_per_minute_reserve_then_settle_to_real_usage(stack: dict[str, Any]) -> None:
    a, b, key = stack["a"], stack["b"], stack["keys"]["tpm"]
    # each reserves ~600 of 1000 tokens but uses ~20 (2 prompt words + 16 answer words):
    # without settlement the second would be refused
    answers = [chat(gw, key, max_tokens=600) for gw in (a, b, a)]
    assert [r.status_code for r in answers] == [200, 200, 200], answers[-1].text
    usage = answers[0].json()["usage"]
    used = usage["prompt_tokens"] + usage["completion_tokens"]
    remaining = [int(r.headers["x-ratelimit-remaining-tokens"]) for r in answers]
    # what is left after the 2nd request: 1000 - 1st's real usage - 2nd's reservation
    assert 1000 - used - 620 <= remaining[1] <= 1000 - used - 600
    streamed = httpx.post(
        b.url + "/v1/chat/completions",
        json={
            "model": "small",
            "messages": [{"role": "user", "content": "hi there"}],
            "stream": True,
            "max_tokens": 600,
        },
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert streamed.status_code == 200 and "x-ratelimit-remaining-tokens" in streamed.headers
    assert chat(a, key, max_tokens=600).status_code == 200  # the stream settled too
    too_big = chat(a, key, max_tokens=5000)
    assert too_big.status_code == 429
    error = too_big.json()["error"]
    assert error["type"] == "tokens" and error["code"] == "rate_limit_exceeded"
    assert "Request too large" in error["message"] and too_big.headers["retry-after"]


def test_tenant_limits_apply_to_every_key_of_the_tenant(stack: dict[str, Any]) -> None:
    a, b, keys = stack["a"], stack["b"], stack["keys"]
    assert chat(a, keys["initech"]).status_code == 200
    assert chat(b, keys["initech2"]).status_code == 200
    refused = chat(a, keys["initech2"])
    assert refused.status_code == 429
    assert "tenant 'initech'" in refused.json()["error"]["message"]
    shown = a.cli("tenants", "show", "initech")
    assert shown.returncode == 0 and "rpm 2" in shown.stdout


def test_backend_at_its_limit_is_skipped_by_routing_and_429s_when_pinned(
    stack: dict[str, Any],
) -> None:
    a, b, key = stack["a"], stack["b"], stack["keys"]["plain"]
    served = [chat(gw, key, model="tollgate/spill") for gw in (a, b, a)]
    assert [r.status_code for r in served] == [200, 200, 200]
    assert [r.headers["x-tollgate-backend"] for r in served] == ["limited", "limited", "large"]
    pinned = chat(b, key, model="limited")
    assert pinned.status_code == 429, pinned.text
    assert pinned.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(pinned.headers["retry-after"]) >= 1


def test_model_access_is_enforced_for_pinned_and_routed_requests(stack: dict[str, Any]) -> None:
    a, keys = stack["a"], stack["keys"]
    assert chat(a, keys["small_only"], model="small").status_code == 200
    denied = chat(a, keys["small_only"], model="large")
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "permission_denied"
    # routed: only allowed candidates are considered, whatever the policy would prefer
    routed = chat(a, keys["large_only"], model="tollgate/chain")
    assert routed.status_code == 200 and routed.headers["x-tollgate-backend"] == "large"
    # a policy none of whose candidates the key may use
    none_left = chat(a, keys["small_only"], model="tollgate/spill")
    assert none_left.status_code == 403 and "none of policy 'spill'" in none_left.text
    # a key limited to a policy: other policies are refused, and so is pinning outside it
    assert chat(a, keys["spill_only"], model="tollgate/chain").status_code == 403
    assert chat(a, keys["spill_only"], model="small").status_code == 403
    assert chat(a, keys["spill_only"], model="large").status_code == 200
    # /v1/models lists only what the key may use
    models = httpx.get(
        a.url + "/v1/models", headers={"authorization": f"Bearer {keys['spill_only']}"}
    ).json()["data"]
    assert {m["id"] for m in models} == {"limited", "large", "tollgate/spill", "tollgate/auto"}
    models = httpx.get(
        a.url + "/v1/models", headers={"authorization": f"Bearer {keys['plain']}"}
    ).json()["data"]
    assert "private" not in {m["id"] for m in models} and "small" in {m["id"] for m in models}
    # a backend's allowed_tenants holds for pinned requests (issue 11)
    private = chat(a, keys["plain"], model="private")
    assert private.status_code == 403 and "not open to tenant 'acme'" in private.text
    assert chat(a, keys["globex"], model="private").status_code == 200


def test_admin_api_creates_keys_with_limits(stack: dict[str, Any]) -> None:
    a = stack["a"]
    admin = {"authorization": "Bearer admin-secret-0123456789"}
    made = httpx.post(
        a.url + "/admin/keys",
        json={
            "tenant": "umbrella",
            "rpm": 1,
            "tpm": 5000,
            "max_budget_usd": 2,
            "budget_window": "day",
            "allowed_backends": ["small"],
        },
        headers=admin,
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["rpm"] == 1 and body["tpm"] == 5000 and body["budget_window"] == "day"
    assert body["allowed_backends"] == ["small"] and body["allowed_policies"] is None
    assert chat(a, body["key"]).status_code == 200
    assert chat(a, body["key"]).status_code == 429
    bad = httpx.post(
        a.url + "/admin/keys",
        json={"tenant": "umbrella", "allowed_policies": ["nope"]},
        headers=admin,
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "allowed_policies"
    window = httpx.post(
        a.url + "/admin/keys", json={"tenant": "u", "budget_window": "week"}, headers=admin
    )
    assert window.status_code == 400
    listed = httpx.get(a.url + "/admin/keys?tenant=umbrella", headers=admin).json()["data"]
    assert listed[0]["rpm"] == 1
    put = httpx.put(a.url + "/admin/tenants/umbrella/limits", json={"tpm": 100}, headers=admin)
    assert put.status_code == 200 and put.json()["tpm"] == 100
    got = httpx.get(a.url + "/admin/tenants/umbrella/limits", headers=admin).json()
    assert got["tpm"] == 100 and got["rpm"] is None
