"""Shared health across two ``tollgate serve`` replicas on one private Redis and PostgreSQL:
a slow backend observed on replica A makes the latency SLO exclude it on replica B; after a
cool-down one probe of all the replicas' requests reaches the backend; an admin reload on A
reaches B (which runs the same config file) and an invalid file is rejected by both."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bench import faults
from bench.fault_stack import ADMIN_KEY, Replica
from bench.faults import Stack

pytestmark = pytest.mark.integration

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
COOLDOWN_S = 2.0


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Stack, Replica, Replica, Path]]:
    with faults.fault_stack() as stack:
        other = {
            "name": "other",
            "model": "openai/other-model",
            "api_base": stack.upstream.base_url,
            "input_cost_per_token": "0.00001",  # dearer than "fake": chosen only when it is out
            "output_cost_per_token": "0.00002",
            "max_retries": 0,
        }
        base = faults.replica_config(stack.upstream, stack.workdir / "x")["backends"]
        sections: dict[str, Any] = {
            "backends": [*base, other],
            "circuit_breaker": {"failure_threshold": 2, "window_s": 30, "cooldown_s": COOLDOWN_S},
            "routing": {"default": "slo"},
            "policies": {
                "slo": {
                    "candidates": ["fake", "other"],
                    "objective": {"kind": "cheapest_adequate", "min_success": 0.0},
                    "constraints": {"latency_slo_ms": 300},
                    "predictor_fallback": "cheapest",
                }
            },
        }
        shared = stack.workdir / "shared.yaml"
        env = {"TOLLGATE_DATABASE_URL": stack.pg.url, "TOLLGATE_REDIS_URL": stack.redis.url}
        replicas = []
        # one config file, as in production; its relative spool is per replica (its cwd)
        cfg = faults.replica_config(stack.upstream, Path("var/spool"), **sections)
        shared.write_text(yaml.safe_dump(cfg))
        for name in ("a", "b"):
            (stack.workdir / name).mkdir()
            replica = Replica(name, cfg, stack.workdir / name, env)
            replica.config_path = shared
            stack.replicas.append(replica)
            replica.start()
            replicas.append(replica)
        yield stack, replicas[0], replicas[1], shared


def _key(url: str) -> str:
    resp = httpx.post(url + "/admin/keys", json={"tenant": "health"}, headers=ADMIN)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


def _chat(url: str, key: str, model: str, text: str = "hi") -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}]},
        headers={"authorization": f"Bearer {key}"},
        timeout=60,
    )


def _wait_for(check: Callable[[], bool], timeout_s: float) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout_s, "timed out"
        time.sleep(0.05)
    return time.monotonic() - start


def test_a_slow_backend_seen_on_one_replica_is_excluded_on_another(pair: Any) -> None:
    stack, a, b, _ = pair
    key = _key(a.url)
    first = _chat(b.url, key, "tollgate/slo")
    assert first.status_code == 200, first.text
    assert first.headers["x-tollgate-backend"] == "fake"  # nothing observed yet: the cheapest
    stack.upstream.configure(models={"fake-model": {"latency_ms": 500}})
    try:
        with ThreadPoolExecutor(25) as pool:  # 25 slow answers, all on replica A
            slow = list(pool.map(lambda i: _chat(a.url, key, "fake", f"slow {i}"), range(25)))
        assert all(r.status_code == 200 for r in slow)
        took = _wait_for(
            lambda: _chat(b.url, key, "tollgate/slo").headers["x-tollgate-backend"] == "other", 5
        )
        print(f"replica B excluded the slow backend {took:.2f} s after A observed it")
    finally:
        stack.upstream.configure(models={"fake-model": {"latency_ms": 0}})


def test_one_probe_after_the_cool_down_across_replicas(pair: Any) -> None:
    stack, a, b, _ = pair
    key = _key(a.url)
    stack.upstream.configure(models={"other-model": {"fail_next": [503, 503]}})
    assert _chat(a.url, key, "other").status_code >= 500
    assert _chat(b.url, key, "other").status_code >= 500  # the second failure: open
    assert _chat(a.url, key, "other").status_code == 503  # open everywhere
    before = stack.upstream.stats()["total_requests"]
    stack.upstream.configure(models={"other-model": {"latency_ms": 1500}})
    try:
        time.sleep(COOLDOWN_S + 0.3)
        urls = [a.url, b.url] * 5
        with ThreadPoolExecutor(10) as pool:
            replies = list(pool.map(lambda u: _chat(u, key, "other"), urls))
        statuses = sorted(r.status_code for r in replies)
        assert statuses.count(200) == 1, statuses  # the probe
        assert statuses.count(503) == 9, statuses  # the others skip it meanwhile
        assert stack.upstream.stats()["total_requests"] == before + 1
        assert _chat(b.url, key, "other").status_code == 200  # the probe closed it for all
    finally:
        stack.upstream.configure(models={"other-model": {"latency_ms": 0}})


def _backends(url: str) -> set[str]:
    resp = httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {KEY[0]}"})
    assert resp.status_code == 200, resp.text
    return {m["id"] for m in resp.json()["data"]}


KEY: list[str] = []


def _rewrite_keeping_mtime(path: Path, cfg: dict[str, Any]) -> None:
    """New content, old mtime: no replica's file watcher notices; only a reload does."""
    st = path.stat()
    path.write_text(yaml.safe_dump(cfg))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_an_admin_reload_on_one_replica_reaches_the_other(pair: Any) -> None:
    _, a, b, shared = pair
    KEY.append(_key(a.url))
    cfg = yaml.safe_load(shared.read_text())
    assert "third" not in _backends(b.url)
    third = {**cfg["backends"][1], "name": "third"}
    _rewrite_keeping_mtime(shared, {**cfg, "backends": [*cfg["backends"], third]})
    time.sleep(1.5)
    assert "third" not in _backends(b.url)  # nobody reloaded yet
    result = httpx.post(a.url + "/admin/reload", headers=ADMIN, timeout=30)
    assert result.status_code == 200 and result.json()["changed"], result.text
    assert "third" in _backends(a.url)
    took = _wait_for(lambda: "third" in _backends(b.url), 5)
    print(f"replica B reloaded {took:.2f} s after replica A's admin reload")

    bad = {**cfg, "circuit_breaker": {**cfg["circuit_breaker"], "cooldown_s": -1}}
    _rewrite_keeping_mtime(shared, bad)
    result = httpx.post(a.url + "/admin/reload", headers=ADMIN, timeout=30)
    assert not result.json()["ok"]
    assert any("circuit_breaker.cooldown_s" in e for e in result.json()["errors"]), result.text
    time.sleep(2.5)
    assert "third" in _backends(a.url) and "third" in _backends(b.url)  # both kept theirs
