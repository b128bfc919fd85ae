"""The routing benchmark's predictions: per seeded split, each predictor's P(success) on the
held-out rows, fitted on the training rows only, cached on disk.

Predictors (all on the same prompt embeddings, the shipped embedder's):

* ``ours``: the shipped recipe (``predictors.outcome_model.fit_outcome_model`` with the
  artifact's ``TrainConfig``: factor model + Platt + neighbour memory + per-profile isotonic
  map, every calibration fitted on folds of the training rows; the memory keeps the
  training rows' answer lengths); ``ours_ratio`` its answer-length ratios of the held-out
  rows (what the engine scales each backend's typical output by); ``ours_oof`` its
  out-of-fold probabilities of the training rows (what the cascade's verdict is fitted on);
* ``kNN-10`` / ``kNN-40``: mean outcome of the k most cosine-similar training queries;
* ``MLP``: scikit-learn's MLP (256 hidden units, early stopping), one output per model.

Cache: ``<cache root>/bench-routing/`` (``$TOLLGATE_CACHE_DIR`` or ``~/.cache/tollgate``),
keyed by the data, the embedder fingerprint, the train config and :data:`RECIPE`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench.routing_data import ReplayTable
from predictors.datasets import split_ids
from predictors.local_cache import cache_root
from predictors.outcome_model import TrainConfig, fit_outcome_model

#: Bump when anything below changes what a cached file would hold.
RECIPE = "5"  # 5: the memory's answer lengths (ours_ratio)
ROUTERS = ("ours", "kNN-10", "kNN-40", "MLP")


def split(table: ReplayTable, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a seeded 70/30 split by query id (training, held out)."""
    tr, te = split_ids(table.ids, seed)
    pos = {k: i for i, k in enumerate(table.ids)}
    return np.array([pos[k] for k in tr]), np.array([pos[k] for k in te])


def knn(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, k: int) -> np.ndarray:
    sims = xte @ xtr.T  # unit-norm embeddings: cosine similarity
    nn = np.argpartition(-sims, kth=k - 1, axis=1)[:, :k]
    return np.asarray(ytr[nn].mean(axis=1))


def mlp(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, seed: int, binary: bool) -> np.ndarray:
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    if binary:
        clf = MLPClassifier(
            hidden_layer_sizes=(256,),
            alpha=1e-3,
            early_stopping=True,
            max_iter=200,
            random_state=seed,
        )
        clf.fit(xtr, ytr.astype(int))
        return np.asarray(clf.predict_proba(xte))
    reg = MLPRegressor(
        hidden_layer_sizes=(256,),
        alpha=1e-3,
        early_stopping=True,
        max_iter=200,
        random_state=seed,
    )
    reg.fit(xtr, ytr)
    return np.asarray(np.clip(np.asarray(reg.predict(xte)), 0.0, 1.0))


def _key(table: ReplayTable, fingerprint: str, cfg: TrainConfig, seed: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([RECIPE, table.name, fingerprint, asdict(cfg), seed]).encode())
    h.update("\n".join(table.ids).encode())
    h.update(np.ascontiguousarray(table.outcome, dtype=np.float64).tobytes())
    return f"{table.name}-{seed}-{h.hexdigest()[:16]}"


def predictions(
    table: ReplayTable,
    x: np.ndarray,
    fingerprint: str,
    seed: int,
    cfg: TrainConfig,
    cache: Path | None = None,
) -> dict[str, np.ndarray]:
    """``{router: (n_test, m) P(success)}`` plus ``ours_oof`` (n_train, m), ``train``, ``test``.

    ``cache``: the cache root (default ``~/.cache/tollgate``)."""
    path = cache_root(cache) / "bench-routing" / (_key(table, fingerprint, cfg, seed) + ".npz")
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    itr, ite = split(table, seed)
    y = table.outcome
    model = fit_outcome_model(x[itr], y[itr], table.models, cfg, table.output_tokens[itr])
    assert model.oof_proba is not None
    proba, ratio = model.predict(x[ite])
    out = {
        "train": itr,
        "test": ite,
        "ours": proba,
        "ours_ratio": ratio,
        "ours_oof": model.oof_proba,
        "kNN-10": knn(x[itr], y[itr], x[ite], 10),
        "kNN-40": knn(x[itr], y[itr], x[ite], 40),
        "MLP": mlp(x[itr], y[itr], x[ite], seed, table.binary),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.{seed}.tmp.npz")
    np.savez(tmp, **out)  # type: ignore[arg-type]
    tmp.replace(path)
    return out
