"""Fitting a predictor on new labels: fine-tuning per-profile abilities on logged outcomes,
refitting the shipped recipe with extra rows, and refitting an artifact's recipe on the
training part of its recorded split (a predictor for held-out evaluations).

Inputs are arrays: query vectors ``x`` (n, d) and, per query, a label per profile
(``{profile: 0.0 | 1.0}``, missing = not observed). Where the labels came from (the gateway's
store, a dataset) is the caller's business.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from predictors.prompt_vectors import embed_prompts

if TYPE_CHECKING:
    from predictors.outcome_model import OutcomeModel
    from predictors.service import Predictor

MIN_LABELS = 100
Labels = Sequence[Mapping[str, float]]


def label_counts(labels: Labels) -> Counter[str]:
    """Labels per profile."""
    return Counter(p for row in labels for p in row)


def label_matrix(labels: Labels, profiles: Sequence[str]) -> np.ndarray:
    """(n, profiles) float32 matrix of the labels, NaN where a profile has none."""
    y = np.full((len(labels), len(profiles)), np.nan, dtype=np.float32)
    col = {p: j for j, p in enumerate(profiles)}
    for i, row in enumerate(labels):
        for p, v in row.items():
            if p in col:
                y[i, col[p]] = v
    return y


def fine_tune(
    base: Predictor, x: np.ndarray, labels: Labels, min_labels: int = MIN_LABELS
) -> tuple[Predictor, list[str]]:
    """Keep ``base``'s query features; fit a profile for each name with ``min_labels`` labels
    of both classes (``fit_new_profile``), and add the labelled queries to the
    nearest-neighbour memory. Returns the candidate and the profiles it learned."""
    from predictors.memory import quantize
    from predictors.outcome_model import OutcomeModel, fit_new_profile
    from predictors.service import Predictor as PredictorCls

    counts = label_counts(labels)
    learned = sorted(p for p, n in counts.items() if n >= min_labels)
    model: OutcomeModel = base.model
    for p in learned:
        idx = [i for i, row in enumerate(labels) if p in row]
        y = np.array([labels[i][p] for i in idx], dtype=float)
        if y.min() == y.max():  # one class only: nothing to discriminate
            continue
        a, u = fit_new_profile(model, x[idx], y)
        model = model.with_profile(p, a, u)
    learned = [p for p in learned if p in model.profiles]
    if learned and "knn_x" in model.arrays:
        y_all = label_matrix(labels, model.profiles)
        keep = ~np.isnan(y_all).all(axis=1)
        arrays = dict(model.arrays)
        new_x = quantize(x[keep])
        arrays["knn_x"] = np.concatenate([arrays["knn_x"], new_x])
        arrays["knn_y"] = np.concatenate([arrays["knn_y"], y_all[keep].astype(np.float16)])
        if "knn_len" in arrays:  # a gateway's labels carry no answer lengths
            unknown = np.full((int(keep.sum()), arrays["knn_len"].shape[1]), np.nan, np.float16)
            arrays["knn_len"] = np.concatenate([arrays["knn_len"], unknown])
        model = OutcomeModel(list(model.profiles), arrays)
    return PredictorCls(model, base.meta, base._embedder), learned


def refit_with_shared_data(
    base: Predictor,
    x: np.ndarray,
    labels: Labels,
    data_dir: str | Path | None,
    min_labels: int = MIN_LABELS,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> tuple[Predictor, list[str]]:
    """``base``'s recipe refitted on its training datasets (``../shared/data``) plus the
    labelled rows; names with ``min_labels`` labels that ``base`` lacks become profiles.
    ``cache_dir``: the embedding cache's root (default ``~/.cache/tollgate``)."""
    from predictors.datasets import read_dataset
    from predictors.outcome_model import TrainConfig, fit_outcome_model
    from predictors.service import Predictor as PredictorCls
    from predictors.training import answer_lengths, join_tables

    counts = label_counts(labels)
    learned = sorted(p for p, n in counts.items() if n >= min_labels and p not in base.profiles)
    names = [str(d["name"]) for d in base.meta["training_data"]["datasets"]]
    tables = [read_dataset(n, data_dir) for n in names]
    _, prompts, y_shared = join_tables(tables)
    dataset_profiles = [m for t in tables for m in t.models]
    x_shared = embed_prompts(base, prompts, cache_dir)
    profiles = dataset_profiles + learned
    y_new = label_matrix(labels, profiles)
    keep = ~np.isnan(y_new).all(axis=1)
    x_new = x[keep]
    pad = np.full((len(y_shared), len(learned)), np.nan, dtype=np.float32)
    x_all = np.concatenate([x_shared, x_new]).astype(np.float32)
    y_all = np.concatenate([np.concatenate([y_shared, pad], axis=1), y_new[keep]])
    cfg = TrainConfig(**{**base.meta["model"]["train_config"], "seed": seed})
    lengths = np.concatenate([answer_lengths(tables, data_dir), pad], axis=1)
    lengths = np.concatenate([lengths, np.full((int(keep.sum()), len(profiles)), np.nan)])
    model: OutcomeModel = fit_outcome_model(x_all, y_all, profiles, cfg, lengths)
    return PredictorCls(with_verdict(model, base.model), base.meta, base._embedder), learned


