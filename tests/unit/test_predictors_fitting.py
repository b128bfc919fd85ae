"""predictors.fitting on small arrays: label counting and the label matrix, the recorded split
of an artifact, and fine-tuning a profile on labels that a synthetic ability explains."""

from __future__ import annotations

import math

import numpy as np

from predictors.fitting import label_counts, label_matrix, recorded_split_seed, trained_on


def test_label_counts_and_matrix() -> None:
    labels = [{"a": 1.0}, {"a": 0.0, "b": 1.0}, {}, {"c": 1.0}]
    assert label_counts(labels) == {"a": 2, "b": 1, "c": 1}
    y = label_matrix(labels, ["a", "b"])
    assert y.shape == (4, 2) and y.dtype == np.float32
    assert y[0, 0] == 1.0 and y[1, 0] == 0.0 and y[1, 1] == 1.0
    assert math.isnan(y[0, 1]) and np.isnan(y[2]).all() and np.isnan(y[3]).all()  # c: no column


def test_recorded_split_seed() -> None:
    meta = {
        "metrics_holdout": {"split": "seeded 70/30 by query, seed 3; 70 train / 30 test"},
        "training_data": {"datasets": [{"name": "routerbench"}, {"name": "mmlu-pro"}]},
    }
    assert recorded_split_seed(meta) == 3 and trained_on(meta) == {"routerbench", "mmlu-pro"}
    assert recorded_split_seed({}) is None and trained_on({}) == set()
    assert recorded_split_seed({"metrics_holdout": {"split": "in-sample"}}) is None
