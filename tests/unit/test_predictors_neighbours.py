"""The neighbour search's top-k selection picks exactly the rows a full selection picks."""

from __future__ import annotations

import numpy as np
import pytest

from predictors.memory import top_k as _top_k


def _full(sims: np.ndarray, k: int) -> list[set[int]]:
    return [set(row) for row in np.argpartition(-sims, kth=k - 1, axis=1)[:, :k].tolist()]


@pytest.mark.parametrize("k", [1, 5, 40, 200])
def test_same_neighbours_as_a_full_selection(k: int) -> None:
    rng = np.random.default_rng(k)
    sims = rng.standard_normal((16, 9401)).astype(np.float32)
    got = _top_k(sims, k)
    assert got.shape == (16, k)
    assert [set(row) for row in got.tolist()] == _full(sims, k)


def test_ties_and_nan_take_the_full_selection() -> None:
    rng = np.random.default_rng(0)
    for trial in range(300):
        n, size = int(rng.integers(1, 5)), int(rng.integers(1, 600))
        sims = rng.integers(0, 12, size=(n, size)).astype(np.float32)  # many ties
        if trial % 5 == 0:
            sims[0, rng.integers(0, size)] = np.nan
        k = int(rng.integers(1, size + 1))
        assert [set(row) for row in _top_k(sims, k).tolist()] == _full(sims, k), trial


def test_a_tie_at_the_kth_value_keeps_the_full_selections_choice() -> None:
    sims = np.linspace(0.0, 1.0, 2000, dtype=np.float32)[None, :].repeat(2, axis=0)
    sims[:, 1990:] = 1.0  # ten equal best rows, k = 5: which five is the full selection's call
    assert [set(row) for row in _top_k(sims, 5).tolist()] == _full(sims, 5)
