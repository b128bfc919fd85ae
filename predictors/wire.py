"""The predictor worker's wire format (``predictors.serving`` ↔ ``gateway.serve.predictor_client``).

This module owns the bytes between the two: frames, the hello's verdict, requests and the
binary replies.

Wire format: every frame is a 4-byte big-endian length and a body.

* worker → client, once when ready: JSON ``{"type": "hello", "version", "profiles",
  "fingerprint", "embedder", "embed_dim", "batching", "device", "pid", "verdict"}``
  (``verdict``: the artifact's cascade verdict weights, or null);
* client → worker, one per prompt: JSON ``{"id": int, "text": str, "deadline": float}``
  (``deadline`` on ``time.monotonic()``, the system-wide CLOCK_MONOTONIC on Linux: an item
  still queued past it is answered ``expired`` without being scored — its caller has
  already given up, and skipping it keeps an overloaded worker from working on the past);
* worker → client, one per scored chunk: a reply (:func:`encode_reply`), stamped with the
  time it was sent, so the client judges the deadline by when the worker answered and not by
  when a busy event loop got around to reading the answer.

Pure: no I/O.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from predictors.service import Prediction, output_ratios
from predictors.verdict import VerdictModel

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


def verdict_of(predictor: Any) -> dict[str, Any] | None:
    """The artifact's cascade verdict model for the hello (``{"w": [...], "b": float}``), so
    the gateway can judge answers without a round trip; None when it has none."""
    model = getattr(predictor, "model", None)
    verdict = VerdictModel.from_arrays(model.arrays) if model is not None else None
    if verdict is None:
        return None
    return {"w": [float(v) for v in verdict.weights], "b": verdict.bias}


def verdict_from_hello(hello: dict[str, Any]) -> VerdictModel | None:
    """The verdict model a worker's hello carries (:func:`verdict_of`), or None."""
    v = hello.get("verdict")
    if not v:
        return None
    arrays = {"verdict_w": np.asarray(v["w"], np.float32), "verdict_b": np.array([v["b"]])}
    try:  # a worker of another version (other features): no verdict rather than a wrong one
        return VerdictModel.from_arrays(arrays)
    except ValueError:
        return None


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
    sent: float = 0.0  # time.monotonic() when the worker answered (set when encoded)
    #: (len(ids), n_profiles) float32 answer-length ratios (NaN: unknown); None: none at all
    ratios: np.ndarray | None = None

    def prediction(self, i: int, profiles: Sequence[str]) -> Prediction:
        """Row ``i`` as the in-process predictor would have returned it."""
        ps = MappingProxyType(dict(zip(profiles, self.probs[i].tolist(), strict=True)))
        emb = self.embeddings[i].copy() if self.embeddings.shape[1] else None
        rs = output_ratios(profiles, self.ratios[i]) if self.ratios is not None else {}
        return Prediction(float(self.complexity[i]), ps, emb, MappingProxyType(rs))


def encode_reply(reply: Reply) -> bytes:
    head = json.dumps(
        {
            "ids": reply.ids,
            "failed": {str(k): v for k, v in reply.failed.items()},
            "shape": list(reply.probs.shape),
            "dim": int(reply.embeddings.shape[1]) if reply.embeddings.ndim == 2 else 0,
            "sent": reply.sent or time.monotonic(),
            "ratios": reply.ratios is not None,
        }
    ).encode()
    parts = [reply.probs, reply.complexity, reply.embeddings]
    if reply.ratios is not None:
        parts.append(reply.ratios)
    arrays = b"".join(np.ascontiguousarray(a, dtype=np.float32).tobytes() for a in parts)
    return frame(HEADER.pack(len(head)) + head + arrays)


def decode_reply(body: bytes) -> Reply:
    (n,) = HEADER.unpack_from(body, 0)
    head = json.loads(body[HEADER.size : HEADER.size + n])
    rows, cols = head["shape"]
    dim = head["dim"]
    data = np.frombuffer(body, dtype=np.float32, offset=HEADER.size + n)
    probs = data[: rows * cols].reshape(rows, cols)
    complexity = data[rows * cols : rows * cols + rows]
    end = rows * cols + rows + rows * dim
    embeddings = data[rows * cols + rows : end].reshape(rows, dim)
    ratios = data[end : end + rows * cols].reshape(rows, cols) if head.get("ratios") else None
    failed = {int(k): str(v) for k, v in head["failed"].items()}
    sent = float(head.get("sent", 0.0))
    return Reply(list(head["ids"]), probs, complexity, embeddings, failed, sent, ratios)
