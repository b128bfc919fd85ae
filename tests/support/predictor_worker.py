"""A ``predictors.serving`` worker around a stub model (no weights), for the client's tests.

Run as ``python -m tests.support.predictor_worker [--delay-ms N] [--log FILE] [--batching]``.
The real :class:`predictors.serving.Worker` loop and wire format serve a model whose
P(success) is a function of the text (``len(text) % 10 / 10`` for profile ``cheap``, 0.9 for
``premium``); text ``boom`` raises in the model, text ``die`` ends the process, and text
``slow:<ms>`` sleeps that long. Each encoder pass is appended to ``--log`` as ``pid<TAB>texts``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from types import MappingProxyType

import numpy as np

from predictors.embedding import EmbedderConfig
from predictors.service import Prediction
from predictors.serving import Worker


def p_cheap(text: str) -> float:
    return (len(text) % 10) / 10


class _Embedder:
    """Encodes a text as a vector whose first entry is its length; logs every pass."""

    def __init__(self, batching: bool, delay_s: float, log: str | None) -> None:
        self.batch_independent = batching
        self.delay_s = delay_s
        self.log = log

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{os.getpid()}\t{'|'.join(texts)}\n")
        time.sleep(self.delay_s)
        for t in texts:
            if t == "boom":
                raise RuntimeError("model exploded")
            if t == "die":
                os._exit(3)
            if t.startswith("slow:"):
                time.sleep(float(t.split(":")[1]) / 1000)
        x = np.full((len(texts), 384), 1 / np.sqrt(384), dtype=np.float32)
        x[:, 0] = [len(t) for t in texts]
        return x


class StubModel:
    version = "stub-predictor-1"
    profiles = ["cheap", "premium"]
    embedder_config = EmbedderConfig()

    def __init__(self, delay_s: float, log: str | None, batching: bool) -> None:
        self.embedder = _Embedder(batching, delay_s, log)

    def predict_embeddings(self, x: np.ndarray) -> list[Prediction]:
        return [
            Prediction(
                0.5,
                MappingProxyType({"cheap": (int(row[0]) % 10) / 10, "premium": 0.9}),
                row,
            )
            for row in x
        ]

    def predict_batch(self, texts: Sequence[str]) -> list[Prediction]:
        return self.predict_embeddings(self.embedder.encode(texts))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--log")
    p.add_argument("--batching", action="store_true")
    args = p.parse_args()
    wfd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    model = StubModel(args.delay_ms / 1000, args.log, args.batching)
    worker = Worker(model, sys.stdin.fileno(), wfd)
    worker.hello("cpu")
    worker.serve_forever()


if __name__ == "__main__":
    main()
