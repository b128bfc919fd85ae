"""Learning from outcomes: ``tollgate predictor train --from-store``.

This module owns turning the gateway's own logged traffic into predictor training data, fitting
a candidate predictor on it, and the report an operator reads *before* deploying it.

Training data. Every routed request stores its decision on its first attempt, including the
query's embedding (``prediction.embedding``: int8, not the text; ``predictor.record_embeddings``).
A logged request gives labels for the backends that answered it:

* the backend whose answer was returned is labelled with the task's outcome (feedback > judge >
  validator, ``gateway.analytics.reports.verdicts``); a task with no outcome gives no label;
* a backend whose answer a policy validator rejected (escalation) is labelled 0.

Requests whose embedding is from another embedder space than the base artifact's are skipped
(and counted). Profiles are named after the *backends*: the gateway scores a backend with the
profile of its own name when the predictor has one
(``gateway.serve.backend_facts.learned_profile``), so a deployed candidate replaces the
backend's mapping to a dataset model.

Two recipes, both fitted by ``predictors.fitting`` (this module only reads the store and
reports):

* fine-tune (default): keep the base artifact's query features ``h(x)`` and fit each backend's
  ability ``(a, u)`` from its labels (backends with fewer than ``min_labels`` labels keep their
  current mapping), and add the logged queries to the nearest-neighbour memory;
* ``with_shared_data``: refit the whole outcome model on ``../shared/data`` (the shipped
  recipe) plus the logged rows, the backends as extra profiles.

The report (:class:`LearningReport`) fits the recipe on a seeded 70 % of the logged *tasks* and
compares the current and the candidate predictor on the other 30 %: calibration (Brier, log
loss, ECE, AUC on the observed labels) and the policy's cost per successful task, replayed
with each predictor's P(success) through ``gateway.analytics.backtest.replay_store``. A
replayed choice of the backend that actually answered reuses the recorded cost and outcome;
any other choice is priced from the recorded tokens and its success estimated by the
*candidate* model for both sides, so the difference comes from the choices, not from who grades
them. The artifact written is then fitted on all logged rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.analytics.backtest import LoggedRequest, Summary, replay_store
from gateway.analytics.facts import backend_facts
from gateway.analytics.predictions import predict_vectors
from gateway.analytics.prices import resolve_prices
from gateway.serve.backend_facts import learned_profile
from predictors import fitting
from predictors.fitting import MIN_LABELS

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from gateway.config import Config
    from predictors.service import Predictor


@dataclass(frozen=True)
class LabelledRequest:
    """One logged request with its query vector and a label per backend that answered it."""

    request: LoggedRequest
    vector: np.ndarray
    labels: Mapping[str, float]


@dataclass
class StoreData:
    rows: list[LabelledRequest]
    skipped: dict[str, int] = field(default_factory=dict)

    def backends(self) -> dict[str, int]:
        counts = label_counts(self.rows)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def label_counts(rows: Sequence[LabelledRequest]) -> Counter[str]:
    """Labels per backend."""
    return fitting.label_counts([r.labels for r in rows])


def labelled_requests(logged: Sequence[LoggedRequest], fingerprint: str) -> StoreData:
    """The logged requests that can teach the predictor: a vector of ``fingerprint``'s space
    and at least one label (see the module docstring)."""
    from predictors.embedding import unpack_vector

    data = StoreData([])

    def skip(reason: str) -> None:
        data.skipped[reason] = data.skipped.get(reason, 0) + 1

    for req in logged:
        pred = req.decision.get("prediction")
        packed = pred.get("embedding") if isinstance(pred, Mapping) else None
        if not isinstance(packed, str):
            skip("no stored embedding")
            continue
        if pred.get("embedder") != fingerprint:  # type: ignore[union-attr]
            skip("embedding from another embedder")
            continue
        try:
            vector = unpack_vector(packed)
        except ValueError:
            skip("malformed embedding")
            continue
        labels: dict[str, float] = {b: 0.0 for b in req.rejected}
        if req.served_by is not None and req.success is not None:
            labels[req.served_by] = 1.0 if req.success else 0.0
        if not labels:
            skip("no outcome")
            continue
        data.rows.append(LabelledRequest(req, vector, labels))
    return data


def split_by_task(rows: Sequence[LabelledRequest], seed: int) -> tuple[list[int], list[int]]:
    """Seeded 70/30 split of row indexes; all requests of a task fall on the same side."""
    from predictors.datasets import split_ids

    tasks = sorted({r.request.task_id for r in rows})
    train, _ = split_ids(tasks, seed)
    keep = set(train)
    tr = [i for i, r in enumerate(rows) if r.request.task_id in keep]
    te = [i for i, r in enumerate(rows) if r.request.task_id not in keep]
    return tr, te


def _vectors(rows: Sequence[LabelledRequest]) -> np.ndarray:
    return np.stack([r.vector for r in rows]) if rows else np.zeros((0, 384), np.float32)


def fine_tune(
    base: Predictor, rows: Sequence[LabelledRequest], min_labels: int = MIN_LABELS
) -> tuple[Predictor, list[str]]:
    """``predictors.fitting.fine_tune`` on logged requests (profiles named after backends)."""
    return fitting.fine_tune(base, _vectors(rows), [r.labels for r in rows], min_labels)


@dataclass(frozen=True)
class Calibration:
    pairs: int
    brier: float
    log_loss: float
    ece: float
    auc: float

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 5) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def _calibration(y: np.ndarray, p: np.ndarray) -> Calibration:
    from predictors.calibration import brier_score, expected_calibration_error, log_loss, roc_auc

    return Calibration(
        pairs=len(y),
        brier=brier_score(y, p),
        log_loss=log_loss(y, p),
        ece=expected_calibration_error(y, p),
        auc=roc_auc(y, p) if 0 < y.sum() < len(y) else float("nan"),
    )


@dataclass(frozen=True)
class LearningReport:
    """Current vs candidate predictor on held-out logged requests (see module docstring)."""

    recipe: str
    train_rows: int
    test_rows: int
    learned: tuple[str, ...]
    labels_per_backend: dict[str, int]
    skipped: dict[str, int]
    calibration: dict[str, Calibration]  # "current" / "candidate"
    replay: dict[str, Summary]  # "logged" / "current" / "candidate"
    notes: tuple[str, ...] = ()

    def verdict(self) -> str:
        """One line: does the held-out evidence favour deploying the candidate?"""
        cal, rep = self.calibration, self.replay
        if "candidate" not in cal or "candidate" not in rep:
            return "no held-out evidence (too few logged requests with outcomes): do not deploy"
        d_brier = cal["candidate"].brier - cal["current"].brier
        cur, cand = rep["current"].cost_per_success, rep["candidate"].cost_per_success
        if cur is None or cand is None:
            cost = "cost per success unknown"
            cheaper = False
        else:
            change = float((cand - cur) / cur * 100) if cur else 0.0
            cost = f"cost per successful task {change:+.1f}%"
            cheaper = cand <= cur
        if d_brier <= 0 and cheaper:
            return f"deploy: Brier {d_brier:+.4f}, {cost} on held-out requests"
        return f"keep the current predictor: Brier {d_brier:+.4f}, {cost} on held-out requests"

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict(),
            "recipe": self.recipe,
            "train_rows": self.train_rows,
            "test_rows": self.test_rows,
            "learned_profiles": list(self.learned),
            "labels_per_backend": self.labels_per_backend,
            "skipped": self.skipped,
            "calibration": {k: v.to_dict() for k, v in self.calibration.items()},
            "replay": {k: v.to_dict() for k, v in self.replay.items()},
            "notes": list(self.notes),
        }


def _profiles_for(config: Config, predictor: Predictor) -> dict[str, str]:
    """backend -> the profile the gateway would score it with under ``predictor``."""
    known = set(predictor.profiles)
    out = {}
    for b in config.backends:
        profile = learned_profile(b, known)
        if profile is not None and profile in known:
            out[b.name] = profile
    return out


def compare(
    config: Config,
    current: Predictor,
    candidate: Predictor,
    test: Sequence[LabelledRequest],
) -> tuple[dict[str, Calibration], dict[str, Summary]]:
    """Calibration and policy replay of both predictors on the held-out rows."""
    if not test:
        return {}, {}
    x = np.stack([r.vector for r in test]).astype(np.float32)
    predictors = {"current": current, "candidate": candidate}
    maps = {side: _profiles_for(config, p) for side, p in predictors.items()}
    # one prediction pass per predictor serves both the calibration and the replay
    probs = {side: predict_vectors(p, x) for side, p in predictors.items()}
    calibration: dict[str, Calibration] = {}
    # the pairs both predictors can score, so both are graded on the same labels
    pairs = [
        (i, b, v)
        for i, r in enumerate(test)
        for b, v in r.labels.items()
        if b in maps["current"] and b in maps["candidate"]
    ]
    if pairs:
        y = np.array([v for _, _, v in pairs])
        for side in predictors:
            p = np.array([probs[side][i].p_success[maps[side][b]] for i, b, _ in pairs])
            calibration[side] = _calibration(y, p)

    index = {r.request.request_id: i for i, r in enumerate(test)}

    def estimate(req: LoggedRequest, backend: str) -> float | None:
        profile = maps["candidate"].get(backend)
        if profile is None:
            return None
        return float(probs["candidate"][index[req.request_id]].p_success[profile])

    prices = resolve_prices(config)
    policy_set = config.policy_set
    replay: dict[str, Summary] = {}
    if policy_set is not None:
        for side in predictors:
            facts = backend_facts(config, prices, profiles=maps[side])
            logged = [
                replace(r.request, prediction=p) for r, p in zip(test, probs[side], strict=True)
            ]
            result = replay_store(logged, facts, policy_set, estimate=estimate)
            replay.setdefault("logged", result.current.summary)
            replay[side] = result.candidate.summary
    return calibration, replay


async def load_store_data(engine: AsyncEngine, fingerprint: str, limit: int | None) -> StoreData:
    from gateway.analytics.backtest import load_logged_requests

    load = await load_logged_requests(engine, limit)
    data = labelled_requests(load.requests, fingerprint)
    if load.skipped_no_decision:
        data.skipped["no routing decision"] = load.skipped_no_decision
    if load.skipped_no_prediction:
        data.skipped["no prediction (predictor timed out or off)"] = load.skipped_no_prediction
    return data


def learn(
    config: Config,
    base: Predictor,
    data: StoreData,
    *,
    with_shared_data: bool = False,
    data_dir: str | Path | None = None,
    min_labels: int = MIN_LABELS,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> tuple[Predictor, LearningReport]:
    """Fit on 70 % of the logged tasks, report on the rest, then fit the final candidate on all
    rows. Raises ValueError when there is nothing to learn."""
    if not data.rows:
        raise ValueError(
            "no logged request has both a stored embedding and an outcome: record outcomes "
            "(POST /v1/feedback, validators, a judge) on traffic routed by a policy"
        )

    def fit(rows: Sequence[LabelledRequest]) -> tuple[Predictor, list[str]]:
        if with_shared_data:
            x, labels = _vectors(rows), [r.labels for r in rows]
            return fitting.refit_with_shared_data(
                base, x, labels, data_dir, min_labels, seed, cache_dir
            )
        return fine_tune(base, rows, min_labels)

    tr, te = split_by_task(data.rows, seed)
    train_rows = [data.rows[i] for i in tr]
    test_rows = [data.rows[i] for i in te]
    notes = []
    held_out, learned_tr = fit(train_rows)
    if not learned_tr:
        notes.append(
            f"no backend has {min_labels} labels in the 70 % training part: the held-out "
            "comparison shows the candidate equal to the current predictor for them"
        )
    calibration, replay = compare(config, base, held_out, test_rows)
    if replay.get("candidate") is not None and replay["candidate"].estimated:
        notes.append(
            "replayed choices of a backend other than the one that answered are priced from "
            "the recorded tokens and their success estimated by the candidate model"
        )
    candidate, learned = fit(data.rows)
    recipe = "refit on shared data + store" if with_shared_data else "fine-tune on store"
    report = LearningReport(
        recipe=recipe,
        train_rows=len(train_rows),
        test_rows=len(test_rows),
        learned=tuple(learned),
        labels_per_backend=data.backends(),
        skipped=dict(data.skipped),
        calibration=calibration,
        replay=replay,
        notes=tuple(notes),
    )
    return candidate, report


def write_candidate(
    out_dir: str | Path, candidate: Predictor, report: LearningReport, store: str
) -> dict[str, Any]:
    """Write the candidate as a versioned artifact; the report goes into its metadata."""
    from predictors.artifact import write_artifact

    meta = {k: v for k, v in candidate.meta.items() if k not in ("version", "content_hash")}
    # complexity stays the mean over the dataset-trained profiles, comparable across versions
    meta["complexity_profiles"] = list(
        candidate.meta.get("complexity_profiles", candidate.meta["profiles"])
    )
    meta["profiles"] = list(candidate.model.profiles)
    meta["base_version"] = candidate.meta.get("version")
    meta["learned_from_store"] = {"store": store, **report.to_dict()}
    meta["name"] = f"{meta.get('name', 'tollgate-predictor')}-store"
    return write_artifact(out_dir, candidate.model.arrays, meta)
