"""The predictor worker (``predictors.serving``): wire format, batching, deadlines, errors.

The worker loop runs here in a thread over two OS pipes with a stub model; the process
boundary and the gateway's client are covered in ``tests/integration/test_predictor_client``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from predictors.serving import Worker
from predictors.wire import (
    HEADER,
    Reply,
    decode_reply,
    encode_reply,
    encode_request,
    frame,
    split_frames,
)
from tests.support.predictor_worker import StubModel, p_cheap


def test_frames_split_only_when_complete() -> None:
    data = frame(b"one") + frame(b"two!") + frame(b"three")
    buf = bytearray(data[:-2])
    assert split_frames(buf) == [b"one", b"two!"]
    buf += data[-2:]
    assert split_frames(buf) == [b"three"] and buf == bytearray()


def test_frame_over_the_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        split_frames(bytearray(HEADER.pack(2**31)))


def test_reply_round_trip() -> None:
    rng = np.random.default_rng(0)
    reply = Reply(
        [3, 9],
        rng.random((2, 5), dtype=np.float32),
        np.array([0.1, 0.7], np.float32),
        rng.random((2, 384), dtype=np.float32),
        {4: "expired", 5: "error: boom"},
    )
    (body,) = split_frames(bytearray(encode_reply(reply)))
    back = decode_reply(body)
    assert back.ids == [3, 9] and back.failed == reply.failed
    np.testing.assert_array_equal(back.probs, reply.probs)
    np.testing.assert_array_equal(back.complexity, reply.complexity)
    np.testing.assert_array_equal(back.embeddings, reply.embeddings)
    assert back.ratios is None
    ratios = np.array([[0.5, np.nan, 2.0, 1.0, np.nan], [4.0, 0.25, np.nan, 1.0, 1.5]], np.float32)
    with_ratios = Reply(reply.ids, reply.probs, reply.complexity, reply.embeddings, {}, 0, ratios)
    (body,) = split_frames(bytearray(encode_reply(with_ratios)))
    back = decode_reply(body)
    np.testing.assert_array_equal(back.ratios, ratios)  # NaN (unknown) survives the pipe
    np.testing.assert_array_equal(back.embeddings, reply.embeddings)


class Harness:
    """A Worker in a thread: ``send`` requests, ``replies`` reads until ``n`` ids are answered."""

    def __init__(self, model: StubModel) -> None:
        self.req_r, self.req_w = os.pipe()
        self.rep_r, self.rep_w = os.pipe()
        self.worker = Worker(model, self.req_r, self.rep_w, max_batch=8)
        self.thread = threading.Thread(target=self.worker.serve_forever, daemon=True)
        self.buf = bytearray()

    def start(self) -> None:
        self.worker.hello("cpu")
        (body,) = self._frames(1)
        hello = json.loads(body)
        assert hello["type"] == "hello" and hello["profiles"] == ["cheap", "premium"]
        self.thread.start()

    def send(self, item_id: int, text: str, deadline: float | None = None) -> None:
        os.write(self.req_w, encode_request(item_id, text, deadline or time.monotonic() + 30))

    def _frames(self, n: int) -> list[bytes]:
        out: list[bytes] = []
        while len(out) < n:
            out += split_frames(self.buf)
            if len(out) < n:
                self.buf += os.read(self.rep_r, 1 << 16)
        return out

    def replies(self, n_ids: int) -> list[Reply]:
        got: list[Reply] = []
        while sum(len(r.ids) + len(r.failed) for r in got) < n_ids:
            got += [decode_reply(b) for b in self._frames(1)]
        return got

    def close(self) -> None:
        os.close(self.req_w)  # EOF: the worker returns
        self.thread.join(5)
        assert not self.thread.is_alive()
        for fd in (self.req_r, self.rep_r, self.rep_w):
            os.close(fd)


@pytest.fixture
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = Harness(
        StubModel(**getattr(request, "param", {"delay_s": 0, "log": None, "batching": False}))
    )
    h.start()
    yield h
    h.close()


def test_scores_every_request_with_the_models_probabilities(harness: Harness) -> None:
    texts = [f"prompt {'x' * i}" for i in range(12)]
    for i, t in enumerate(texts):
        harness.send(i, t)
    replies = harness.replies(len(texts))
    by_id = {}
    for r in replies:
        assert not r.failed
        for j, item in enumerate(r.ids):
            by_id[item] = r.probs[j]
    assert sorted(by_id) == list(range(12))
    for i, t in enumerate(texts):
        assert by_id[i][0] == pytest.approx(p_cheap(t)) and by_id[i][1] == pytest.approx(0.9)


def test_int8_cpu_scores_one_text_per_pass(tmp_path: os.PathLike[str]) -> None:
    log = os.path.join(tmp_path, "log")
    h = Harness(StubModel(0.01, log, batching=False))
    h.start()
    try:
        for i in range(6):
            h.send(i, f"t{i}")
        h.replies(6)
    finally:
        h.close()
    with open(log) as f:
        passes = [line.rstrip("\n").split("\t")[1] for line in f]
    assert passes == [f"t{i}" for i in range(6)]  # in order, one per model call


def test_batch_independent_encoder_takes_what_is_queued(tmp_path: os.PathLike[str]) -> None:
    log = os.path.join(tmp_path, "log")
    h = Harness(StubModel(0.05, log, batching=True))
    h.start()
    try:
        h.send(0, "first")  # the worker is busy with it for 50 ms ...
        time.sleep(0.01)
        for i in range(1, 6):
            h.send(i, "dup" if i % 2 else f"t{i}")  # ... while these queue up
        replies = h.replies(6)
    finally:
        h.close()
    with open(log) as f:
        passes = [line.rstrip("\n").split("\t")[1].split("|") for line in f]
    assert passes[0] == ["first"]
    assert sorted(passes[1]) == ["dup", "t2", "t4"]  # one pass, the duplicate scored once
    assert sum(len(r.ids) for r in replies) == 6


@pytest.mark.parametrize("gap_s", [0.0, 5.0])
def test_under_load_a_small_chunk_waits_for_more_prompts(
    tmp_path: os.PathLike[str], gap_s: float
) -> None:
    """Prompts arriving faster than the window share a pass; an idle worker does not wait."""
    log = os.path.join(tmp_path, "log")
    h = Harness(StubModel(0.0, log, batching=True))
    h.worker.coalesce_s = 0.5
    h.start()
    try:
        h.worker.gap = gap_s  # the recent arrival rate: 0 under load, 5 s apart when idle
        h.send(0, "first")
        time.sleep(0.1)  # inside the window
        h.send(1, "second")
        h.replies(2)
    finally:
        h.close()
    with open(log) as f:
        passes = [line.rstrip("\n").split("\t")[1].split("|") for line in f]
    assert passes == ([["first", "second"]] if gap_s == 0.0 else [["first"], ["second"]])


def test_expired_requests_are_answered_without_scoring(tmp_path: os.PathLike[str]) -> None:
    log = os.path.join(tmp_path, "log")
    h = Harness(StubModel(0.0, log, batching=False))
    h.start()
    try:
        h.send(1, "late", deadline=time.monotonic() - 1)
        h.send(2, "on time")
        replies = h.replies(2)
    finally:
        h.close()
    failed = {k: v for r in replies for k, v in r.failed.items()}
    assert failed == {1: "expired"}
    with open(log) as f:
        assert "late" not in f.read()


def test_model_error_is_reported_and_the_worker_keeps_serving(harness: Harness) -> None:
    harness.send(1, "boom")
    (r1,) = harness.replies(1)
    assert r1.failed[1].startswith("error: RuntimeError: model exploded")
    harness.send(2, "fine")
    (r2,) = harness.replies(1)
    assert r2.ids == [2] and not r2.failed
