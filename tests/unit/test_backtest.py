"""Backtest logic on small synthetic data: dataset replays scored with recorded outcomes, store
replays with estimated rows flagged, aggregates, candidate-file validation and rule replay."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.analytics.backtest import (
    ESTIMATED,
    DatasetQuery,
    LoggedRequest,
    Recorded,
    Replayed,
    Summary,
    backend_facts,
    load_candidate,
    map_backends,
    replay_dataset,
    replay_select,
    replay_store,
    sample_ids,
    stored_prediction,
)
from gateway.config import Config, ConfigError
from gateway.pricing import Price
from policies import PolicySet, PolicySource, PredictionFacts, RequestFacts, load_policy_set

BACKENDS = ("cheap", "mid", "premium")
PRICES = {
    "cheap": Price(Decimal("0.000001"), Decimal("0.000001"), "config"),
    "mid": Price(Decimal("0.00001"), Decimal("0.00001"), "config"),
    "premium": Price(Decimal("0.0001"), Decimal("0.0001"), "config"),
}


def config(**extra: Any) -> Config:
    data: dict[str, Any] = {
        "backends": [
            {
                "name": name,
                "model": f"openai/{name}",
                "input_cost_per_token": str(PRICES[name].input_per_token),
                "output_cost_per_token": str(PRICES[name].output_per_token),
                "profile": f"model-{name}",
                "capabilities": ["streaming", "tools"] if name != "cheap" else ["streaming"],
            }
            for name in BACKENDS
        ],
        "policies": {"default": cheapest(0.5)},
        "routing": {"default": "default"},
    }
    data.update(extra)
    return Config.model_validate(data)


def cheapest(min_success: float, **kw: Any) -> dict[str, Any]:
    return {
        "candidates": list(BACKENDS),
        "objective": {
            "kind": "cheapest_adequate",
            "min_success": min_success,
            "on_no_adequate": "most_capable",
        },
        "predictor_fallback": "cheap",
        **kw,
    }


def policy_set(policies: dict[str, Any], rules: list[Any] | None = None) -> PolicySet:
    doc = {"policies": policies, "routing": {"default": next(iter(policies)), "rules": rules or []}}
    return load_policy_set([PolicySource("test", doc)], BACKENDS)


def prediction(cheap: float, mid: float, premium: float) -> PredictionFacts:
    return PredictionFacts(
        {"model-cheap": cheap, "model-mid": mid, "model-premium": premium}, "test-predictor"
    )


def recorded(cheap: bool, mid: bool, premium: bool) -> dict[str, Recorded]:
    return {
        "cheap": Recorded(Decimal("0.001"), cheap),
        "mid": Recorded(Decimal("0.01"), mid),
        "premium": Recorded(Decimal("0.1"), premium),
    }


def queries() -> list[DatasetQuery]:
    # easy: everyone right; medium: cheap fails; hard: only premium is right
    easy = DatasetQuery("easy", "2+2?", 2, prediction(0.9, 0.95, 0.99), recorded(True, True, True))
    medium = DatasetQuery(
        "medium", "prove it", 3, prediction(0.6, 0.85, 0.95), recorded(False, True, True)
    )
    hard = DatasetQuery(
        "hard", "a theorem", 3, prediction(0.55, 0.7, 0.92), recorded(False, False, True)
    )
    return [easy, medium, hard]


def facts() -> dict[str, Any]:
    return backend_facts(config(), PRICES)


def test_raising_min_success_spends_more_and_succeeds_more() -> None:
    current = policy_set({"default": cheapest(0.5)})
    candidate = policy_set({"default": cheapest(0.9)})
    result = replay_dataset(queries(), facts(), current, candidate, source="synthetic")
    a, b = result.current.summary, result.candidate.summary
    # current: cheap everywhere (P >= 0.5) -> 1 of 3 right for $0.003
    assert [r.backend for r in result.current.rows] == ["cheap", "cheap", "cheap"]
    assert a.spend_usd == Decimal("0.003") and a.succeeded == 1 and a.failed == 2
    # candidate: cheap (0.9), premium (0.95), premium (0.92) -> 3 of 3 for $0.201
    assert [r.backend for r in result.candidate.rows] == ["cheap", "premium", "premium"]
    assert b.spend_usd == Decimal("0.201") and b.succeeded == 3
    assert b.spend_usd > a.spend_usd and b.success_rate > a.success_rate  # type: ignore[operator]
    assert a.cost_per_success == Decimal("0.003") and b.cost_per_success == Decimal("0.067")
    assert b.mix == {"premium": 2, "cheap": 1} and a.estimated == b.estimated == 0
    diff = result.diff()
    assert diff["spend_usd"]["abs"] == "0.198000000000" and diff["spend_usd"]["pct"] == 6600.0
    assert diff["success_rate"]["abs"] == pytest.approx(2 / 3, abs=1e-6)
    assert result.changed == 2
    data = result.to_dict(rows=True)
    assert data["candidate"]["estimate"] is None and len(data["rows"]) == 3


def test_dataset_replay_uses_routing_rules_and_unhealthy_backends() -> None:
    current = policy_set({"default": cheapest(0.5)})
    candidate = policy_set(
        {"default": cheapest(0.5), "best": cheapest(0.99)},
        rules=[{"name": "proofs", "match": {"prompt_regex": "prove"}, "policy": "best"}],
    )
    # premium is not in the dataset: it is unhealthy for the replay and never chosen
    replay_facts = backend_facts(config(), PRICES, healthy={"premium": False})
    result = replay_dataset(queries(), replay_facts, current, candidate, source="synthetic")
    rows = {r.id: r for r in result.candidate.rows}
    assert rows["medium"].policy == "best" and rows["medium"].rule == "proofs"
    # nobody reaches 0.99 without premium: most_capable among the eligible -> mid
    assert rows["medium"].backend == "mid" and rows["medium"].success == 1.0
    assert rows["easy"].rule == "default" and rows["easy"].backend == "cheap"


def test_refused_requests_fail_at_no_cost_and_unknown_outcomes_are_not_successes() -> None:
    refuse = {
        "candidates": ["premium"],
        "objective": {"kind": "cheapest_adequate", "min_success": 0.999, "on_no_adequate": "error"},
        "predictor_fallback": "premium",
    }
    unknown = DatasetQuery(
        "nan",
        "q",
        1,
        prediction(0.9, 0.9, 0.9),
        {**recorded(True, True, True), "cheap": Recorded(None, None)},
    )
    result = replay_dataset(
        [*queries(), unknown],
        facts(),
        policy_set({"default": cheapest(0.5)}),
        policy_set({"default": refuse}),
        source="synthetic",
    )
    a, b = result.current.summary, result.candidate.summary
    assert b.served == 0 and b.spend_usd == 0 and b.succeeded == 0 and b.failed == 4
    assert {r.error for r in result.candidate.rows} == {"no_adequate_candidate"}
    # current: cheap everywhere; its answer to "nan" was not recorded: unknown, not a success
    assert a.unknown == 1 and a.unpriced == 1 and a.succeeded == 1 and a.failed == 2
    assert a.success_rate == pytest.approx(1 / 3)


def logged(
    rid: str, backend: str, p: PredictionFacts, *, success: bool | None, rule: str = "default"
) -> LoggedRequest:
    return LoggedRequest(
        request_id=rid,
        task_id=f"task-{rid}",
        tenant="acme",
        key_id="k1",
        policy="default",
        rule=rule,
        backend=backend,
        decision={"backend": backend, "candidates": []},
        prediction=p,
        prompt_tokens=100,
        completion_tokens=50,
        cost_usd=PRICES[backend].cost(100, 50),
        unpriced=False,
        success=success,
    )


def test_store_replay_flags_estimated_rows() -> None:
    traffic = [
        logged("r1", "cheap", prediction(0.9, 0.95, 0.99), success=True),  # candidate: same
        logged("r2", "cheap", prediction(0.6, 0.8, 0.95), success=False),  # -> premium (est.)
        logged("r3", "cheap", prediction(0.6, 0.8, 0.95), success=None),  # -> premium (est.)
    ]
    result = replay_store(traffic, facts(), policy_set({"default": cheapest(0.9)}))
    cur, cand = result.current.rows, result.candidate.rows
    assert [r.backend for r in cand] == ["cheap", "premium", "premium"]
    assert [r.estimated for r in cand] == [False, True, True]
    # recorded cost and outcome where the called backend is picked again
    assert cand[0].cost_usd == cur[0].cost_usd and cand[0].success == 1.0
    # estimated: recorded tokens x premium's price, success = predicted P(success)
    assert cand[1].cost_usd == Decimal("0.0150") and cand[1].success == pytest.approx(0.95)
    a, b = result.current.summary, result.candidate.summary
    assert a.unknown == 1 and a.succeeded == 1 and a.failed == 1  # unknown: never a success
    assert b.estimated == 2 and b.unknown == 0
    assert b.succeeded == pytest.approx(1 + 0.95 + 0.95)
    assert result.to_dict()["candidate"]["estimate"] == ESTIMATED
    assert result.to_dict()["current"]["estimate"] is None


def test_store_replay_estimates_from_expected_cost_without_tokens() -> None:
    req = logged("r1", "cheap", prediction(0.6, 0.8, 0.95), success=True)
    req = LoggedRequest(**{**req.__dict__, "prompt_tokens": None, "completion_tokens": None})
    result = replay_store([req], facts(), policy_set({"default": cheapest(0.9)}))
    (row,) = result.candidate.rows
    # the decision's expected cost: 0 prompt tokens + 256 typical output tokens at premium
    assert row.estimated and row.cost_usd == Decimal(256) * Decimal("0.0001")


def test_store_replay_keeps_logged_health_and_rules() -> None:
    req = logged("r1", "mid", prediction(0.95, 0.95, 0.99), success=True, rule="tool-use")
    req = LoggedRequest(
        **{
            **req.__dict__,
            "decision": {
                "backend": "mid",
                "candidates": [{"name": "cheap", "removed_by": "health"}],
            },
        }
    )
    candidate = policy_set(
        {"default": cheapest(0.5), "tools": cheapest(0.5)},
        rules=[{"name": "tool-use", "match": {"has_tools": True}, "policy": "tools"}],
    )
    result = replay_store([req], facts(), candidate)
    (row,) = result.candidate.rows
    # the rule on tools cannot be re-evaluated: it matched as logged; cheap was down then
    assert row.policy == "tools" and row.rule == "tool-use"
    assert row.backend == "mid" and not row.estimated


def test_replay_select_evaluates_stored_conditions_only() -> None:
    ps = policy_set(
        {"default": cheapest(0.5), "vip": cheapest(0.9), "json": cheapest(0.7)},
        rules=[
            {"name": "json", "match": {"json_mode": True}, "policy": "json"},
            {"name": "vip", "match": {"tenants": ["acme"]}, "policy": "vip"},
        ],
    )
    acme = RequestFacts(tenant="acme")
    assert replay_select(ps, acme, "default", "default") == ("vip", "vip")
    assert replay_select(ps, acme, "json", "json") == ("json", "json")
    assert replay_select(ps, RequestFacts(tenant="other"), "vip", "x") == ("default", "default")
    assert replay_select(ps, acme, "model", "json") == ("json", "model")


def test_summary_of_expected_counts() -> None:
    rows = [
        Replayed("a", "p", "default", "x", Decimal("1"), 1.0),
        Replayed("b", "p", "default", "y", Decimal("1"), 0.25, estimated=True),
        Replayed("c", "p", "default", "y", Decimal("2"), None),
    ]
    s = Summary.of(rows)
    assert s.succeeded == 1.25 and s.failed == 0.75 and s.unknown == 1
    assert s.success_rate == pytest.approx(1.25 / 2)
    assert s.cost_per_success == Decimal("4") / Decimal("1.25")
    assert s.mix == {"y": 2, "x": 1} and s.estimated == 1
    assert Summary.of([]).success_rate is None and Summary.of([]).cost_per_success is None


def test_stored_prediction() -> None:
    p = stored_prediction(
        {"predictor_version": "v1", "prediction": {"complexity": 0.2, "p_success": {"a": 0.5}}}
    )
    assert p is not None and p.p_success == {"a": 0.5} and p.predictor_version == "v1"
    assert stored_prediction({"backend": "a"}) is None
    assert stored_prediction({"prediction": {"p_success": {"a": 7}}}) is None


def test_map_backends_and_sample() -> None:
    cfg = config()
    mapping, missing = map_backends(cfg, ["model-cheap", "model-premium"])
    assert mapping == {"cheap": "model-cheap", "premium": "model-premium"}
    assert missing == ["mid (profile 'model-mid' is not in the dataset)"]
    mapping, missing = map_backends(cfg, ["model-cheap", "other"], {"mid": "other"})
    assert mapping == {"cheap": "model-cheap", "mid": "other"} and len(missing) == 1
    ids = [str(i) for i in range(100)]
    assert sample_ids(ids, 10, 0) == sample_ids(ids, 10, 0) and len(sample_ids(ids, 10)) == 10
    assert sample_ids(ids, None) == ids


def test_load_candidate_validates_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = (
        "policies:\n"
        "  default:\n"
        "    candidates: [cheap, nowhere]\n"
        "    objective: {kind: cheapest_adequate, min_success: 0.5}\n"
        "    predictor_fallback: cheap\n"
        "routing:\n"
        "  default: default\n"
    )
    bad.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_candidate(bad, config())
    assert f"{bad}:3: policies.default.candidates" in str(info.value)
    assert "nowhere" in str(info.value)
    bad.write_text(text.replace("nowhere", "mid").replace("0.5", "1.5"))
    with pytest.raises(ConfigError) as info:
        load_candidate(bad, config())
    assert f"{bad}:4: policies.default.objective.min_success" in str(info.value)

    extra = tmp_path / "extra.yaml"
    extra.write_text("policies: {}\nbackends: []\n")
    with pytest.raises(ConfigError) as info:
        load_candidate(extra, config())
    assert f"{extra}:2: backends" in str(info.value)

    good = tmp_path / "good.yaml"
    good.write_text(
        "policies:\n  default:\n    candidates: [cheap, premium]\n"
        "    objective: {kind: cheapest_adequate, min_success: 0.9}\n"
        "    predictor_fallback: cheap\n"
    )
    loaded = load_candidate(good, config())  # no routing: the config's applies
    assert loaded.policy_set.routing.default == "default"
    assert loaded.notes and "routing" in loaded.notes[0]


def test_included_and_candidate_policy_files_are_read_alike(tmp_path: Path) -> None:
    """One reader (gateway.config.policy_file) for a config's includes and backtest candidates:
    the same mistake gets the same located error from both."""
    from gateway.config import load_config

    extra = tmp_path / "extra.yaml"
    extra.write_text("policies: {}\nbackends: []\n")
    main = tmp_path / "config.yaml"
    main.write_text(
        "backends:\n  - {name: cheap, model: openai/cheap, input_cost_per_token: 0.000001,"
        " output_cost_per_token: 0.000001}\ninclude: [extra.yaml]\n"
    )
    with pytest.raises(ConfigError) as included:
        load_config(main)
    with pytest.raises(ConfigError) as candidate:
        load_candidate(extra, config())
    assert [str(i) for i in included.value.issues] == [str(i) for i in candidate.value.issues]
    assert str(candidate.value).startswith(f"{extra}:2: backends: a policy file may only hold")

    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    main.write_text(main.read_text().replace("extra.yaml", "scalar.yaml"))
    for load in (lambda: load_config(main), lambda: load_candidate(scalar, config())):
        with pytest.raises(ConfigError, match="must be a YAML mapping"):
            load()
