"""The predictor's view of many prompts for a replay: vectors through the on-disk embedding
cache (the encoder is only built if some prompt is not cached), and predictions as the policy
engine's :class:`PredictionFacts`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from policies import PredictionFacts

if TYPE_CHECKING:
    import numpy as np

    from predictors.service import Predictor


class LazyEmbedder:
    """Stands in for ``predictors.embedding.Embedder`` in ``embed_cached``: the model (torch,
    seconds to load on 2 cores) is only built if some prompt is not in the embedding cache."""

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor
        self.fingerprint = predictor.embedder_config.fingerprint()

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self._predictor.embedder.encode(list(texts), batch_size=batch_size)


def embed_prompts(predictor: Predictor, prompts: Sequence[str]) -> np.ndarray:
    """The predictor's vectors for many prompts, through the on-disk embedding cache."""
    from typing import cast

    from predictors.embedding import Embedder
    from predictors.embedding_cache import embed_cached

    return embed_cached(cast(Embedder, LazyEmbedder(predictor)), list(prompts))


def predict_prompts(predictor: Predictor, prompts: Sequence[str]) -> list[PredictionFacts]:
    """Predictions for many prompts, through the on-disk embedding cache."""
    return predict_vectors(predictor, embed_prompts(predictor, prompts))


def predict_vectors(predictor: Predictor, x: np.ndarray) -> list[PredictionFacts]:
    """The policy engine's view of the predictor's output for query vectors ``x``."""
    return [
        PredictionFacts(
            p_success=dict(p.p_success),
            predictor_version=predictor.version,
            complexity=float(p.complexity),
        )
        for p in predictor.predict_embeddings(x)
    ]
