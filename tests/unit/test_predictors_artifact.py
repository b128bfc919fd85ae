"""Artifact round trip, hash verification, and the shipped default artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from predictors.artifact import (
    DEFAULT_ARTIFACT_DIR,
    METADATA_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    read_artifact,
    write_artifact,
)
from predictors.outcome_model import RATIO_BOUND, OutcomeModel, TrainConfig, fit_outcome_model
from predictors.service import load_artifact

META = {"name": "t", "profiles": ["a", "b"], "embedder": {"max_tokens": 64}}


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "w": rng.normal(size=(3, 4)).astype(np.float32),
        "a": np.zeros(2, np.float32),
        "knn_x": np.array([[1, -127], [127, 0]], dtype=np.int8),
    }


def test_round_trip(tmp_path: Path) -> None:
    meta = write_artifact(tmp_path, _arrays(), META)
    arrays, meta2 = read_artifact(tmp_path)
    np.testing.assert_array_equal(arrays["w"], _arrays()["w"])
    assert arrays["knn_x"].dtype == np.int8  # the memory stays small
    np.testing.assert_array_equal(arrays["knn_x"], _arrays()["knn_x"])
    assert meta2["content_hash"] == meta["content_hash"]
    assert meta2["version"] == f"t-{meta['content_hash'][:12]}"


def test_same_content_same_version(tmp_path: Path) -> None:
    a = write_artifact(tmp_path / "a", _arrays(), META)
    b = write_artifact(tmp_path / "b", _arrays(), META)
    assert a["version"] == b["version"]


def test_tampered_weights_rejected(tmp_path: Path) -> None:
    write_artifact(tmp_path, _arrays(), META)
    data = bytearray((tmp_path / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0x01
    (tmp_path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="hash mismatch"):
        read_artifact(tmp_path)


def test_tampered_metadata_rejected(tmp_path: Path) -> None:
    write_artifact(tmp_path, _arrays(), META)
    meta = json.loads((tmp_path / METADATA_FILE).read_text())
    meta["profiles"] = ["a", "evil"]
    (tmp_path / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="hash mismatch"):
        read_artifact(tmp_path)


def test_missing_files_rejected(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError):
        read_artifact(tmp_path)


def test_shipped_default_artifact_is_valid_and_small() -> None:
    arrays, meta = read_artifact(DEFAULT_ARTIFACT_DIR)
    size = sum(p.stat().st_size for p in DEFAULT_ARTIFACT_DIR.iterdir())
    assert size < 10 * 1024 * 1024
    assert "gpt-4-1106-preview" in meta["profiles"]
    assert "mistralai/mixtral-8x7b-chat" in meta["profiles"]
    assert "gemini-1.5-flash-002" in meta["profiles"]
    assert meta["metrics_holdout"]["brier"] < 0.25  # better than a coin
    pred = load_artifact()
    assert pred.version == meta["version"]
    assert arrays["u"].shape[0] == len(pred.profiles)


def test_outcome_model_learns_and_is_calibrated_on_synthetic_data() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1500, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    logits = np.stack([4 * x[:, 0], 4 * x[:, 0] + 1.0], axis=1)
    y = (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    y[:200, 1] = np.nan  # missing labels are skipped
    model = fit_outcome_model(x, y, ["weak", "strong"], TrainConfig(rank=2, steps=300))
    p = model.predict_proba(x)
    assert (p[:, 1] > p[:, 0]).mean() > 0.9  # the stronger profile is ranked higher
    assert np.corrcoef(p[:, 0], x[:, 0])[0, 1] > 0.9
    assert abs(np.nanmean(y[:, 0]) - p[:, 0].mean()) < 0.03
    clone = OutcomeModel(model.profiles, model.arrays)
    np.testing.assert_allclose(clone.predict_proba(x[:5]), p[:5])
    # a profile added later has no memory labels: it is scored by the factor part alone
    grown = model.with_profile("new", a=0.0, u=np.zeros(2, np.float32))
    assert grown.arrays["knn_y"].shape == (1500, 3)
    np.testing.assert_allclose(grown.predict_proba(x[:5])[:, :2], p[:5], rtol=1e-6)
    np.testing.assert_allclose(grown.predict_proba(x[:5])[:, 2], 0.5, rtol=1e-6)


def test_memory_blend_uses_nearest_neighbours() -> None:
    x = np.eye(4, dtype=np.float32)[[0, 0, 0, 1, 1, 1]]
    y = np.array([[1.0], [1.0], [1.0], [0.0], [0.0], [np.nan]], dtype=np.float32)
    cfg = TrainConfig(rank=1, steps=1, calibration_folds=0, knn_k=3, knn_weight=1.0)
    model = fit_outcome_model(x, y, ["m"], cfg)
    assert model.memory_proba(np.eye(4, dtype=np.float32)[[0]])[0, 0] == pytest.approx(1.0)
    # neighbours of e1: three e1 rows, one unlabelled -> mean of the two labelled
    assert model.predict_proba(np.eye(4, dtype=np.float32)[[1]])[0, 0] == pytest.approx(0.0)


def test_memory_predicts_answer_length_relative_to_the_profile_mean() -> None:
    # two kinds of query: e0 answered with one token, e1 with 100 (NaN: not recorded)
    x = np.eye(4, dtype=np.float32)[[0, 0, 0, 1, 1, 1]]
    y = np.array([[1.0, 1.0]] * 6, dtype=np.float32)
    lengths = np.array(
        [[1, np.nan], [1, np.nan], [1, np.nan], [100, np.nan], [100, np.nan], [np.nan, np.nan]],
        dtype=np.float32,
    )
    cfg = TrainConfig(rank=1, steps=1, calibration_folds=0, knn_k=3, knn_weight=1.0)
    model = fit_outcome_model(x, y, ["m", "silent"], cfg, lengths)
    mean = (3 * 1 + 2 * 100) / 5
    np.testing.assert_allclose(model.arrays["len_mean"][0], mean)
    assert np.isnan(model.arrays["len_mean"][1])
    p, ratio = model.predict(np.eye(4, dtype=np.float32)[[0, 1]])
    np.testing.assert_allclose(p, model.predict_proba(np.eye(4, dtype=np.float32)[[0, 1]]))
    # bounded: one token against a mean of 40.6 is 1/40.6, kept at 1 / RATIO_BOUND
    assert ratio[0, 0] == pytest.approx(1 / RATIO_BOUND)
    assert ratio[1, 0] == pytest.approx(min(100 / mean, RATIO_BOUND))
    assert np.isnan(ratio[:, 1]).all()  # no recorded answers: no ratio, never a guess
    # a profile added or replaced later knows no lengths
    grown = model.with_profile("new", a=0.0, u=np.zeros(1, np.float32))
    assert grown.arrays["knn_len"].shape == (6, 3)
    assert np.isnan(grown.predict(np.eye(4, dtype=np.float32)[[1]])[1][0, 2])
    replaced = model.with_profile("m", a=0.0, u=np.zeros(1, np.float32))
    assert np.isnan(replaced.predict(np.eye(4, dtype=np.float32)[[1]])[1][0, 0])


def test_shipped_artifact_predicts_longer_answers_for_code_than_for_a_letter() -> None:
    predictor = load_artifact()
    code, letter = predictor.predict_batch(
        [
            "Write a python function to return the n-th Fibonacci number. Your code should "
            "pass these tests: assert fib(10) == 55",
            "Question: Which gas do plants absorb? A) oxygen B) carbon dioxide C) nitrogen "
            "D) helium. Answer with the letter.",
        ]
    )
    gpt4 = "gpt-4-1106-preview"
    assert code.output_ratio[gpt4] > 2 * letter.output_ratio[gpt4]
    assert all(1 / RATIO_BOUND <= r <= RATIO_BOUND for r in code.output_ratio.values())
