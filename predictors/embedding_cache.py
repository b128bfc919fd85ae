"""On-disk cache of dataset embeddings, keyed by embedder fingerprint and text hash.

This module owns not embedding the same dataset twice: training and the routing benchmark
embed ~10k prompts, which takes minutes on 2 cores. Files are plain ``.npz`` (read with
``allow_pickle=False``) under ``<cache root>/embeddings`` (``predictors.local_cache``; the
embedder's ``cache_dir`` unless one is given; default ``~/.cache/tollgate/embeddings``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from predictors.embedding import EMBED_DIM, Embedder, text_hash
from predictors.local_cache import cache_root
from predictors.static_embedding import StaticEmbedder


def cache_dir(root: str | Path | None = None) -> Path:
    return cache_root(root) / "embeddings"


def _path(fingerprint: str, batch_size: int, root: str | Path | None) -> Path:
    key = f"{fingerprint}|batch{batch_size}"
    return cache_dir(root) / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".npz")


def _load(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as z:
        keys = z["keys"]
        vecs = z["vectors"]
    return {str(k): v for k, v in zip(keys, vecs, strict=True)}


def embed_cached(
    embedder: Embedder | StaticEmbedder,
    texts: Sequence[str],
    batch_size: int = 1,
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """Embeddings of ``texts``; only the texts not cached for this embedder are computed.

    ``batch_size`` defaults to 1 because int8 dynamic quantization scales activations per
    batch: a vector then depends only on its own text (as for a single query at serving time),
    so training data, cache state and retraining are reproducible to the bit. ``cache_dir`` is
    the cache root (default: the embedder's).
    """
    root = cache_dir if cache_dir is not None else getattr(embedder, "cache_dir", None)
    path = _path(embedder.fingerprint, batch_size, root)
    known = _load(path)
    hashes = [text_hash(t) for t in texts]
    missing = sorted({h: t for h, t in zip(hashes, texts, strict=True) if h not in known}.items())
    if missing:
        vecs = embedder.encode([t for _, t in missing], batch_size=batch_size)
        for (h, _), v in zip(missing, vecs, strict=True):
            known[h] = v
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            keys=np.array(list(known.keys()), dtype="<U64"),
            vectors=np.stack(list(known.values())).astype(np.float32),
        )
        tmp.replace(path)
    if not hashes:
        return np.zeros((0, EMBED_DIM), dtype=np.float32)
    return np.stack([known[h] for h in hashes]).astype(np.float32)
