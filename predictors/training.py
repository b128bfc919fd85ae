"""Training and evaluation recipes: datasets → embeddings → outcome model → artifact.

This module owns the reproducible recipe behind ``tollgate predictor train`` and ``evaluate``:
which datasets are joined (one profile per dataset model, NaN where a dataset does not cover
a model), the held-out calibration report stored in the metadata, and the final fit on all
rows that becomes the shipped weights. Training is deterministic (fixed seeds, single
process), so retraining on the same data reproduces the same content hash.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from predictors.answers import read_answers
from predictors.artifact import write_artifact
from predictors.calibration import (
    brier_score,
    expected_calibration_error,
    log_loss,
    reliability_table,
    roc_auc,
)
from predictors.datasets import OutcomeTable, read_dataset, split_ids
from predictors.embedding import MODEL_NAME, MODEL_PACKAGE, Embedder, EmbedderConfig
from predictors.embedding_cache import embed_cached
from predictors.outcome_model import TrainConfig, fit_outcome_model
from predictors.static_embedding import StaticEmbedder
from predictors.verdict import FEATURES, VerdictModel, fit_verdict, pair_rows

DEFAULT_DATASETS = ("routerbench", "mmlu-pro")  # alpacaeval's licence forbids shipping


def join_tables(tables: Sequence[OutcomeTable]) -> tuple[list[str], list[str], np.ndarray]:
    """Stack datasets: (row keys ``dataset:id``, prompts, outcomes (n, all models))."""
    models: list[str] = []
    for t in tables:
        clash = set(models) & set(t.models)
        if clash:
            raise ValueError(f"model names appear in two datasets: {sorted(clash)}")
        models += t.models
    keys, prompts, blocks = [], [], []
    for t in tables:
        block = pd.DataFrame(np.nan, index=t.outcome.index, columns=pd.Index(models))
        block[t.models] = t.outcome.to_numpy()
        blocks.append(block.to_numpy(dtype=np.float32))
        keys += [f"{t.name}:{i}" for i in t.ids]
        prompts += list(t.prompts)
    return keys, prompts, np.concatenate(blocks, axis=0) if blocks else np.zeros((0, 0))


def answer_lengths(
    tables: Sequence[OutcomeTable], data_dir: str | Path | None = None
) -> np.ndarray:
    """Output tokens (``ceil(chars / 4)``, the datasets' convention) of each recorded answer,
    rows and columns as :func:`join_tables` stacks them; NaN where a dataset records no
    answer text (AlpacaEval) or a model did not answer."""
    blocks = []
    total = sum(len(t.models) for t in tables)
    start = 0
    for t in tables:
        block = np.full((len(t), total), np.nan, dtype=np.float32)
        answers = read_answers(t.name, t.ids, t.models, data_dir)
        if answers is not None:
            block[:, start : start + len(t.models)] = np.ceil(answers.chars / 4.0)
        start += len(t.models)
        blocks.append(block)
    return np.concatenate(blocks, axis=0) if blocks else np.zeros((0, 0), dtype=np.float32)


def calibration_report(y: np.ndarray, p: np.ndarray, profiles: Sequence[str]) -> dict[str, Any]:
    """Brier, log loss, ECE, AUC overall and per profile, plus a 10-bin reliability table."""
    per = {}
    for j, name in enumerate(profiles):
        if np.isnan(y[:, j]).all():
            continue
        per[name] = {
            "brier": round(brier_score(y[:, j], p[:, j]), 5),
            "auc": round(roc_auc(y[:, j], p[:, j]), 5),
            "ece": round(expected_calibration_error(y[:, j], p[:, j]), 5),
        }
    return {
        "brier": round(brier_score(y, p), 5),
        "log_loss": round(log_loss(y, p), 5),
        "ece": round(expected_calibration_error(y, p), 5),
        "mean_auc": round(float(np.nanmean([v["auc"] for v in per.values()])), 5),
        "reliability": [
            {
                "bin": f"{b.lo:.1f}-{b.hi:.1f}",
                "n": b.count,
                "mean_p": None if b.count == 0 else round(b.mean_p, 4),
                "observed": None if b.count == 0 else round(b.observed, 4),
            }
            for b in reliability_table(y, p)
        ],
        "per_profile": per,
    }


def holdout_report(
    x: np.ndarray,
    y: np.ndarray,
    keys: Sequence[str],
    profiles: Sequence[str],
    cfg: TrainConfig,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit on a seeded 70 % of the queries and report calibration on the other 30 %."""
    tr, te = split_ids(list(keys), seed)
    index = {k: i for i, k in enumerate(keys)}
    itr = np.array([index[k] for k in tr])
    ite = np.array([index[k] for k in te])
    model = fit_outcome_model(x[itr], y[itr], profiles, cfg)
    report = calibration_report(y[ite], model.predict_proba(x[ite]), profiles)
    report["split"] = f"seeded 70/30 by query, seed {seed}; {len(itr)} train / {len(ite)} test"
    return report


def train(
    out_dir: str | Path,
    datasets: Sequence[str] = DEFAULT_DATASETS,
    data_dir: str | Path | None = None,
    cfg: TrainConfig | None = None,
    embedder: Embedder | StaticEmbedder | None = None,
    name: str = "tollgate-predictor",
) -> dict[str, Any]:
    """Train on ``datasets`` and write an artifact to ``out_dir``; returns its metadata."""
    cfg = cfg or TrainConfig()
    tables = [read_dataset(d, data_dir) for d in datasets]
    keys, prompts, y = join_tables(tables)
    profiles = [m for t in tables for m in t.models]
    embedder = embedder or Embedder(EmbedderConfig())
    x = embed_cached(embedder, prompts)
    report = holdout_report(x, y, keys, profiles, cfg)
    model = fit_outcome_model(x, y, profiles, cfg, answer_lengths(tables, data_dir))
    assert model.oof_proba is not None
    verdict, verdict_meta = fit_cascade_verdict(tables, model.oof_proba, profiles, data_dir)
    profile_info = {}
    for t in tables:
        for m in t.models:
            cost = t.cost[m].mean()
            profile_info[m] = {
                "dataset": t.name,
                "labelled_queries": int(t.outcome[m].notna().sum()),
                "base_rate": round(float(t.outcome[m].mean()), 5),
                "mean_cost_usd": None if np.isnan(cost) else float(f"{cost:.6g}"),
            }
    meta: dict[str, Any] = {
        "name": name,
        "profiles": profiles,
        "profile_info": profile_info,
        "embedder": {
            **embedder.config.to_dict(),
            "fingerprint": embedder.fingerprint,
            "model": MODEL_NAME,
            "package": MODEL_PACKAGE,
        },
        "features": "mean-pooled, L2-normalised all-MiniLM-L6-v2 embedding (384-d) of the "
        "prompt, head+tail truncated to the embedder's token budget",
        "model": {
            "family": "IRT-style factor model: logit = a_profile + u_profile . h(x), "
            "per-profile Platt calibration on out-of-fold logits; blended with the mean "
            "outcome of the knn_k most cosine-similar training queries (int8 memory); "
            "per-profile isotonic map of the out-of-fold blend (calib_map); the memory's "
            "recorded answer lengths (knn_len, len_mean) give each query's expected answer "
            "length relative to the profile's mean",
            "train_config": asdict(cfg),
        },
        "complexity": "1 - mean P(success) over the trained profiles",
        "training_data": {
            "datasets": [t.describe() for t in tables],
            "rows": len(keys),
            "labels": int((~np.isnan(y)).sum()),
            "source": "../shared/data (see its README for provenance and licences)",
        },
        "metrics_holdout": report,
        "verdict": verdict_meta,
    }
    arrays = dict(model.arrays)
    if verdict is not None:
        arrays.update(verdict.to_arrays())
    return write_artifact(out_dir, arrays, meta)


#: A cascade's cheap tiers cost under this share of its escalation tier.
CHEAP_SHARE = 0.35
CHEAP_MODELS = 5


def fit_cascade_verdict(
    tables: Sequence[OutcomeTable],
    oof: np.ndarray,
    profiles: Sequence[str],
    data_dir: str | Path | None = None,
) -> tuple[VerdictModel | None, dict[str, Any]]:
    """The cascade's verdict (``predictors.verdict``), pooled over the datasets with recorded
    closed-form answers: per dataset the escalation tier is its most accurate model, the first
    and check tiers every ordered pair (and "no check") of its ``CHEAP_MODELS`` most accurate
    models costing under ``CHEAP_SHARE`` of it. ``oof``: the predictor's out-of-fold
    P(success) of the joined rows (tables in order)."""
    xs, ys, used = [], [], []
    start = 0
    col = {p: j for j, p in enumerate(profiles)}
    for t in tables:
        rows = slice(start, start + len(t))
        start += len(t)
        answers = read_answers(t.name, t.ids, t.models, data_dir)
        if answers is None:
            continue
        y = t.outcome.to_numpy(dtype=float)
        acc = np.nanmean(y, axis=0)
        cost = t.cost.mean().to_numpy(dtype=float)
        strong = int(np.nanargmax(acc))
        cheap = [j for j in range(len(t.models)) if cost[j] < CHEAP_SHARE * cost[strong]]
        cheap = sorted(cheap, key=lambda j: -acc[j])[:CHEAP_MODELS]
        pairs: list[tuple[int, int | None]] = [(a, None) for a in cheap]
        pairs += list(itertools.permutations(cheap, 2))
        p = oof[rows][:, [col[m] for m in t.models]]
        x, label = pair_rows(p, y, answers.choice, answers.chars, pairs, strong)
        xs.append(x)
        ys.append(label)
        used.append(
            {
                "dataset": t.name,
                "escalation_tier": t.models[strong],
                "cheap_tiers": [t.models[j] for j in cheap],
                "rows": len(label),
            }
        )
    if not xs:
        return None, {"fitted": False}
    verdict = fit_verdict(np.concatenate(xs), np.concatenate(ys))
    return verdict, {
        "fitted": True,
        "target": "P(keeping the first (cheap) answer loses nothing against the escalation "
        "tier): outcome(first) >= outcome(escalation tier)",
        "features": list(FEATURES),
        "weights": [round(float(w), 5) for w in verdict.weights],
        "bias": round(verdict.bias, 5),
        "training": used,
    }
