"""Learning from outcomes: routed requests store their query embedding; ``train --from-store``
turns requests + outcomes into labels, fits a candidate, and reports before deploying it.

The gateway here runs the real shipped predictor (ONNX encoder + outcome model): the stored
vectors must be the predictor's own, or the candidate would be trained on another space.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.analytics.backtest import LoggedRequest
from gateway.analytics.learning import (
    LabelledRequest,
    fine_tune,
    labelled_requests,
    learn,
    load_store_data,
    write_candidate,
)
from gateway.config import load_config
from gateway.serve.predictor_client import PredictorClient
from gateway.serve.routing import learned_profile
from gateway.store.database import create_engine
from predictors.embedding import EMBED_DIM, pack_vector, unpack_vector
from predictors.service import load_artifact
from tests.support.harness import app_client, backend, chat_body, create_key, settings_for

TOPICS = ["algebra", "poetry", "geometry", "cooking", "calculus", "gardening"]
HARD = {"algebra", "geometry", "calculus"}  # the cheap backend fails these


def _config(tmp_path: Path) -> dict[str, Any]:
    return {
        "backends": [
            backend(
                "local",
                input_cost_per_token="0.0000001",
                output_cost_per_token="0.0000001",
                profile="mistralai/mixtral-8x7b-chat",
            ),
            backend(
                "frontier",
                input_cost_per_token="0.00001",
                output_cost_per_token="0.00003",
                profile="gpt-4-1106-preview",
            ),
        ],
        "policies": {
            "d": {
                "candidates": ["local", "frontier"],
                # most_capable: the shipped static predictor scores a few of these synthetic prompts
                # below 0.5 for both backends; the test is about learning, not refusals
                "objective": {
                    "kind": "cheapest_adequate",
                    "min_success": 0.5,
                    "on_no_adequate": "most_capable",
                },
                "predictor_fallback": "frontier",
            }
        },
        "routing": {"default": "d"},
        "predictor": {"enabled": True, "timeout_ms": 5000},
        "store": {"spool_dir": str(tmp_path / "spool"), "flush_interval_ms": 20},
    }


def _prompt(i: int) -> tuple[str, bool]:
    topic = TOPICS[i % len(TOPICS)]
    return f"Question {i} about {topic}: explain {topic} step {i} to a student.", topic in HARD


@pytest.fixture(scope="module")
def shipped() -> Any:
    return load_artifact()


def test_routed_requests_store_embeddings_and_learning_reads_them(
    tmp_path: Path, sqlite_url: str, shipped: Any
) -> None:
    cfg = _config(tmp_path)
    settings = settings_for(cfg, sqlite_url)
    n = 60
    service = PredictorClient()  # the shipped artifact in a worker process, as the gateway runs it
    with app_client(settings, predictor=service) as (client, _):
        key = create_key(client)
        auth = {"authorization": f"Bearer {key}"}
        served = {}
        for i in range(n):
            text, hard = _prompt(i)
            resp = client.post(
                "/v1/chat/completions",
                json=chat_body(model="auto", text=text),
                headers={**auth, "x-tollgate-task-id": f"t{i}"},
            )
            assert resp.status_code == 200, resp.text
            backend_name = resp.headers["x-tollgate-backend"]
            served[f"t{i}"] = backend_name
            ok = not (hard and backend_name == "local")
            fb = client.post("/v1/feedback", json={"task_id": f"t{i}", "success": ok}, headers=auth)
            assert fb.status_code == 201, fb.text
        detail = client.get(f"/v1/requests/{resp.headers['x-tollgate-request-id']}", headers=auth)
        assert detail.status_code == 200

    async def load() -> Any:
        engine = create_engine(settings.database_url)
        try:
            return await load_store_data(engine, shipped.embedder_config.fingerprint(), None)
        finally:
            await engine.dispose()

    data = asyncio.run(load())
    assert len(data.rows) == n and not data.skipped
    # the stored vector is the predictor's own embedding of the prompt (int8 rounding only)
    first = data.rows[0]
    text0, _ = _prompt(0)
    direct = shipped.embedder.encode([text0])[0]
    assert float(first.vector @ direct) > 0.995
    for row in data.rows:
        task = row.request.request_id
        assert task
        assert set(row.labels) == {row.request.served_by}

    config = load_config_dict(tmp_path, cfg)
    candidate, report = learn(config, shipped, data, min_labels=10)
    assert report.train_rows + report.test_rows == n
    assert set(report.calibration) == {"current", "candidate"}
    assert set(report.replay) == {"logged", "current", "candidate"}
    assert report.replay["logged"].requests == report.test_rows
    out = tmp_path / "candidate"
    meta = write_candidate(out, candidate, report, "sqlite test store")
    loaded = load_artifact(out)
    assert loaded.version == meta["version"] != shipped.version
    assert meta["learned_from_store"]["test_rows"] == report.test_rows
    for name in report.learned:
        assert name in loaded.profiles
        assert learned_profile(config.backend(name), set(loaded.profiles)) == name
    # complexity is still the mean over the dataset profiles
    assert meta["complexity_profiles"] == shipped.meta["profiles"]


def load_config_dict(tmp_path: Path, cfg: dict[str, Any]) -> Any:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(cfg))
    return load_config(str(path))


def _synthetic(shipped: Any, n: int, seed: int) -> tuple[list[LabelledRequest], np.ndarray]:
    """Requests served by 'local' whose success follows a direction of the base's features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, EMBED_DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    feats = shipped.model.features(x)
    w = np.random.default_rng(99).normal(size=feats.shape[1])
    z = (feats - feats.mean(0)) @ w
    p_true = 1 / (1 + np.exp(-3 * z / z.std()))
    y = (rng.random(n) < p_true).astype(float)
    rows = []
    for i in range(n):
        req = LoggedRequest(
            request_id=f"r{seed}-{i}",
            task_id=f"t{seed}-{i}",
            tenant="acme",
            key_id=None,
            policy="d",
            rule="default",
            backend="local",
            decision={"prediction": {"embedding": pack_vector(x[i]), "embedder": "fp"}},
            prediction=None,  # type: ignore[arg-type]
            prompt_tokens=10,
            completion_tokens=10,
            cost_usd=__import__("decimal").Decimal("0.000002"),
            unpriced=False,
            success=bool(y[i]),
            served_by="local",
        )
        rows.append(LabelledRequest(req, unpack_vector(pack_vector(x[i])), {"local": y[i]}))
    return rows, p_true


