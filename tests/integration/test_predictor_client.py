"""The gateway's predictor client against real worker processes.

Most tests run the real ``predictors.serving`` worker loop around a stub model
(``tests.support.predictor_worker``) so timing can be controlled; the last one runs the shipped
artifact and checks that a prediction made in the worker process is the one the in-process
predictor makes.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gateway.serve.predictor_client import PredictorClient
from predictors.verdict import VerdictModel
from tests.support.predictor_worker import p_cheap

STUB = [sys.executable, "-m", "tests.support.predictor_worker"]


def stub_client(*args: str, **kwargs: object) -> PredictorClient:
    return PredictorClient(command=[*STUB, *args], start_timeout_s=60, **kwargs)  # type: ignore[arg-type]


def scored_texts(log: Path) -> list[tuple[int, str]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        pid, texts = line.split("\t")
        out += [(int(pid), t) for t in texts.split("|")]
    return out


async def test_concurrent_calls_are_answered_by_the_worker_process(tmp_path: Path) -> None:
    log = tmp_path / "log"
    client = stub_client("--log", str(log))
    await client.start()
    try:
        assert client.version == "stub-predictor-1"
        assert client.profiles == frozenset({"cheap", "premium"})
        prompts = [f"prompt {'y' * i}" for i in range(40)]
        results = await asyncio.gather(*(client.score(p, 10.0) for p in prompts))
    finally:
        await client.close()
    assert [r.status for r in results] == ["ok"] * 40
    for p, r in zip(prompts, results, strict=True):
        assert r.prediction is not None
        assert r.prediction.p_success["cheap"] == pytest.approx(p_cheap(p))
        assert r.prediction.embedding is not None and r.prediction.embedding.shape == (384,)
    pids = {pid for pid, _ in scored_texts(log)}
    assert len(pids) == 1 and os.getpid() not in pids  # scored in the worker, not here


async def test_cache_and_coalescing_skip_the_model(tmp_path: Path) -> None:
    log = tmp_path / "log"
    client = stub_client("--log", str(log), "--delay-ms", "50")
    await client.start()
    try:
        first = await asyncio.gather(*(client.score("same prompt", 10.0) for _ in range(5)))
        again = await client.score("same prompt", 10.0)
    finally:
        await client.close()
    assert all(r.status == "ok" for r in first)
    assert again.cached and again.prediction == first[0].prediction
    assert client.stats.coalesced == 4 and client.stats.cache_hits == 1
    assert [t for _, t in scored_texts(log)] == ["same prompt"]


async def test_a_long_prompt_is_sent_as_the_part_the_encoder_reads(tmp_path: Path) -> None:
    log = tmp_path / "log"
    client = stub_client("--log", str(log))
    await client.start()
    try:
        head, tail = "Instructions. " * 20, "Examples end here. " * 30 + "the actual question?"
        r = await client.score(head + "one middle " * 2000 + tail, 10.0)
        # a different middle, the same head and tail: the same vector, served from the cache
        r2 = await client.score(head + "another middle " * 900 + tail, 10.0)
    finally:
        await client.close()
    (sent,) = [t for _, t in scored_texts(log)]
    assert r.status == "ok" and len(sent) < 600 and sent.endswith("the actual question?")
    assert r2.cached


async def test_a_late_answer_is_a_timeout_and_queued_requests_expire(tmp_path: Path) -> None:
    log = tmp_path / "log"
    client = stub_client("--log", str(log))
    await client.start()
    try:
        ticks = 0
        t0 = time.perf_counter()

        async def ticker() -> None:
            nonlocal ticks
            while time.perf_counter() - t0 < 0.05:
                ticks += 1
                await asyncio.sleep(0.001)

        _, slow, *queued = await asyncio.gather(
            ticker(),
            client.score("slow:300", 0.05),
            *(client.score(f"queued {i}", 0.05) for i in range(5)),
        )
        after = await client.score("after the slow one", 5.0)
        again = await client.score("slow:300", 5.0)
    finally:
        await client.close()
    # the worker started it in time but answered after the budget: a timeout, not a guess
    assert slow.status == "timeout" and slow.prediction is None and slow.ms < 900
    assert all(q.status == "timeout" for q in queued)
    assert ticks > 5  # the event loop kept running meanwhile
    assert after.status == "ok"
    assert again.status == "ok" and again.cached  # the late answer was still right
    scored = [t for _, t in scored_texts(log)]
    assert not any(t.startswith("queued") for t in scored)  # expired while waiting: skipped


async def test_an_answer_sent_in_time_counts_even_if_the_loop_reads_it_late() -> None:
    client = stub_client()
    await client.start()
    try:
        call = asyncio.ensure_future(client.score("quick", 0.1))
        await asyncio.sleep(0)  # the request is written to the worker
        time.sleep(0.4)  # noqa: ASYNC251 - the event loop is busy (a CPU-bound gateway)
        result = await call
    finally:
        await client.close()
    assert result.status == "ok" and result.prediction is not None and result.ms > 300


async def test_a_hung_worker_is_given_up_on_after_the_grace() -> None:
    client = stub_client(grace_s=0.2)
    await client.start()
    try:
        t0 = time.perf_counter()
        hung = await client.score("slow:3000", 0.05)
        waited = time.perf_counter() - t0
    finally:
        await client.close()
    assert hung.status == "timeout" and 0.2 < waited < 1.5


async def test_model_error_is_a_status_not_an_exception() -> None:
    client = stub_client()
    await client.start()
    try:
        bad = await client.score("boom", 5.0)
        good = await client.score("fine", 5.0)
    finally:
        await client.close()
    assert bad.status == "error" and bad.prediction is None
    assert good.status == "ok"


async def test_a_dead_worker_is_restarted(tmp_path: Path) -> None:
    log = tmp_path / "log"
    client = stub_client("--log", str(log))
    await client.start()
    try:
        died = await client.score("die", 5.0)
        meanwhile = await client.score("while restarting", 5.0)
        for _ in range(1200):  # polling a counter: at most 60 s
            if client.stats.restarts:
                break
            await asyncio.sleep(0.05)
        back = await client.score("after the restart", 5.0)
    finally:
        await client.close()
    assert died.status == "error"
    assert meanwhile.status in ("unavailable", "ok")  # answered at once, never hangs
    assert client.stats.restarts == 1 and back.status == "ok"
    assert len({pid for pid, _ in scored_texts(log)}) == 2


async def test_a_pool_spreads_calls_over_its_workers(tmp_path: Path) -> None:
    log = tmp_path / "log"
    client = stub_client("--log", str(log), "--delay-ms", "20", workers=2)
    await client.start()
    try:
        results = await asyncio.gather(*(client.score(f"p{i}", 10.0) for i in range(20)))
    finally:
        await client.close()
    assert all(r.status == "ok" for r in results)
    per_pid: dict[int, int] = {}
    for pid, _ in scored_texts(log):
        per_pid[pid] = per_pid.get(pid, 0) + 1
    assert len(per_pid) == 2 and min(per_pid.values()) >= 5


async def test_overload_is_refused_at_once() -> None:
    client = stub_client("--delay-ms", "200", max_pending=2)
    await client.start()
    try:
        results = await asyncio.gather(*(client.score(f"p{i}", 5.0) for i in range(4)))
    finally:
        await client.close()
    statuses = sorted(r.status for r in results)
    assert statuses == ["ok", "ok", "overloaded", "overloaded"]


async def test_close_stops_the_workers() -> None:
    client = stub_client(workers=2)
    await client.start()
    procs = [w.proc for w in client._workers]
    await client.close()
    assert all(p is not None and p.returncode is not None for p in procs)


@pytest.mark.parametrize("artifact", [None, "minilm"])
async def test_shipped_artifact_in_a_worker_matches_the_in_process_predictor(
    artifact: str | None,
) -> None:
    from predictors.service import load_artifact

    prompts = [
        "What is the capital of France?",
        "Write a Python function that merges two sorted lists in linear time.",
        "Question: " + "a very long few-shot preamble. " * 200 + "Which option is correct?",
    ]
    client = PredictorClient(artifact, start_timeout_s=600)
    await client.start()
    try:
        served = [await client.score(p, 60.0) for p in prompts]
        batched = await asyncio.gather(*(client.score(p + " (again)", 60.0) for p in prompts))
    finally:
        await client.close()
    local = load_artifact(artifact).predict_batch(prompts)
    assert client.version == load_artifact(artifact).version
    shipped_verdict = VerdictModel.from_arrays(load_artifact(artifact).model.arrays)
    if shipped_verdict is None:
        assert client.verdict is None
    else:  # the gateway judges cascade answers with the artifact's own verdict
        assert client.verdict is not None
        np.testing.assert_allclose(client.verdict.weights, shipped_verdict.weights)
        assert client.verdict.bias == pytest.approx(shipped_verdict.bias)
    assert all(b.status == "ok" for b in batched)
    for s, ref in zip(served, local, strict=True):
        assert s.status == "ok" and s.prediction is not None
        assert s.prediction.complexity == pytest.approx(ref.complexity, abs=1e-6)
        for name, p in ref.p_success.items():
            assert s.prediction.p_success[name] == pytest.approx(p, abs=1e-6)
        assert s.prediction.output_ratio == pytest.approx(dict(ref.output_ratio), abs=1e-6)
        assert s.prediction.embedding is not None and ref.embedding is not None
        np.testing.assert_allclose(s.prediction.embedding, ref.embedding, atol=1e-6)


async def test_static_predictor_in_the_gateway_process() -> None:
    from predictors.service import load_artifact

    client = PredictorClient(None, workers=0)  # the shipped default: the static encoder
    await client.start()
    try:
        r = await client.score("Which planet is the largest?", 0.05)
        again = await client.score("Which planet is the largest?", 0.05)
    finally:
        await client.close()
    ref = load_artifact().predict_batch(["Which planet is the largest?"])[0]
    assert r.status == "ok" and r.prediction is not None and again.cached
    assert client.version == load_artifact().version
    assert r.prediction.p_success == pytest.approx(dict(ref.p_success), abs=1e-6)
    assert r.prediction.output_ratio == pytest.approx(dict(ref.output_ratio), abs=1e-6)
    assert client.verdict is not None  # the shipped default carries the cascade verdict
