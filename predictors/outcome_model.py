"""The outcome model: P(adequate | query, backend profile) from a query embedding.

This module owns the learned map from an embedding to one calibrated probability per profile.
It is an IRT-style factor model blended with a nearest-neighbour memory. The factor part: a
query gets a ``rank``-dimensional "difficulty" vector
``h(x)`` (linear, or a one-hidden-layer MLP of the embedding), each profile an "ability"
vector ``u`` and bias ``a``, and ``logit = a + u · h(x)``; a per-profile Platt map fitted on
out-of-fold logits makes the probabilities calibrated. All profiles share ``h``, so profiles
with few labels borrow strength from the others, missing labels (NaN) are simply skipped, and a
new backend's profile is fitted from a few hundred outcomes by learning only ``(a, u)``
(:func:`fit_new_profile`). The memory part: the training queries' embeddings (int8) and
outcomes; a query's P(success) is averaged with the mean outcome of its ``knn_k`` most
cosine-similar training queries (measured: +0.002-0.004 AIQ over the factor model alone, and
it is what lets the router beat an MLP on MMLU-Pro). Profiles with no memory labels (fitted
or aliased later) use the factor part alone. The same neighbours also say how long an answer
will be: when the model is fitted with answer lengths, the memory keeps each training query's
output tokens per profile (``knn_len``) and :meth:`OutcomeModel.predict` returns, per profile,
the neighbours' mean length over the profile's mean (``len_mean``): 1.0 = a typical answer,
3.0 = three times as long (code rather than a letter), bounded by :data:`RATIO_BOUND`. The
policy engine scales a backend's typical output by it, so a request's expected cost follows
what it asks for. Last, a per-profile isotonic map fitted on the out-of-fold blend
(``calib_map``) makes the blended probability itself calibrated: the memory's mean of 40
labels is noisy, and a noisy P(success) compared against a threshold picks the profiles whose
noise is high. Training uses torch; inference is numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from predictors.calibration import (
    CALIBRATION_GRID,
    apply_calibration_map,
    fit_isotonic_map,
    fit_platt,
    sigmoid,
)
from predictors.memory import (
    length_arrays,
    memory_mean,
    nan_mean,
    quantize,
    similarity,
    top_k,
)

#: The answer-length ratio is kept within [1/RATIO_BOUND, RATIO_BOUND]: the memory holds
#: benchmark answers (one letter, or a page of code), and a chat prompt whose neighbours are
#: multiple-choice questions must not look 50 times cheaper than a typical answer.
RATIO_BOUND = 4.0


@dataclass(frozen=True)
class TrainConfig:
    # chosen by measurement on seeded splits of RouterBench and MMLU-Pro (docs/predictor.md):
    # a linear h(x) of rank 8-16 with ~100 Adam steps beat deeper/longer fits on Brier and AUC
    rank: int = 12
    hidden: int = 0  # 0: linear h(x); >0: one ReLU hidden layer of this width
    weight_decay: float = 1e-4
    dropout: float = 0.1
    steps: int = 100  # optimizer steps (mini-batches of 512); more overfits
    knn_k: int = 40  # neighbours in the memory blend (0: no memory)
    knn_weight: float = 0.5  # weight of the memory's estimate in the blend
    lr: float = 3e-3
    calibration_folds: int = 5
    # "isotonic": a per-profile monotone map fitted on the out-of-fold *blended* probability
    # (factor model + memory), so that P(success) = 0.8 means 80 % for every profile;
    # "none": the blend as is (Platt-calibrated factor part, raw memory mean)
    final_calibration: str = "isotonic"
    seed: int = 0


@dataclass
class OutcomeModel:
    """Weights of the factor model; all arrays are float32 numpy."""

    profiles: list[str]
    arrays: dict[str, np.ndarray] = field(repr=False)
    #: After :func:`fit_outcome_model`: the out-of-fold P(success) of the training rows
    #: (calibrated; NaN without calibration folds). Not stored in artifacts.
    oof_proba: np.ndarray | None = field(default=None, repr=False, compare=False)
    _memory: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _labels: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _labelled: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _similarity: Any = field(default=None, init=False, repr=False, compare=False)
    _lengths: tuple[np.ndarray, np.ndarray] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def features(self, x: np.ndarray) -> np.ndarray:
        """The query "difficulty" vectors h(x), shape (n, rank)."""
        a = self.arrays
        if "w1" in a:
            x = np.maximum(x @ a["w1"].T + a["b1"], 0.0)
        return np.asarray(x @ a["w"].T + a["c"], dtype=np.float32)

    def raw_logits(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.features(x) @ self.arrays["u"].T + self.arrays["a"])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Calibrated P(success), shape (n, n_profiles)."""
        return self.predict(x, lengths=False)[0]

    def predict(self, x: np.ndarray, lengths: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated P(success) and the answer-length ratio (see the module docstring), both
        (n, n_profiles); the ratio is NaN where the memory knows no length (or ``lengths`` is
        False). One neighbour search serves both."""
        x = np.asarray(x, dtype=np.float32)
        z = self.raw_logits(x)
        p = sigmoid(z * self.arrays["platt_scale"] + self.arrays["platt_bias"])
        ratio = np.full(p.shape, np.nan, dtype=np.float32)
        if "knn_x" in self.arrays:
            nn = self.neighbours(x)
            p = _blend(p, self.memory_proba(x, nn), float(self.arrays["knn_params"][1]))
            if lengths and "knn_len" in self.arrays:
                ratio = self.length_ratio(x, nn)
        if "calib_map" in self.arrays:
            p = apply_calibration_map(p, self.arrays["calib_map"])
        return np.asarray(p), ratio

    def neighbours(self, x: np.ndarray) -> np.ndarray:
        """Row indices of the memory's ``k`` queries most similar to each of ``x``."""
        if self._memory is None:  # int8 -> float32 once, not per call
            self._memory = self.arrays["knn_x"].astype(np.float32) / 127.0
            labels = self.arrays["knn_y"].astype(np.float32)
            self._labelled = ~np.isnan(labels)
            self._labels = np.nan_to_num(labels, nan=0.0)
            self._similarity = similarity(self._memory)
        k = min(int(self.arrays["knn_params"][0]), self._memory.shape[0])
        return top_k(self._similarity(np.asarray(x, dtype=np.float32)), k)

    def memory_proba(self, x: np.ndarray, nn: np.ndarray | None = None) -> np.ndarray:
        """Mean outcome of the ``k`` most similar training queries (NaN: no labelled one)."""
        nn = self.neighbours(x) if nn is None else nn
        assert self._labels is not None and self._labelled is not None
        return nan_mean(self._labels[nn], self._labelled[nn])

    def length_ratio(self, x: np.ndarray, nn: np.ndarray | None = None) -> np.ndarray:
        """Per profile, the ``k`` most similar training queries' mean answer length over the
        profile's mean answer length (NaN: no neighbour with a recorded length)."""
        nn = self.neighbours(x) if nn is None else nn
        if self._lengths is None:
            raw = self.arrays["knn_len"].astype(np.float32)
            self._lengths = (np.nan_to_num(raw, nan=0.0), ~np.isnan(raw))
        values, known = self._lengths
        mean = nan_mean(values[nn], known[nn])
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.clip(mean / self.arrays["len_mean"], 1 / RATIO_BOUND, RATIO_BOUND)
        return np.asarray(np.where(np.isfinite(ratio), ratio, np.nan), dtype=np.float32)

    def with_profile(
        self, name: str, a: float, u: np.ndarray, scale: float = 1.0, bias: float = 0.0
    ) -> OutcomeModel:
        """A copy with one more (or one replaced) profile."""
        profiles = list(self.profiles)
        arrays = {k: v.copy() for k, v in self.arrays.items()}
        row = {
            "a": np.float32(a),
            "u": u.astype(np.float32),
            "platt_scale": np.float32(scale),
            "platt_bias": np.float32(bias),
        }
        if "calib_map" in arrays:  # a new ability is fitted as a probability: identity map
            row["calib_map"] = np.linspace(0.0, 1.0, CALIBRATION_GRID, dtype=np.float32)
        if name in profiles:
            i = profiles.index(name)
            for k, v in row.items():
                arrays[k][i] = v
            for key in ("knn_y", "knn_len"):  # the memory's labels were for the old backend
                if key in arrays:
                    arrays[key][:, i] = np.nan
            if "len_mean" in arrays:
                arrays["len_mean"][i] = np.nan
        else:
            profiles.append(name)
            for k, v in row.items():
                arrays[k] = np.concatenate([arrays[k], np.asarray(v)[None, ...]], axis=0)
            for key in ("knn_y", "knn_len"):
                if key in arrays:
                    col = np.full((arrays[key].shape[0], 1), np.nan, dtype=arrays[key].dtype)
                    arrays[key] = np.concatenate([arrays[key], col], axis=1)
            if "len_mean" in arrays:
                arrays["len_mean"] = np.append(arrays["len_mean"], np.float32(np.nan))
        return OutcomeModel(profiles, arrays)


def _blend(p: np.ndarray, memory: np.ndarray, w: float) -> np.ndarray:
    """``(1 - w) * p + w * memory`` where the memory has labels, ``p`` elsewhere."""
    return np.asarray(np.where(np.isnan(memory), p, (1 - w) * p + w * memory), dtype=np.float32)


def _train_torch(x: np.ndarray, y: np.ndarray, cfg: TrainConfig) -> dict[str, np.ndarray]:
    import torch

    torch.manual_seed(cfg.seed)
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    mask = torch.from_numpy(~np.isnan(y))
    yt = torch.from_numpy(np.nan_to_num(y, nan=0.0).astype(np.float32))
    n_in, m = xt.shape[1], yt.shape[1]
    layers: list[torch.nn.Module] = []
    if cfg.hidden:
        layers += [
            torch.nn.Linear(n_in, cfg.hidden),
            torch.nn.ReLU(),
            torch.nn.Dropout(cfg.dropout),
        ]
        n_in = cfg.hidden
    layers.append(torch.nn.Linear(n_in, cfg.rank))
    body = torch.nn.Sequential(*layers)
    head = torch.nn.Linear(cfg.rank, m)
    # start the biases at the profiles' base rates so training only learns the query part
    with torch.no_grad():
        rate = ((yt * mask).sum(0) / mask.sum(0).clamp(min=1)).clamp(0.02, 0.98)
        head.bias.copy_(torch.log(rate / (1 - rate)))
    params = list(body.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    n = xt.shape[0]
    batch = 512
    gen = torch.Generator().manual_seed(cfg.seed)
    body.train()
    steps = 0
    while steps < cfg.steps:
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, batch):
            if steps >= cfg.steps:
                break
            steps += 1
            idx = perm[start : start + batch]
            logits = head(body(xt[idx]))
            mb = mask[idx]
            loss = (loss_fn(logits, yt[idx]) * mb).sum() / mb.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
    body.eval()
    out: dict[str, np.ndarray] = {}
    lin = [mod for mod in body if isinstance(mod, torch.nn.Linear)]
    if cfg.hidden:
        out["w1"] = lin[0].weight.detach().numpy().copy()
        out["b1"] = lin[0].bias.detach().numpy().copy()
    out["w"] = lin[-1].weight.detach().numpy().copy()
    out["c"] = lin[-1].bias.detach().numpy().copy()
    out["u"] = head.weight.detach().numpy().copy()
    out["a"] = head.bias.detach().numpy().copy()
    return {k: v.astype(np.float32) for k, v in out.items()}


def fit_outcome_model(
    x: np.ndarray,
    y: np.ndarray,
    profiles: Sequence[str],
    cfg: TrainConfig | None = None,
    lengths: np.ndarray | None = None,
) -> OutcomeModel:
    """Fit on embeddings ``x`` (n, d) and outcomes ``y`` (n, m; NaN = no record);
    ``lengths`` (n, m): the recorded answers' output tokens (NaN = none), kept in the memory
    for :meth:`OutcomeModel.predict`'s length ratio.

    Out of fold (``cfg.calibration_folds`` folds of the given rows, nothing else): the Platt
    maps are fitted on the factor model's logits; then, with ``final_calibration="isotonic"``,
    a per-profile isotonic map on the blended probability (factor + the memory of the other
    folds). The final weights are refitted on all rows.
    """
    cfg = cfg or TrainConfig()
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    m = y.shape[1]
    scale = np.ones(m, dtype=np.float32)
    bias = np.zeros(m, dtype=np.float32)
    maps = None
    oof_p = np.full(y.shape, np.nan, dtype=np.float32)
    if cfg.calibration_folds >= 2:
        rng = np.random.default_rng(cfg.seed)
        fold = rng.permutation(len(x)) % cfg.calibration_folds
        oof = np.full(y.shape, np.nan, dtype=np.float32)
        oof_memory = np.full(y.shape, np.nan, dtype=np.float32)
        for k in range(cfg.calibration_folds):
            tr, te = fold != k, fold == k
            arrays = _train_torch(x[tr], y[tr], cfg)
            part = OutcomeModel(list(profiles), arrays)
            oof[te] = part.raw_logits(x[te])
            if cfg.knn_k > 0:
                oof_memory[te] = memory_mean(x[te], quantize(x[tr]), y[tr], cfg.knn_k)
        for j in range(m):
            scale[j], bias[j] = fit_platt(oof[:, j], y[:, j])
        oof_p = sigmoid(oof * scale + bias)
        if cfg.knn_k > 0:
            oof_p = _blend(oof_p, oof_memory, cfg.knn_weight)
        if cfg.final_calibration == "isotonic":
            maps = np.stack([fit_isotonic_map(oof_p[:, j], y[:, j]) for j in range(m)])
            oof_p = apply_calibration_map(oof_p, maps)
        elif cfg.final_calibration != "none":
            raise ValueError(f"unknown final_calibration {cfg.final_calibration!r}")
    arrays = _train_torch(x, y, cfg)
    arrays["platt_scale"] = scale
    arrays["platt_bias"] = bias
    if maps is not None:
        arrays["calib_map"] = maps
    if cfg.knn_k > 0:
        arrays["knn_x"] = quantize(x)
        arrays["knn_y"] = y.astype(np.float16)
        arrays["knn_params"] = np.array([cfg.knn_k, cfg.knn_weight], dtype=np.float32)
        if lengths is not None:
            arrays.update(length_arrays(lengths))
    return OutcomeModel(list(profiles), arrays, oof_proba=oof_p)


def fit_new_profile(
    model: OutcomeModel, x: np.ndarray, success: np.ndarray, l2: float = 1.0
) -> tuple[float, np.ndarray]:
    """Fit a new backend's ability ``(a, u)`` from labelled outcomes, keeping h(x) frozen.

    An L2-penalised logistic regression on the ``rank`` query features; with a few hundred
    labels this is well determined (rank + 1 parameters) and close to calibrated.
    """
    from sklearn.linear_model import LogisticRegression

    feats = model.features(np.asarray(x, dtype=np.float32))
    yb = np.asarray(success, dtype=float)
    keep = ~np.isnan(yb)
    clf = LogisticRegression(C=1.0 / l2, max_iter=1000)
    clf.fit(feats[keep], (yb[keep] >= 0.5).astype(int))
    return float(clf.intercept_[0]), clf.coef_[0].astype(np.float32)
