"""The predictor of an offline analysis: the one the config deploys, and its view of many
prompts as the policy engine's :class:`PredictionFacts` (vectors come through the on-disk
embedding cache)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import Config
from policies import PredictionFacts

if TYPE_CHECKING:
    import numpy as np

    from predictors.service import Prediction, Predictor


def predict_prompts(
    predictor: Predictor, prompts: Sequence[str], cache_dir: str | Path | None = None
) -> list[PredictionFacts]:
    """Predictions for many prompts, through the on-disk embedding cache (root ``cache_dir``)."""
    from predictors.prompt_vectors import embed_prompts

    return predict_vectors(predictor, embed_prompts(predictor, prompts, cache_dir))


def predict_vectors(predictor: Predictor, x: np.ndarray) -> list[PredictionFacts]:
    """The policy engine's view of the predictor's output for query vectors ``x``."""
    return [prediction_facts(p, predictor.version) for p in predictor.predict_embeddings(x)]


def prediction_facts(p: Prediction, version: str) -> PredictionFacts:
    """One prediction as the policy engine reads it."""
    return PredictionFacts(
        p_success=dict(p.p_success),
        predictor_version=version,
        complexity=float(p.complexity),
        output_ratio=dict(p.output_ratio),
    )


def config_predictor(cfg: Config) -> Predictor | None:
    """The predictor the config deploys (``None``: disabled)."""
    if not cfg.predictor.enabled:
        return None
    from predictors.service import load_artifact

    return load_artifact(cfg.predictor.artifact)
