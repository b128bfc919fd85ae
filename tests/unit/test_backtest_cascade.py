"""Dataset replays of the cascade objective: every call a plan makes is paid for, and the
answer kept is the one scored (``gateway.analytics.backtest.cascade``), on recorded answers
laid out like ``../shared/data/mmlu-pro/outputs_long.csv``."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from gateway.analytics.backtest import DatasetQuery, Recorded
from gateway.analytics.backtest.cascade import cascade_scorer
from policies.engine import decide
from policies.facts import BackendFacts, PredictionFacts, RequestFacts
from policies.schema import Policy
from predictors.verdict import FEATURES, VerdictModel

D = Decimal
COST = {"flash": D("0.001"), "deep": D("0.002"), "pro": D("0.1")}
MAPPING = {b: f"model-{b}" for b in COST}
BACKENDS = {b: BackendFacts(b, c / 1000, c / 1000) for b, c in COST.items()}
POLICY = Policy.model_validate(
    {
        "candidates": list(COST),
        "objective": {
            "kind": "cascade",
            "first": "flash",
            "check": "deep",
            "accept_confidence": 0.8,
            "skip_check_above": 0.95,
        },
        "predictor_fallback": "pro",
    }
)


@dataclass
class Table:
    name: str
    ids: list[str]
    models: list[str]


def data_dir(tmp_path: Path) -> Path:
    rows = [  # q-agree: the two cheap answers agree; q-disagree: they do not
        ("q-agree", "model-flash", "A", 120),
        ("q-agree", "model-deep", "A", 300),
        ("q-agree", "model-pro", "B", 900),
        ("q-disagree", "model-flash", "C", 80),
        ("q-disagree", "model-deep", "D", 310),
        ("q-disagree", "model-pro", "D", 700),
    ]
    (tmp_path / "mmlu-pro").mkdir()
    pd.DataFrame(rows, columns=["question_id", "model", "pred", "gen_chars"]).to_csv(
        tmp_path / "mmlu-pro" / "outputs_long.csv", index=False
    )
    return tmp_path


def query(qid: str, flash_ok: bool) -> DatasetQuery:
    ok = {"flash": flash_ok, "deep": False, "pro": not flash_ok}
    return DatasetQuery(
        qid,
        "prompt",
        100,
        PredictionFacts({"flash": 0.6, "deep": 0.6, "pro": 0.8}, "v"),
        {b: Recorded(COST[b], ok[b]) for b in COST},
    )


def agreement_verdict() -> VerdictModel:
    """Keep the first answer exactly when the check agrees with it."""
    w = np.zeros(len(FEATURES), dtype=np.float32)
    w[FEATURES.index("agree")] = 10.0
    return VerdictModel(w, -5.0)


def test_a_cascade_pays_for_every_call_and_scores_the_answer_it_keeps(tmp_path: Path) -> None:
    table = Table("mmlu-pro", ["q-agree", "q-disagree"], [MAPPING[b] for b in COST])
    score = cascade_scorer(table, MAPPING, agreement_verdict(), data_dir(tmp_path))  # type: ignore[arg-type]
    assert score is not None
    req = RequestFacts(est_prompt_tokens=100, max_tokens=100)
    rows = {}
    for q in (query("q-agree", True), query("q-disagree", False)):
        decision = decide(POLICY, "cascade", req, BACKENDS, q.prediction, rule="t")
        assert decision.backend == "flash" and decision.cascade is not None
        rows[q.id] = score(q, decision, "cascade", "t")
    # agreement: first + check paid, the first (right) answer kept
    assert rows["q-agree"].backend == "flash" and rows["q-agree"].success == 1.0
    assert rows["q-agree"].cost_usd == COST["flash"] + COST["deep"]
    # disagreement: escalated, all three calls paid, the escalation tier's answer scored
    assert rows["q-disagree"].backend == "pro" and rows["q-disagree"].success == 1.0
    assert rows["q-disagree"].cost_usd == sum(COST.values())


def test_without_a_verdict_model_every_cascade_escalates(tmp_path: Path) -> None:
    table = Table("mmlu-pro", ["q-agree"], [MAPPING[b] for b in COST])
    score = cascade_scorer(table, MAPPING, None, data_dir(tmp_path))  # type: ignore[arg-type]
    assert score is not None
    q = query("q-agree", True)
    req = RequestFacts(est_prompt_tokens=100, max_tokens=100)
    row = score(q, decide(POLICY, "cascade", req, BACKENDS, q.prediction, rule="t"), "c", "t")
    assert row.backend == "pro" and row.cost_usd == COST["flash"] + COST["pro"]
    assert row.success == 0.0


def test_a_dataset_without_closed_form_answers_has_no_cascade_scorer() -> None:
    table = Table("alpacaeval", ["1"], [MAPPING[b] for b in COST])
    assert cascade_scorer(table, MAPPING, None) is None  # type: ignore[arg-type]


def test_a_cascade_check_is_never_the_answer_served() -> None:
    from gateway.analytics.backtest.store_load import answered

    first = {"status": "ok", "decision": {"backend": "mini", "cascade": {"first": "mini"}}}
    check = {"status": "ok", "decision": {"cascade": {"action": "check", "verdict": 0.5}}}
    escalation = {"status": "ok", "decision": {"cascade": {"action": "escalate"}}}
    plain = {"status": "ok", "decision": None}
    assert answered(first) and answered(escalation) and answered(plain)
    assert not answered(check)
    assert not answered({"status": "error", "decision": None})
    tries = [first, check]  # check, accept: the first answer was served
    assert next(r for r in reversed(tries) if answered(r)) is first


def test_a_refit_keeps_the_artifacts_cascade_verdict() -> None:
    import numpy as np

    from predictors.fitting import with_verdict
    from predictors.outcome_model import OutcomeModel
    from predictors.verdict import FEATURES, VerdictModel

    w = np.arange(len(FEATURES), dtype=np.float32)
    base = OutcomeModel(["a"], {"a": np.zeros(1, np.float32), **VerdictModel(w, 0.5).to_arrays()})
    refit = OutcomeModel(["a", "b"], {"a": np.ones(2, np.float32)})
    kept = with_verdict(refit, base)
    verdict = VerdictModel.from_arrays(kept.arrays)
    assert verdict is not None and verdict.bias == 0.5
    np.testing.assert_array_equal(verdict.weights, w)
    assert kept.profiles == ["a", "b"] and kept.arrays["a"].shape == (2,)
    assert with_verdict(refit, OutcomeModel(["a"], {})) is refit  # nothing to keep
