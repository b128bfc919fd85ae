"""A static distillation of the bundled MiniLM: a prompt's vector without running the model.

This module owns the ``static`` embedder runtime. Each WordPiece token of all-MiniLM-L6-v2's
vocabulary gets one vector — the model's own sentence embedding of that token alone
(``[CLS] token [SEP]``, mean-pooled, fp32 ONNX encoder) — and a prompt's vector is the
weighted mean of its tokens' vectors (the same head + tail token window as the MiniLM
embedder), L2-normalised. Weights are SIF, ``a / (a + p(token))``, with token frequencies
counted once over the shipped training prompts (``artifacts/static_counts.npz``, part of the vector
space and of its fingerprint), so frequent function words count for little.

Why (``bench/embedding_choice.py``, this 2-core CPU): a decision costs a tokenizer call and
a few hundred multiply-adds — about a tenth of the MiniLM forward pass — while the routing
quality it buys stays close to MiniLM's (see ``docs/predictor.md``).

The table (30,522 x 384, float16, 23 MB) is built once per machine from the bundled weights
and cached next to the ONNX encoder, written atomically; vectors depend only on their own
text, so any batch gives the same vector.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from predictors.embedding import EMBED_DIM, MODEL_NAME, bundled_model_dir, clip_text

RECIPE = "minilm-static|cls-token-sep|meanpool-l2|onnx-fp32|f16|v1"
SIF_A = 1e-3
COUNTS_FILE = "static_counts.npz"


@dataclass(frozen=True)
class StaticConfig:
    """Everything that determines a static vector (the token window and the weighting)."""

    max_tokens: int = 48
    head_tokens: int = 18
    weighting: str = "sif"  # "sif" or "mean"
    runtime: str = "static"

    def __post_init__(self) -> None:
        if self.weighting not in ("sif", "mean"):
            raise ValueError(f"unknown static weighting {self.weighting!r}: sif or mean")

    def fingerprint(self) -> str:
        weights = f"sif{SIF_A:g}-{counts_digest()}" if self.weighting == "sif" else "mean"
        return (
            f"{MODEL_NAME}|tok{self.max_tokens}|head{self.head_tokens}|clip10-12|"
            f"static-{hashlib.sha256(RECIPE.encode()).hexdigest()[:8]}-{weights}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StaticConfig:
        return cls(int(d["max_tokens"]), int(d["head_tokens"]), str(d.get("weighting", "sif")))


def _counts_path() -> Path:
    return Path(str(resources.files("predictors").joinpath("artifacts", COUNTS_FILE)))


@functools.cache
def counts_digest() -> str:
    # cached: part of the fingerprint, which a predictor checks on every batch it embeds
    return hashlib.sha256(_counts_path().read_bytes()).hexdigest()[:8]


def sif_weights(vocab_size: int) -> np.ndarray:
    """``a / (a + p(token))`` from the shipped token counts (unseen tokens weigh 1)."""
    with np.load(_counts_path(), allow_pickle=False) as z:
        ids, counts = z["ids"], z["counts"]
    p = np.zeros(vocab_size, dtype=np.float64)
    p[ids] = counts / counts.sum()
    return (SIF_A / (SIF_A + p)).astype(np.float32)


def write_counts(token_ids: Sequence[Sequence[int]], path: Path) -> None:
    """Count tokens over a corpus (lists of ids) into the ``static_counts.npz`` format."""
    flat = np.concatenate([np.asarray(ids, dtype=np.int64) for ids in token_ids if len(ids)])
    ids, counts = np.unique(flat, return_counts=True)
    np.savez_compressed(path, ids=ids.astype(np.int32), counts=counts.astype(np.int64))


def table_path(model_dir: Path, cache_dir: str | Path | None = None) -> Path:
    """The cached token table for ``model_dir``, built first if missing (once per machine;
    ``cache_dir``: the cache root, ``predictors.local_cache``)."""
    from predictors.onnx_encoder import encoder_path

    fp32 = encoder_path(model_dir, int8=False, cache_dir=cache_dir)
    digest = hashlib.sha256((RECIPE + fp32.name).encode()).hexdigest()[:16]
    path = fp32.parent / f"minilm-static-{digest}.npy"
    if not path.exists():
        _build_table(model_dir, path, cache_dir)
    return path


def _build_table(
    model_dir: Path, out: Path, cache_dir: str | Path | None, batch: int = 512
) -> None:
    from transformers import AutoTokenizer

    from predictors.onnx_encoder import OnnxEncoder

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    encoder = OnnxEncoder(model_dir, int8=False, threads=os.cpu_count() or 1, cache_dir=cache_dir)
    cls, sep = int(tokenizer.cls_token_id), int(tokenizer.sep_token_id)
    size = len(tokenizer)
    table = np.zeros((size, EMBED_DIM), dtype=np.float32)
    for start in range(0, size, batch):
        n = min(batch, size - start)
        ids = np.stack(
            [np.full(n, cls), np.arange(start, start + n), np.full(n, sep)], axis=1
        ).astype(np.int64)
        table[start : start + n] = encoder(ids, np.ones_like(ids))
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".npy", delete=False) as f:
        np.save(f, table.astype(np.float16))
    os.replace(f.name, out)  # atomic: a concurrent reader sees no file or the whole file


class StaticEmbedder:
    """Token-table embeddings with the MiniLM embedder's interface (``encode``, ``config``)."""

    device = "cpu"
    batch_independent = True

    def __init__(
        self,
        config: StaticConfig | None = None,
        model_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        table: np.ndarray | None = None,
    ) -> None:
        """``table``: use these token vectors instead of the machine's cached distillation
        (tests; the fingerprint then does not describe the vectors)."""
        from transformers import AutoTokenizer

        self.config = config or StaticConfig()
        self.cache_dir = cache_dir
        path = Path(model_dir) if model_dir is not None else bundled_model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self._fast = copy.deepcopy(self.tokenizer.backend_tokenizer)
        self._fast.no_truncation()
        self._fast.no_padding()
        if table is None:
            table = np.load(table_path(path, cache_dir))
        self.table = np.asarray(table, dtype=np.float32)
        size = self.table.shape[0]
        self.weights = (
            sif_weights(size) if self.config.weighting == "sif" else np.ones(size, np.float32)
        )
        self._weighted = self.table * self.weights[:, None]

    @property
    def fingerprint(self) -> str:
        return self.config.fingerprint()

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        budget = self.config.max_tokens - 2
        head = min(self.config.head_tokens, budget)
        clipped = [clip_text(t, self.config) for t in texts]  # type: ignore[arg-type]
        # the Rust tokenizer itself: the transformers wrapper around it cost ~0.4 ms a text,
        # more than the rest of a static decision (same ids: no special tokens, no truncation);
        # ``encode_batch_fast`` (tokenizers >= 0.21): the same ids without the character
        # offsets, ~15 % less
        encode = getattr(self._fast, "encode_batch_fast", self._fast.encode_batch)
        out = []
        for enc in encode(clipped, add_special_tokens=False):
            ids = enc.ids
            if len(ids) > budget:
                ids = ids[:head] + ids[len(ids) - (budget - head) :]
            out.append(list(ids))
        return out

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-norm float32 vectors, shape ``(len(texts), 384)`` (``batch_size`` is unused)."""
        result = np.zeros((len(texts), EMBED_DIM), dtype=np.float32)
        all_ids = self._ids(texts)
        lengths = np.array([len(ids) for ids in all_ids])
        if not lengths.any():
            return result
        rows = np.nonzero(lengths)[0]
        flat = np.fromiter((t for ids in all_ids for t in ids), dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths[rows])[:-1]])
        sums = np.add.reduceat(self._weighted[flat], starts, axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        result[rows] = sums / np.where(norms > 0, norms, 1.0)
        return result