def with_verdict(model: OutcomeModel, base: OutcomeModel) -> OutcomeModel:
    """``model`` with ``base``'s cascade verdict (a refit learns P(success) only; without the
    verdict every cascade served by it would escalate)."""
    from predictors.outcome_model import OutcomeModel

    verdict = {k: v for k, v in base.arrays.items() if k.startswith("verdict_")}
    return OutcomeModel(list(model.profiles), {**model.arrays, **verdict}) if verdict else model


_SPLIT_SEED = re.compile(r"seeded 70/30 by query, seed (\d+)")


def recorded_split_seed(meta: Mapping[str, Any]) -> int | None:
    """The seed of the 70/30 split an artifact's held-out metrics were measured on, if any."""
    split = (meta.get("metrics_holdout") or {}).get("split")
    match = _SPLIT_SEED.match(split) if isinstance(split, str) else None
    return int(match.group(1)) if match else None


def trained_on(meta: Mapping[str, Any]) -> set[str]:
    """Names of the datasets an artifact's shipped weights were trained on."""
    data = meta.get("training_data") or {}
    return {str(d.get("name")) for d in data.get("datasets") or [] if isinstance(d, dict)}


@dataclass(frozen=True)
class Holdout:
    """A predictor refitted on the 70 % training part of an artifact's recorded split, and the
    30 % of query keys (``dataset:id``) it never saw."""

    predictor: Predictor
    test_keys: frozenset[str]
    seed: int
    train_rows: int


def holdout_predictor(
    predictor: Predictor,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> Holdout:
    """Refit ``predictor``'s recipe (its recorded datasets, train config and split seed) on the
    training part only, as ``predictors.training.holdout_report`` did for the artifact's
    held-out metrics. Embeddings come from the cache (all training prompts are needed)."""
    from predictors.datasets import read_dataset, split_ids
    from predictors.outcome_model import TrainConfig, fit_outcome_model
    from predictors.service import Predictor as PredictorCls
    from predictors.training import answer_lengths, join_tables

    meta = predictor.meta
    seed = recorded_split_seed(meta)
    names = [str(d["name"]) for d in (meta.get("training_data") or {}).get("datasets") or []]
    train_config = (meta.get("model") or {}).get("train_config")
    if seed is None or not names or not isinstance(train_config, dict):
        raise ValueError(
            f"predictor {predictor.version} records no train/test split, datasets or train "
            "config: a held-out replay is not possible (the numbers would be in-sample)"
        )
    tables = [read_dataset(n, data_dir) for n in names]
    keys, prompts, y = join_tables(tables)
    profiles = [m for t in tables for m in t.models]
    x = embed_prompts(predictor, prompts, cache_dir)
    train, test = split_ids(keys, seed)
    index = {k: i for i, k in enumerate(keys)}
    rows = [index[k] for k in train]
    lengths = answer_lengths(tables, data_dir)[rows]
    model = fit_outcome_model(x[rows], y[rows], profiles, TrainConfig(**train_config), lengths)
    model = with_verdict(model, predictor.model)
    refit_meta = {**meta, "version": f"{predictor.version}-holdout{seed}"}
    return Holdout(PredictorCls(model, refit_meta), frozenset(test), seed, len(rows))
