"""Three ``tollgate serve`` replicas behind nginx on one private Redis and one private
PostgreSQL: operator controls hold across replicas (rate limits exact in their window, the
response cache shared, model access enforced everywhere) and a request answered by one replica
is visible at once to the others (feedback, ``GET /v1/requests/{id}``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import faults
from bench.fault_stack import ADMIN_KEY, Nginx, Replica
from bench.faults import Stack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
        reason="nginx (Debian package nginx-light) is installed by .ci/run",
    ),
]


@pytest.fixture(scope="module")
def trio() -> Iterator[tuple[Stack, list[Replica], Nginx]]:
    with faults.fault_stack() as stack:
        second = {
            "name": "other",
            "model": "openai/other-model",
            "api_base": stack.upstream.base_url,
            "input_cost_per_token": "0.000001",
            "output_cost_per_token": "0.000002",
            "max_retries": 0,
        }
        base = faults.replica_config(stack.upstream, stack.workdir / "x")["backends"]
        sections: dict[str, Any] = {
            "backends": [*base, second],
            "cache": {"mode": "exact", "ttl_s": 60},
        }
        replicas = [stack.replica(f"r{i}", **sections) for i in range(3)]
        stack.nginx = Nginx(stack.workdir, replicas).start()
        yield stack, replicas, stack.nginx


def _key(url: str, **fields: Any) -> str:
    resp = httpx.post(
        url + "/admin/keys", json=fields, headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


def _chat(url: str, key: str, text: str, model: str = "fake", **kw: Any) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}], **kw},
        headers={"authorization": f"Bearer {key}"},
        timeout=60,
    )


def test_a_request_is_visible_on_every_replica_right_after_its_answer(trio: Any) -> None:
    _, (a, b, c), _ = trio
    key = _key(a.url, tenant="ryw")
    for i in range(5):
        answered = _chat(a.url, key, f"read your writes {i}")
        assert answered.status_code == 200, answered.text
        rid = answered.headers["x-tollgate-request-id"]
        seen = httpx.get(
            f"{b.url}/v1/requests/{rid}", headers={"authorization": f"Bearer {key}"}, timeout=30
        )
        assert seen.status_code == 200, seen.text
        feedback = httpx.post(
            c.url + "/v1/feedback",
            json={"request_id": rid, "success": True},
            headers={"authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert feedback.status_code in (200, 201), feedback.text


def test_a_rate_limit_is_exact_across_three_replicas(trio: Any) -> None:
    _, _, nginx = trio
    key = _key(nginx.url, tenant="rpm", rpm=12)
    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda i: _chat(nginx.url, key, f"limit {i}"), range(30)))
    statuses = [r.status_code for r in replies]
    assert statuses.count(200) == 12, statuses
    assert statuses.count(429) == 18, statuses
    refused = next(r for r in replies if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    ok = next(r for r in replies if r.status_code == 200)
    assert ok.headers["x-ratelimit-limit-requests"] == "12"


def test_the_response_cache_is_shared_by_the_replicas(trio: Any) -> None:
    stack, replicas, _ = trio
    key = _key(replicas[0].url, tenant="cache")
    before = stack.upstream.stats()["total_requests"]
    first = _chat(replicas[0].url, key, "what is shared by every replica?")
    assert first.headers["x-tollgate-cache"] == "miss"
    for replica in replicas[1:]:
        hit = _chat(replica.url, key, "what is shared by every replica?")
        assert hit.status_code == 200 and hit.headers["x-tollgate-cache"] == "hit"
        assert float(hit.headers["x-tollgate-cost-usd"]) == 0
        assert hit.json()["choices"] == first.json()["choices"]
    assert stack.upstream.stats()["total_requests"] == before + 1
    other = _key(replicas[0].url, tenant="cache-other")  # another tenant never sees it
    assert (
        _chat(replicas[1].url, other, "what is shared by every replica?").headers[
            "x-tollgate-cache"
        ]
        == "miss"
    )


def test_model_access_is_enforced_on_every_replica(trio: Any) -> None:
    _, replicas, _ = trio
    key = _key(replicas[0].url, tenant="access", allowed_backends=["fake"])
    for replica in replicas:
        denied = _chat(replica.url, key, "may I?", model="other")
        assert denied.status_code == 403, denied.text
        assert denied.json()["error"]["type"] in ("permission_denied", "permission_error")
        assert _chat(replica.url, key, f"yes on {replica.name}").status_code == 200
