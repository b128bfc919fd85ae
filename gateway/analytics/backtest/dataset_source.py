"""Where a dataset replay's queries come from: the datasets (``../shared/data``), a seeded
sample of them, which datasets a predictor artifact was trained on and the split its held-out
metrics were measured on, and a predictor refitted on that split's training part."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.analytics.backtest.predictions import LazyEmbedder

if TYPE_CHECKING:
    from predictors.datasets import OutcomeTable
    from predictors.service import Predictor


def load_dataset(spec: str, data_dir: str | Path | None = None) -> OutcomeTable:
    """``routerbench``, ``routerbench:<file>[,<file>]``, ``mmlu-pro``, a data directory laid out
    like ``../shared/data``, or a RouterBench-format CSV file inside a ``routerbench/`` folder."""
    from predictors.datasets import read_mmlu_pro, read_routerbench

    name, _, files = spec.partition(":")
    if name == "routerbench":
        return read_routerbench(data_dir, files.split(",")) if files else read_routerbench(data_dir)
    if name == "mmlu-pro":
        return read_mmlu_pro(data_dir)
    path = Path(spec)
    if path.is_file() and path.suffix == ".csv" and path.parent.name == "routerbench":
        return read_routerbench(path.parent.parent, [path.stem])
    if path.is_dir():
        if (path / "routerbench").is_dir():
            return read_routerbench(path)
        if (path / "mmlu-pro").is_dir():
            return read_mmlu_pro(path)
    raise ValueError(
        f"unknown dataset {spec!r}: use routerbench, routerbench:<file>, mmlu-pro, a data "
        "directory (with routerbench/ or mmlu-pro/) or a routerbench/<file>.csv path"
    )


def sample_ids(ids: Sequence[str], limit: int | None, seed: int = 0) -> list[str]:
    """A seeded random sample of ``limit`` ids (all of them, in order, without a limit)."""
    if limit is None or limit >= len(ids):
        return list(ids)
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(ids))[:limit]
    return [ids[i] for i in sorted(order)]


def trained_on(meta: Mapping[str, Any]) -> set[str]:
    """Names of the datasets an artifact's shipped weights were trained on."""
    data = meta.get("training_data") or {}
    return {str(d.get("name")) for d in data.get("datasets") or [] if isinstance(d, dict)}


_SPLIT_SEED = re.compile(r"seeded 70/30 by query, seed (\d+)")


def recorded_split_seed(meta: Mapping[str, Any]) -> int | None:
    """The seed of the 70/30 split an artifact's held-out metrics were measured on, if any."""
    split = (meta.get("metrics_holdout") or {}).get("split")
    match = _SPLIT_SEED.match(split) if isinstance(split, str) else None
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Holdout:
    """A predictor refitted on the 70 % training part of an artifact's recorded split, and the
    30 % of query keys (``dataset:id``) it never saw."""

    predictor: Predictor
    test_keys: frozenset[str]
    seed: int
    train_rows: int


def holdout_predictor(predictor: Predictor, data_dir: str | Path | None = None) -> Holdout:
    """Refit ``predictor``'s recipe (its recorded datasets, train config and split seed) on the
    training part only, as ``predictors.training.holdout_report`` did for the artifact's
    held-out metrics. Embeddings come from the cache (all training prompts are needed)."""
    from typing import cast

    from predictors.datasets import read_dataset, split_ids
    from predictors.embedding import Embedder
    from predictors.embedding_cache import embed_cached
    from predictors.outcome_model import TrainConfig, fit_outcome_model
    from predictors.service import Predictor as PredictorCls
    from predictors.training import join_tables

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
    x = embed_cached(cast(Embedder, LazyEmbedder(predictor)), prompts)
    train, test = split_ids(keys, seed)
    index = {k: i for i, k in enumerate(keys)}
    rows = [index[k] for k in train]
    model = fit_outcome_model(x[rows], y[rows], profiles, TrainConfig(**train_config))
    refit_meta = {**meta, "version": f"{predictor.version}-holdout{seed}"}
    return Holdout(PredictorCls(model, refit_meta), frozenset(test), seed, len(rows))
