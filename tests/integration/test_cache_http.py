"""The response cache end to end (issue 13): real ``tollgate serve`` processes in front of the
fake upstream, which counts the calls it gets. Exact cache: miss then hit with the upstream
called once, a hit at $0 recorded as a cache hit and shown in the spend report, tenants never
share, entries expire, clients opt out, hits served as streams and streamed answers kept, a hit
reserves no budget; semantic cache on the shipped predictor's embeddings; two gateways on one
Redis share entries; a Redis that goes away is a miss, not an error."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.gateway_process import GatewayProcess
from gateway.devtools.fake_upstream import FakeUpstream
from tests.support.harness import REDIS_URL
from tests.support.private_redis import PrivateRedis

pytestmark = pytest.mark.integration

ADMIN = {"authorization": "Bearer admin-secret-for-tests"}
TTL_S = 3.0


def config(upstream: FakeUpstream, work: Path, **cache: Any) -> dict[str, Any]:
    entry = {
        "name": "fake",
        "model": "openai/fake-model",
        "api_base": upstream.base_url,
        "api_key": "os.environ/FAKE_KEY",
        "input_cost_per_token": "0.0000002",
        "output_cost_per_token": "0.0000006",
        "max_retries": 0,
        "timeout_s": 10,
    }
    return {
        "backends": [entry],
        "policies": {
            "default": {
                "candidates": ["fake"],
                "objective": {"kind": "cheapest_adequate", "min_success": 0.1},
                "predictor_fallback": "first_candidate",
            }
        },
        "routing": {"default": "default"},
        "predictor": {"enabled": False},
        "store": {"spool_dir": str(work / "spool"), "flush_interval_ms": 20},
        "server": {"key_cache_ttl_s": 0},
        "cache": {"mode": "exact", "ttl_s": TTL_S, **cache},
    }


def env_for(work: Path, database_url: str | None = None, redis_url: str = "") -> dict[str, str]:
    return {
        "FAKE_KEY": "upstream-secret",
        "TOLLGATE_DATABASE_URL": database_url or f"sqlite:///{work}/tollgate.db",
        "TOLLGATE_REDIS_URL": redis_url,
        "TOLLGATE_ADMIN_KEY": "admin-secret-for-tests",
    }


def new_key(gw: GatewayProcess, tenant: str | None = None, **fields: Any) -> str:
    body = {"tenant": tenant or f"t-{uuid.uuid4().hex[:8]}", **fields}
    resp = httpx.post(gw.url + "/admin/keys", json=body, headers=ADMIN, timeout=30)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


def chat(gw: GatewayProcess, key: str, text: str, **kw: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}", **kw.pop("headers", {})}
    body = {"model": "auto", "messages": [{"role": "user", "content": text}], **kw}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def calls(upstream: FakeUpstream) -> int:
    return int(upstream.stats()["total_requests"])


def sse_chunks(resp: httpx.Response) -> list[Any]:
    out: list[Any] = []
    for line in resp.text.splitlines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def content(resp: httpx.Response) -> str:
    return str(resp.json()["choices"][0]["message"]["content"])


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def exact(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("cache-exact")
    with FakeUpstream(port=0) as upstream:
        with GatewayProcess(config(upstream, work), work, env_for(work)) as gw:
            yield {"gw": gw, "upstream": upstream}


def test_miss_then_hit_calls_the_upstream_once(exact: dict[str, Any]) -> None:
    gw, upstream = exact["gw"], exact["upstream"]
    key, text = new_key(gw), unique("what is a cache")
    before = calls(upstream)
    first = chat(gw, key, text)
    second = chat(gw, key, text, user="someone", metadata={"task_id": "t1"}, stream=False)
    assert first.status_code == second.status_code == 200
    assert calls(upstream) == before + 1
    assert first.headers["x-tollgate-cache"] == "miss"
    assert second.headers["x-tollgate-cache"] == "hit"
    assert second.headers["x-tollgate-cost-usd"] == "0"
    assert Decimal(first.headers["x-tollgate-cost-usd"]) > 0
    assert second.headers["x-tollgate-backend"] == "fake"
    assert second.json() == first.json()
    rows = httpx.get(
        f"{gw.url}/v1/requests/{second.headers['x-tollgate-request-id']}",
        headers={"authorization": f"Bearer {key}"},
    ).json()["attempts"]
    assert len(rows) == 1 and rows[0]["cache_hit"] is True and rows[0]["cost_usd"] == "0"
    assert Decimal(rows[0]["cache_saved_usd"]) == Decimal(first.headers["x-tollgate-cost-usd"])
    report = httpx.get(
        gw.url + "/v1/spend", headers={"authorization": f"Bearer {key}"}, timeout=30
    ).json()
    assert report["cache"]["hits"] == 1 and report["cache"]["requests"] == 2
    assert Decimal(report["cache"]["saved_usd"]) == Decimal(first.headers["x-tollgate-cost-usd"])
    assert Decimal(report["total"]["spend_usd"]) == Decimal(first.headers["x-tollgate-cost-usd"])
    # other parameters are another request
    third = chat(gw, key, text, temperature=0.3)
    assert third.headers["x-tollgate-cache"] == "miss" and calls(upstream) == before + 2


def test_tenants_never_share_entries(exact: dict[str, Any]) -> None:
    gw, upstream = exact["gw"], exact["upstream"]
    mine, theirs, text = new_key(gw), new_key(gw), unique("tenant scoped")
    before = calls(upstream)
    assert chat(gw, mine, text).headers["x-tollgate-cache"] == "miss"
    assert chat(gw, theirs, text).headers["x-tollgate-cache"] == "miss"
    assert chat(gw, mine, text).headers["x-tollgate-cache"] == "hit"
    assert calls(upstream) == before + 2


def test_entries_expire_after_the_ttl(exact: dict[str, Any]) -> None:
    gw, upstream = exact["gw"], exact["upstream"]
    key, text = new_key(gw), unique("short lived")
    before = calls(upstream)
    assert chat(gw, key, text).headers["x-tollgate-cache"] == "miss"
    assert chat(gw, key, text).headers["x-tollgate-cache"] == "hit"
    time.sleep(TTL_S + 0.5)
    assert chat(gw, key, text).headers["x-tollgate-cache"] == "miss"
    assert calls(upstream) == before + 2


def test_clients_opt_out_per_request(exact: dict[str, Any]) -> None:
    gw, upstream = exact["gw"], exact["upstream"]
    key, text = new_key(gw), unique("opt out")
    before = calls(upstream)
    assert chat(gw, key, text).headers["x-tollgate-cache"] == "miss"
    opted = [
        chat(gw, key, text, headers={"x-tollgate-cache": "off"}),
        chat(gw, key, text, headers={"cache-control": "no-cache"}),
        chat(gw, key, text, metadata={"tollgate_cache": "off"}),
    ]
    assert [r.headers["x-tollgate-cache"] for r in opted] == ["bypass"] * 3
    assert all(Decimal(r.headers["x-tollgate-cost-usd"]) > 0 for r in opted)
    assert calls(upstream) == before + 4
    assert chat(gw, key, text).headers["x-tollgate-cache"] == "hit"


def test_hits_stream_and_streamed_answers_are_kept(exact: dict[str, Any]) -> None:
    gw, upstream = exact["gw"], exact["upstream"]
    key, text = new_key(gw), unique("stream me")
    before = calls(upstream)
    plain = chat(gw, key, text)
    streamed = chat(gw, key, text, stream=True, stream_options={"include_usage": True})
    assert streamed.headers["x-tollgate-cache"] == "hit"
    assert streamed.headers["content-type"].startswith("text/event-stream")
    chunks = sse_chunks(streamed)
    assert chunks[-1] == "[DONE]"
    deltas = [c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1] if c["choices"]]
    assert "".join(deltas) == content(plain)
    usage = chunks[-2]
    assert usage["usage"]["completion_tokens"] == plain.json()["usage"]["completion_tokens"]
    assert usage["x_tollgate"]["cost_usd"] == "0"
    # a streamed miss is kept once complete, and served to a plain request
    other = unique("first streamed")
    miss = chat(gw, key, other, stream=True)
    assert miss.headers["x-tollgate-cache"] == "miss"
    text_streamed = "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in sse_chunks(miss)[:-1]
        if c.get("choices")
    )
    hit = chat(gw, key, other)
    assert hit.headers["x-tollgate-cache"] == "hit" and content(hit) == text_streamed
    assert calls(upstream) == before + 2


def test_a_hit_reserves_no_budget(exact: dict[str, Any]) -> None:
    gw = exact["gw"]
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    free, tight = new_key(gw, tenant), new_key(gw, tenant, max_budget_usd=0.0000001)
    text = unique("budget")
    assert chat(gw, free, text).headers["x-tollgate-cache"] == "miss"
    hit = chat(gw, tight, text)  # the worst case would exceed the budget: only a hit can serve
    assert hit.status_code == 200 and hit.headers["x-tollgate-cache"] == "hit"
    refused = chat(gw, tight, unique("budget"))  # a miss: the budget removes the backend
    assert refused.status_code in (400, 429) and "budget" in refused.text, refused.text


def test_semantic_hit_on_a_paraphrase_and_miss_below(tmp_path: Path) -> None:
    with FakeUpstream(port=0) as upstream:
        cfg = config(upstream, tmp_path, mode="semantic", similarity=0.9, ttl_s=60)
        cfg["predictor"] = {"enabled": True, "timeout_ms": 5000}
        with GatewayProcess(cfg, tmp_path, env_for(tmp_path)) as gw:
            key = new_key(gw)
            first = chat(gw, key, "What is the capital of France?")
            assert first.headers["x-tollgate-cache"] == "miss"
            para = chat(gw, key, "what's the capital of France")  # cosine about 0.92
            assert para.headers["x-tollgate-cache"] == "hit", para.headers
            assert float(para.headers["x-tollgate-cache-similarity"]) >= 0.9
            assert content(para) == content(first)
            other = chat(gw, key, "How do I bake sourdough bread at home?")  # about 0.08
            assert other.headers["x-tollgate-cache"] == "miss"
            assert (
                chat(gw, new_key(gw), "what's the capital of France").headers["x-tollgate-cache"]
                == "miss"
            )  # another tenant
            assert calls(upstream) == 3


def test_two_gateways_on_one_redis_share_the_cache(
    tmp_path: Path, pg_url: str, redis_prefix: str
) -> None:
    with FakeUpstream(port=0) as upstream:
        cfg = {**config(upstream, tmp_path), "redis": {"key_prefix": redis_prefix}}
        env = env_for(tmp_path, pg_url, REDIS_URL)
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        with (
            GatewayProcess(cfg, tmp_path / "a", env) as one,
            GatewayProcess(cfg, tmp_path / "b", env) as two,
        ):
            key, text = new_key(one), unique("shared")
            assert chat(one, key, text).headers["x-tollgate-cache"] == "miss"
            hit = chat(two, key, text)
            assert (
                hit.headers["x-tollgate-cache"] == "hit"
                and hit.headers["x-tollgate-cost-usd"] == "0"
            )
            assert calls(upstream) == 1


def test_redis_down_is_a_miss_not_an_error(tmp_path: Path) -> None:
    redis = PrivateRedis(tmp_path).start()
    try:
        with FakeUpstream(port=0) as upstream:
            env = env_for(tmp_path, redis_url=redis.url)
            with GatewayProcess(config(upstream, tmp_path), tmp_path, env) as gw:
                key, text = new_key(gw), unique("redis goes away")
                assert chat(gw, key, text).headers["x-tollgate-cache"] == "miss"
                assert chat(gw, key, text).headers["x-tollgate-cache"] == "hit"
                redis.kill()
                down = chat(gw, key, text)
                assert down.status_code == 200, down.text
                assert down.headers["x-tollgate-cache"] == "miss"
                assert calls(upstream) == 2
    finally:
        redis.kill()
