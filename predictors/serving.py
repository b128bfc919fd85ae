"""The predictor in a process of its own: score prompts that arrive on a byte stream.

This module owns the predictor *worker* — ``python -m predictors.serving --artifact DIR`` —
and its wire format. The gateway starts one (or a few) and talks to it over the worker's stdin
and stdout (``gateway.serve.predictor_client``), so model code never runs in the gateway's
process: the encoder does not hold the event loop's GIL, its thread pool does not fight the
loop for the cores, and a crash of the model takes only the worker down.

Wire format: every frame is a 4-byte big-endian length and a body.

* worker → client, once when ready: JSON ``{"type": "hello", "version", "profiles",
  "fingerprint", "embedder", "embed_dim", "batching", "device", "pid"}``;
* client → worker, one per prompt: JSON ``{"id": int, "text": str, "deadline": float}``
  (``deadline`` on ``time.monotonic()``, the system-wide CLOCK_MONOTONIC on Linux: an item
  still queued past it is answered ``expired`` without being scored — its caller has
  already given up, and skipping it keeps an overloaded worker from working on the past);
* worker → client, one per scored chunk: a reply (:func:`encode_reply`).

Batching is adaptive: whatever has arrived is taken (up to ``--max-batch``). An encoder whose
vectors do not depend on their batch (GPU, fp32) runs the chunk as one forward pass; CPU int8
quantizes activations per batch, so there each text gets its own pass (a prediction never
depends on which requests it came with) and each is answered as soon as it is done, new
arrivals being read between texts. Duplicate texts in a chunk are scored once.

Pure: no asyncio, no gateway imports; blocking reads and writes on two file descriptors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import struct
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("tollgate.predictor.worker")

HEADER = struct.Struct("!I")
MAX_FRAME = 64 * 1024 * 1024


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def split_frames(buf: bytearray) -> list[bytes]:
    """Remove and return every complete frame at the start of ``buf``."""
    out = []
    pos = 0
    while len(buf) - pos >= HEADER.size:
        (n,) = HEADER.unpack_from(buf, pos)
        if n > MAX_FRAME:
            raise ValueError(f"frame of {n} bytes exceeds the limit")
        if len(buf) - pos - HEADER.size < n:
            break
        out.append(bytes(buf[pos + HEADER.size : pos + HEADER.size + n]))
        pos += HEADER.size + n
    del buf[:pos]
    return out


def encode_request(item_id: int, text: str, deadline: float) -> bytes:
    return frame(json.dumps({"id": item_id, "text": text, "deadline": deadline}).encode())


@dataclass(frozen=True)
class Reply:
    """Scored items of one chunk, and the ids answered without a score (and why)."""

    ids: list[int]
    probs: np.ndarray  # (len(ids), n_profiles) float32, the hello's profile order
    complexity: np.ndarray  # (len(ids),) float32
    embeddings: np.ndarray  # (len(ids), embed_dim) float32
    failed: dict[int, str]  # id -> "expired" | "error: ..."


def encode_reply(reply: Reply) -> bytes:
    head = json.dumps(
        {
            "ids": reply.ids,
            "failed": {str(k): v for k, v in reply.failed.items()},
            "shape": list(reply.probs.shape),
            "dim": int(reply.embeddings.shape[1]) if reply.embeddings.ndim == 2 else 0,
        }
    ).encode()
    arrays = b"".join(
        np.ascontiguousarray(a, dtype=np.float32).tobytes()
        for a in (reply.probs, reply.complexity, reply.embeddings)
    )
    return frame(HEADER.pack(len(head)) + head + arrays)


def decode_reply(body: bytes) -> Reply:
    (n,) = HEADER.unpack_from(body, 0)
    head = json.loads(body[HEADER.size : HEADER.size + n])
    rows, cols = head["shape"]
    dim = head["dim"]
    data = np.frombuffer(body, dtype=np.float32, offset=HEADER.size + n)
    probs = data[: rows * cols].reshape(rows, cols)
    complexity = data[rows * cols : rows * cols + rows]
    embeddings = data[rows * cols + rows : rows * cols + rows + rows * dim].reshape(rows, dim)
    failed = {int(k): str(v) for k, v in head["failed"].items()}
    return Reply(list(head["ids"]), probs, complexity, embeddings, failed)


@dataclass
class _Item:
    id: int
    text: str
    deadline: float


class Worker:
    """The scoring loop over two file descriptors (``rfd``: requests in, ``wfd``: replies out)."""

    def __init__(self, predictor: Any, rfd: int, wfd: int, max_batch: int = 64) -> None:
        self.predictor = predictor
        self.rfd = rfd
        self.wfd = wfd
        self.max_batch = max_batch
        self.queue: deque[_Item] = deque()
        self._buf = bytearray()
        self._eof = False
        self.batching = bool(getattr(predictor.embedder, "batch_independent", False))
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
        for body in split_frames(self._buf):
            msg = json.loads(body)
            self.queue.append(_Item(int(msg["id"]), str(msg["text"]), float(msg["deadline"])))

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
            chunk = self.max_batch if self.batching else 1
            items = [self.queue.popleft() for _ in range(min(chunk, len(self.queue)))]
            self._write(encode_reply(self.score(items)))

    def score(self, items: Sequence[_Item]) -> Reply:
        now = time.monotonic()
        live = [it for it in items if it.deadline > now]
        failed = {it.id: "expired" for it in items if it.deadline <= now}
        n_prof = len(self.profiles)
        empty = Reply(
            [],
            np.zeros((0, n_prof), np.float32),
            np.zeros(0, np.float32),
            np.zeros((0, self._embed_dim()), np.float32),
            failed,
        )
        if not live:
            return empty
        unique = list(dict.fromkeys(it.text for it in live))
        try:
            preds = self.predictor.predict_batch(unique)
        except Exception as exc:  # report it to the callers, keep serving
            log.exception("scoring failed")
            failed.update({it.id: f"error: {type(exc).__name__}: {exc}"[:300] for it in live})
            return empty
        row = {text: i for i, text in enumerate(unique)}
        probs = np.array(
            [[p.p_success[name] for name in self.profiles] for p in preds], dtype=np.float32
        )
        complexity = np.array([p.complexity for p in preds], dtype=np.float32)
        emb = np.stack(
            [
                np.asarray(p.embedding, np.float32)
                if p.embedding is not None
                else np.zeros(self._embed_dim(), np.float32)
                for p in preds
            ]
        )
        idx = [row[it.text] for it in live]
        return Reply([it.id for it in live], probs[idx], complexity[idx], emb[idx], failed)


def pick_device(requested: str, runtime: str, int8: bool) -> str:
    """``cpu`` or ``cuda``: ``auto`` takes the GPU when torch sees one and the artifact's
    embedder can run there (the torch runtime without CPU int8); else the CPU."""
    if requested == "cpu":
        return "cpu"
    gpu_ok = runtime == "torch" and not int8
    if requested == "cuda" and not gpu_ok:
        raise ValueError(
            "this artifact's embedder runs on CPU only (ONNX int8); train one with the torch "
            "runtime to serve on a GPU"
        )
    if not gpu_ok:
        return "cpu"
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Serve predictions over stdin/stdout.")
    p.add_argument("--artifact", default=None, help="artifact directory (default: shipped)")
    p.add_argument("--threads", type=int, default=1, help="encoder threads")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--cache-dir", default=None, help="cache root (default ~/.cache/tollgate)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from predictors.artifact import read_artifact
    from predictors.service import (
        embedder_config_from_dict,
        load_artifact,
        make_embedder,
        resolve_artifact,
    )

    _, meta = read_artifact(resolve_artifact(args.artifact))
    cfg = embedder_config_from_dict(meta["embedder"])
    device = pick_device(args.device, cfg.runtime, bool(getattr(cfg, "quantize_int8", False)))
    embedder = make_embedder(cfg, device=device, threads=args.threads, cache_dir=args.cache_dir)
    predictor = load_artifact(args.artifact, embedder=embedder)
    predictor.predict_batch(["warm up the predictor", "a second, longer warm-up prompt"])
    # the protocol owns stdout: anything a library prints goes to stderr instead
    wfd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    worker = Worker(predictor, sys.stdin.fileno(), wfd, max_batch=args.max_batch)
    worker.hello(device)
    try:
        worker.serve_forever()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
