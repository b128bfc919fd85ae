"""Vectors for many prompts through the on-disk embedding cache, for offline work (backtests,
refits): the encoder (seconds to load on 2 cores) is only built when some prompt is not in the
cache."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from predictors.embedding_cache import embed_cached

if TYPE_CHECKING:
    from predictors.embedding import Embedder
    from predictors.service import Predictor


class LazyEmbedder:
    """Stands in for ``predictors.embedding.Embedder`` in ``embed_cached``: the predictor's
    encoder is only built if ``encode`` is called, that is on a cache miss."""

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor
        self.fingerprint = predictor.embedder_config.fingerprint()

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self._predictor.embedder.encode(list(texts), batch_size=batch_size)


def embed_prompts(
    predictor: Predictor, prompts: Sequence[str], cache_dir: str | Path | None = None
) -> np.ndarray:
    """``predictor``'s vectors for ``prompts``, through the on-disk embedding cache under
    ``cache_dir`` (the cache root; default ``~/.cache/tollgate``)."""
    lazy = cast("Embedder", LazyEmbedder(predictor))
    return embed_cached(lazy, list(prompts), cache_dir=cache_dir)
