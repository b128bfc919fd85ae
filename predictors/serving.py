"""The predictor in a process of its own: score prompts that arrive on a byte stream.

This module owns the predictor *worker* — ``python -m predictors.serving --artifact DIR``.
The gateway starts one (or a few) and talks to it over the worker's stdin
and stdout (``gateway.serve.predictor_client``), so model code never runs in the gateway's
process: the encoder does not hold the event loop's GIL, its thread pool does not fight the
loop for the cores, and a crash of the model takes only the worker down.

The wire format (frames, the hello, requests and replies) is ``predictors.wire``'s.

Batching is adaptive: whatever has arrived is taken (up to ``--max-batch``; under load, after
waiting up to ``--coalesce-ms`` for more, ``Worker._coalesce``). An encoder whose
vectors do not depend on their batch (static, GPU, fp32) runs the chunk as one forward pass;
CPU int8 quantizes activations per batch, so there each text gets its own pass (a prediction
never depends on which requests it came with) and chunks are small (``PER_TEXT_CHUNK``). The
outcome model runs once per chunk either way: its neighbour search streams the whole
9,401-row memory once per call (on this CPU ~3 ms for one query, ~0.35 ms a query in a batch
of 32). Duplicate texts in a chunk are scored once.

Pure: no asyncio, no gateway imports; blocking reads and writes on two file descriptors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictors.wire import Reply, encode_reply, frame, split_frames, verdict_of

log = logging.getLogger("tollgate.predictor.worker")

# texts a per-text (CPU int8) encoder takes in one go before the chunk is answered: their
# outcome model runs once for all of them, and the first waits for at most this many passes
PER_TEXT_CHUNK = 4


class ChunkCost:
    """Seconds to score a chunk of ``n`` texts, ``fixed + per_text * n``: a least-squares fit
    over recent chunks (exponentially forgotten, so it follows the machine's load)."""

    def __init__(self, decay: float = 0.95) -> None:
        self.decay = decay
        self.w = self.sn = self.st = self.snn = self.snt = 0.0

    def observe(self, n: int, seconds: float) -> None:
        d = self.decay
        self.w = d * self.w + 1
        self.sn = d * self.sn + n
        self.st = d * self.st + seconds
        self.snn = d * self.snn + n * n
        self.snt = d * self.snt + n * seconds

    def estimate(self) -> tuple[float, float]:
        """``(fixed, per_text)`` seconds; ``(0, 0)`` before any chunk was scored."""
        if self.w == 0:
            return 0.0, 0.0
        mean_n, mean_t = self.sn / self.w, self.st / self.w
        var = self.snn / self.w - mean_n**2
        if var < 1e-9:  # every chunk had the same size: all of the cost counts as per text
            return 0.0, mean_t / max(mean_n, 1.0)
        per_text = max((self.snt / self.w - mean_n * mean_t) / var, 1e-6)
        return max(mean_t - per_text * mean_n, 0.0), per_text


@dataclass
class _Item:
    id: int
    text: str
    deadline: float


class Worker:
    """The scoring loop over two file descriptors (``rfd``: requests in, ``wfd``: replies out)."""

    def __init__(
        self, predictor: Any, rfd: int, wfd: int, max_batch: int = 64, coalesce_s: float = 0.0
    ) -> None:
        self.predictor = predictor
        self.coalesce_s = coalesce_s
        self.gap = 0.05  # seconds between prompt arrivals (capped at 50 ms), a moving average
        self._arrived = time.monotonic()
        self.rfd = rfd
        self.wfd = wfd
        self.max_batch = max_batch
        self.queue: deque[_Item] = deque()
        self._buf = bytearray()
        self._eof = False
        self.batching = bool(getattr(predictor.embedder, "batch_independent", False))
        self.cost = ChunkCost()
        self.profiles: list[str] = list(predictor.profiles)

    def hello(self, device: str) -> None:
        self._write(
            frame(
                json.dumps(
                    {
                        "type": "hello",
                        "version": self.predictor.version,
                        "profiles": self.profiles,
                        "fingerprint": self.predictor.embedder_config.fingerprint(),
                        "embedder": self.predictor.embedder_config.to_dict(),
                        "embed_dim": int(self._embed_dim()),
                        "batching": self.batching,
                        "device": device,
                        "pid": os.getpid(),
                        "verdict": verdict_of(self.predictor),
                    }
                ).encode()
            )
        )

    def _embed_dim(self) -> int:
        from predictors.embedding import EMBED_DIM

        return EMBED_DIM

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.wfd, view)
            view = view[n:]

    def _read(self, block: bool) -> None:
        """Read what has arrived (waiting for something only when ``block``)."""
        if self._eof:
            return
        if not block:
            ready, _, _ = select.select([self.rfd], [], [], 0)
            if not ready:
                return
        data = os.read(self.rfd, 1 << 20)
        if not data:
            self._eof = True
            return
        self._buf += data
        now = time.monotonic()
        for body in split_frames(self._buf):
            msg = json.loads(body)
            self.queue.append(_Item(int(msg["id"]), str(msg["text"]), float(msg["deadline"])))
            self.gap = 0.9 * self.gap + 0.1 * min(now - self._arrived, 0.05)
            self._arrived = now

    def _coalesce(self) -> None:
        """Under load, wait up to ``coalesce_s`` for more prompts before scoring: a chunk's
        fixed cost (the neighbour search streams the whole memory once per chunk) is then
        shared. Only when prompts arrive at most two windows apart (an idle gateway's prompt
        never waits), for a quarter of the first one's slack at most."""
        if not self.batching or self.gap >= 2 * self.coalesce_s:
            return
        end = time.monotonic() + min(
            self.coalesce_s, 0.25 * (self.queue[0].deadline - time.monotonic())
        )
        while len(self.queue) < self.max_batch and not self._eof:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.rfd], [], [], left)[0]:
                return
            self._read(block=True)

    def serve_forever(self) -> None:
        """Score until the client closes its end (EOF) and nothing is left queued."""
        while True:
            self._read(block=not self.queue)
            if not self.queue:
                if self._eof:
                    return
                continue
            while True:  # drain what else is waiting, without blocking
                before = len(self._buf) + len(self.queue)
                self._read(block=False)
                if len(self._buf) + len(self.queue) == before or self._eof:
                    break
            self._coalesce()
            items = [self.queue.popleft() for _ in range(self._chunk_size())]
            started = time.monotonic()
            self._write(encode_reply(self.score(items)))
            self.cost.observe(len(items), time.monotonic() - started)

    def _chunk_size(self) -> int:
        """How many queued texts to score in one go. A chunk costs a fixed part (the outcome
        model's neighbour search streams its whole memory once per call) plus a part per text,
        so bigger chunks serve more texts a second; but every answer in a chunk is sent when
        the chunk is done, and a chunk that ends past its first text's deadline turns all of
        them into timeouts. So: the biggest chunk (up to ``max_batch``, ``PER_TEXT_CHUNK`` for
        a per-text encoder) that should end before the first deadline; when even one text
        cannot, everything queued at once, to catch up."""
        limit = min(self.max_batch if self.batching else PER_TEXT_CHUNK, len(self.queue))
        slack = 0.8 * (self.queue[0].deadline - time.monotonic())
        fixed, per_text = self.cost.estimate()
        if per_text <= 0:
            return max(1, limit)
        fits = int((slack - fixed) / per_text)
        return max(1, min(limit, fits)) if fits >= 1 else max(1, limit)

    def score(self, items: Sequence[_Item]) -> Reply:
        """Score a chunk; an item whose deadline passed before its turn is ``expired``."""
        failed: dict[int, str] = {}
        empty = Reply(
            [],
            np.zeros((0, len(self.profiles)), np.float32),
            np.zeros(0, np.float32),
            np.zeros((0, self._embed_dim()), np.float32),
            failed,
        )
        try:
            live, unique, preds = (
                self._score_chunk(items, failed)
                if self.batching or not hasattr(self.predictor, "predict_embeddings")
                else self._score_per_text(items, failed)
            )
        except Exception as exc:  # report it to the callers, keep serving
            log.exception("scoring failed")
            for it in items:
                failed.setdefault(it.id, f"error: {type(exc).__name__}: {exc}"[:300])
            return empty
        if not live:
            return empty
        row = {text: i for i, text in enumerate(unique)}
        probs = np.array(
            [[p.p_success[name] for name in self.profiles] for p in preds], dtype=np.float32
        )
        complexity = np.array([p.complexity for p in preds], dtype=np.float32)
        ratios = np.array(
            [[p.output_ratio.get(name, np.nan) for name in self.profiles] for p in preds],
            dtype=np.float32,
        )
        emb = np.stack(
            [
                np.asarray(p.embedding, np.float32)
                if p.embedding is not None
                else np.zeros(self._embed_dim(), np.float32)
                for p in preds
            ]
        )
        idx = [row[it.text] for it in live]
        return Reply(
            [it.id for it in live], probs[idx], complexity[idx], emb[idx], failed, 0.0, ratios[idx]
        )

    def _score_chunk(
        self, items: Sequence[_Item], failed: dict[int, str]
    ) -> tuple[list[_Item], list[str], list[Any]]:
        """A batch-independent encoder: one pass (and one outcome-model call) for the chunk."""
        now = time.monotonic()
        live = [it for it in items if it.deadline > now]
        failed.update({it.id: "expired" for it in items if it.deadline <= now})
        unique = list(dict.fromkeys(it.text for it in live))
        return live, unique, list(self.predictor.predict_batch(unique)) if unique else []

    def _score_per_text(
        self, items: Sequence[_Item], failed: dict[int, str]
    ) -> tuple[list[_Item], list[str], list[Any]]:
        """CPU int8: one encoder pass per text, each started only if its caller still waits;
        then one outcome-model call for the chunk (its neighbour search streams the whole
        memory once per call, whatever the number of queries)."""
        vectors: dict[str, np.ndarray] = {}
        live = []
        for it in items:
            if it.text not in vectors:
                if it.deadline <= time.monotonic():
                    failed[it.id] = "expired"
                    continue
                vectors[it.text] = self.predictor.embedder.encode([it.text])[0]
            live.append(it)
        unique = list(vectors)
        if not unique:
            return live, unique, []
        x = np.stack([vectors[t] for t in unique])
        return live, unique, list(self.predictor.predict_embeddings(x))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Serve predictions over stdin/stdout.")
    p.add_argument("--artifact", default=None, help="artifact directory (default: shipped)")
    p.add_argument("--threads", type=int, default=1, help="encoder threads")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--coalesce-ms", type=float, default=3.0, help="Worker._coalesce (0: off)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--priority",
        type=int,
        default=0,
        help="raise the scheduling priority by this much (nice -N) when allowed: its work is "
        "small and every request waits for it",
    )
    p.add_argument("--cache-dir", default=None, help="cache root (default ~/.cache/tollgate)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.priority > 0:
        try:
            os.nice(-args.priority)
        except OSError as exc:  # no CAP_SYS_NICE: run at the normal priority
            log.info("predictor worker keeps the normal priority (%s)", exc)

    from predictors.service import load_for_serving

    predictor, _, device = load_for_serving(
        args.artifact, device=args.device, threads=args.threads, cache_dir=args.cache_dir
    )
    # the protocol owns stdout: anything a library prints goes to stderr instead
    wfd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    worker = Worker(predictor, sys.stdin.fileno(), wfd, args.max_batch, args.coalesce_ms / 1000)
    worker.hello(device)
    # the gateway closed our pipes or is stopping: the normal end of a worker, not an error
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        worker.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
