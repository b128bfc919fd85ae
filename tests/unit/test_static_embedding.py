"""The static embedder (``predictors.static_embedding``): the weighted token mean, its token
window, batch independence, and what its fingerprint covers. A synthetic token table stands
in for the distilled one (building that takes a minute); the tokenizer is the real one."""

from __future__ import annotations

import numpy as np
import pytest

from predictors.static_embedding import StaticConfig, StaticEmbedder, counts_digest, sif_weights


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(30522, 384)).astype(np.float32)


def test_vector_is_the_normalised_weighted_mean_of_its_tokens(table: np.ndarray) -> None:
    emb = StaticEmbedder(StaticConfig(weighting="sif"), table=table)
    text = "What is the capital of France?"
    ids = emb.tokenizer(text, add_special_tokens=False)["input_ids"]
    w = sif_weights(table.shape[0])
    expected = (table[ids] * w[ids, None]).sum(axis=0)
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(emb.encode([text])[0], expected, rtol=1e-5, atol=1e-6)


def test_frequent_tokens_weigh_less_than_rare_ones() -> None:
    w = sif_weights(30522)
    the, rare = 1996, 23307  # "the" and a rare word piece
    assert w[the] < 0.1 < w[rare] <= 1.0


def test_vectors_do_not_depend_on_the_batch(table: np.ndarray) -> None:
    emb = StaticEmbedder(table=table)
    texts = ["short", "a somewhat longer prompt about routing " * 30, "x y z"]
    together = emb.encode(texts)
    alone = np.stack([emb.encode([t])[0] for t in texts])
    np.testing.assert_array_equal(together, alone)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_only_the_head_and_tail_window_counts(table: np.ndarray) -> None:
    emb = StaticEmbedder(StaticConfig(max_tokens=48, head_tokens=18), table=table)
    head, tail = "Instructions for the task. " * 10, " Examples end. " * 20 + "The question?"
    a = emb.encode([head + "one middle " * 500 + tail])[0]
    b = emb.encode([head + "another completely different middle " * 300 + tail])[0]
    np.testing.assert_array_equal(a, b)
    c = emb.encode([head + "one middle " * 500 + " A different question!"])[0]
    assert not np.allclose(a, c)


def test_empty_text_is_a_zero_vector(table: np.ndarray) -> None:
    assert not StaticEmbedder(table=table).encode([""]).any()


def test_fingerprint_names_window_weighting_and_counts() -> None:
    sif = StaticConfig(48, 18, "sif").fingerprint()
    assert "tok48|head18" in sif and counts_digest() in sif and "static-" in sif
    assert StaticConfig(48, 18, "mean").fingerprint() != sif
    assert StaticConfig(64, 24, "sif").fingerprint() != sif
    assert StaticConfig.from_dict(StaticConfig(32, 12, "mean").to_dict()) == StaticConfig(
        32, 12, "mean"
    )
    with pytest.raises(ValueError, match="weighting"):
        StaticConfig(weighting="max")