def test_fine_tune_learns_a_backend_the_base_mapping_misjudges(shipped: Any) -> None:
    train, _ = _synthetic(shipped, 600, seed=1)
    test, p_true = _synthetic(shipped, 400, seed=2)
    candidate, learned = fine_tune(shipped, train, min_labels=100)
    assert learned == ["local"]
    x = np.stack([r.vector for r in test])
    y = np.array([r.labels["local"] for r in test])
    p_new = np.array([p.p_success["local"] for p in candidate.predict_embeddings(x)])
    p_old = np.array(
        [p.p_success["mistralai/mixtral-8x7b-chat"] for p in shipped.predict_embeddings(x)]
    )
    brier_new = float(np.mean((p_new - y) ** 2))
    brier_old = float(np.mean((p_old - y) ** 2))
    assert brier_new < brier_old - 0.02, (brier_new, brier_old)
    assert np.corrcoef(p_new, p_true)[0, 1] > 0.5
    # the dataset profiles' abilities and the shared features are untouched
    j = shipped.model.profiles.index("gpt-4-1106-preview")
    for name in ("w", "c"):
        assert np.array_equal(candidate.model.arrays[name], shipped.model.arrays[name])
    assert np.array_equal(candidate.model.arrays["u"][j], shipped.model.arrays["u"][j])
    # the memory holds the logged queries too, labelled for 'local' only
    assert len(candidate.model.arrays["knn_x"]) == len(shipped.model.arrays["knn_x"]) + 600


def test_too_few_labels_learn_nothing_and_no_outcome_is_no_label(shipped: Any) -> None:
    rows, _ = _synthetic(shipped, 50, seed=3)
    _, learned = fine_tune(shipped, rows, min_labels=100)
    assert learned == []
    unknown = [r.request.__class__(**{**r.request.__dict__, "success": None}) for r in rows[:3]]
    rejected = r0 = rows[3].request
    rejected = r0.__class__(
        **{**r0.__dict__, "success": True, "rejected": ("local",), "served_by": "frontier"}
    )
    data = labelled_requests([*unknown, rejected], "fp")
    assert data.skipped == {"no outcome": 3}
    assert data.rows[0].labels == {"local": 0.0, "frontier": 1.0}
    other = labelled_requests([rejected], "another-space")
    assert other.rows == [] and other.skipped == {"embedding from another embedder": 1}
