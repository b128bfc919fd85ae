"""``tollgate policy backtest`` and ``tollgate route explain`` through the real CLI app: a small
RouterBench replay with the shipped predictor, one-prompt explanations, and a store replay of
traffic served by the gateway (fake backends and predictor) with client feedback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gateway.cli.main import app
from predictors.datasets import default_data_dir
from tests.support.fakes import FakePredictor
from tests.support.harness import app_client, backend, chat_body, create_key, settings_for

pytestmark = pytest.mark.integration

DATA = default_data_dir()
needs_routerbench = pytest.mark.skipif(
    not (DATA / "routerbench").is_dir(), reason=f"no RouterBench data at {DATA}"
)


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    return result


def cheapest(min_success: float, candidates: list[str]) -> dict[str, Any]:
    return {
        "candidates": candidates,
        "objective": {
            "kind": "cheapest_adequate",
            "min_success": min_success,
            "on_no_adequate": "most_capable",
        },
        "predictor_fallback": candidates[0],
    }


def write(path: Path, data: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


# -- dataset replay ----------------------------------------------------------------------------
ROUTERBENCH_BACKENDS = [
    # explicit prices: no litellm catalog lookup needed
    backend(
        "small",
        profile="mistralai/mistral-7b-chat",
        input_cost_per_token="0.0000002",
        output_cost_per_token="0.0000002",
    ),
    backend(
        "mid",
        profile="gpt-3.5-turbo-1106",
        input_cost_per_token="0.000001",
        output_cost_per_token="0.000002",
    ),
    backend(
        "big",
        profile="gpt-4-1106-preview",
        input_cost_per_token="0.00001",
        output_cost_per_token="0.00003",
    ),
    backend("elsewhere", profile="not-in-routerbench"),
]


def routerbench_config(tmp_path: Path) -> str:
    names = ["small", "mid", "big", "elsewhere"]
    return write(
        tmp_path / "config.yaml",
        {
            "backends": ROUTERBENCH_BACKENDS,
            "policies": {"default": cheapest(0.5, names)},
            "routing": {"default": "default"},
        },
    )


@needs_routerbench
def test_backtest_on_routerbench(tmp_path: Path) -> None:
    cfg = routerbench_config(tmp_path)
    candidate = write(
        tmp_path / "candidate.yaml",
        {
            "policies": {"default": cheapest(0.9, ["small", "mid", "big", "elsewhere"])},
            "routing": {"default": "default"},
        },
    )
    args = ("policy", "backtest", "--policy", candidate, "--on", "routerbench", "--limit", "25")
    result = run(*args, "--config", cfg, "--json", "--rows")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["source"] == "routerbench" and data["in_sample"] is True
    cur, cand = data["current"], data["candidate"]
    assert cur["requests"] == cand["requests"] == 25 == len(data["rows"])
    assert cur["unknown"] == cand["unknown"] == 0  # every choice has a recorded outcome
    assert "elsewhere" not in cur["mix"] and "elsewhere" not in cand["mix"]
    # a higher bar buys a more expensive mix and at least as many successes
    assert float(cand["spend_usd"]) >= float(cur["spend_usd"])
    assert cand["mix"].get("big", 0) >= cur["mix"].get("big", 0)
    assert {"spend_usd", "success_rate", "cost_per_successful_task_usd"} <= set(data["difference"])
    assert any(n.startswith("IN-SAMPLE") for n in data["notes"])
    assert any("elsewhere" in n and "unavailable" in n for n in data["notes"])
    # recorded cost of the chosen model, straight from the dataset
    for row in data["rows"]:
        assert row["current"]["success"] in (0.0, 1.0) and not row["candidate"]["estimated"]

    table = run(*args, "--config", cfg)
    assert table.exit_code == 0, table.output
    for text in ("spend $", "success rate", "$ / successful task", "backend mix", "IN-SAMPLE"):
        assert text in table.stdout


def test_backtest_reports_candidate_errors_with_file_and_line(tmp_path: Path) -> None:
    cfg = routerbench_config(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "policies:\n  default:\n    candidates: [small, typo]\n"
        "    objective: {kind: cheapest_adequate, min_success: 0.5}\n"
        "    predictor_fallback: small\nrouting: {default: default}\n"
    )
    result = run("policy", "backtest", "--policy", str(bad), "--on", "routerbench", "--config", cfg)
    assert result.exit_code == 1
    assert f"{bad}:3: policies.default.candidates" in result.output and "typo" in result.output


def test_route_explain(tmp_path: Path) -> None:
    cfg = routerbench_config(tmp_path)
    result = run("route", "explain", "What is 2 + 2?", "--config", cfg, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"backend", "candidates", "reason"} <= set(data)
    assert data["backend"] in {"small", "mid", "big"}
    rows = {r["name"]: r for r in data["candidates"]}
    assert rows["elsewhere"]["removed_by"] is None or rows["elsewhere"]["p_success"] is None
    assert all(rows[n]["p_success"] is not None for n in ("small", "mid", "big"))

    # without a predictor the policy's predictor_fallback decides (and the table says so)
    no_predictor = yaml.safe_load(Path(cfg).read_text())
    no_predictor["predictor"] = {"enabled": False}
    cfg2 = write(tmp_path / "no-predictor.yaml", no_predictor)
    table = run("route", "explain", "What is 2 + 2?", "--config", cfg2, "--policy", "default")
    assert table.exit_code == 0, table.output
    assert "policy     default@" in table.stdout and "predictor  none" in table.stdout
    chosen = [line.split()[1] for line in table.stdout.splitlines() if line.startswith("*")]
    assert chosen == ["small"]  # predictor_fallback: small
    unknown = run("route", "explain", "hi", "--config", cfg, "--policy", "nope")
    assert unknown.exit_code == 2 and "unknown policy" in unknown.output


def test_backtest_and_explain_read_config_and_data_dir_from_the_environment(
    tmp_path: Path,
) -> None:
    """The CLIs take $TOLLGATE_CONFIG and $TOLLGATE_DATA_DIR through gateway.settings."""
    cfg = routerbench_config(tmp_path)
    candidate = write(
        tmp_path / "candidate.yaml", {"policies": {"default": cheapest(0.9, ["small", "big"])}}
    )
    missing = tmp_path / "no-data-here"
    env = {"TOLLGATE_CONFIG": cfg, "TOLLGATE_DATA_DIR": str(missing)}
    result = run("policy", "backtest", "--policy", candidate, "--on", "routerbench", env=env)
    assert result.exit_code == 2 and str(missing) in result.output
    unknown = run("route", "explain", "hi", "--policy", "nope", env={"TOLLGATE_CONFIG": cfg})
    assert unknown.exit_code == 2 and f"{cfg}: unknown policy 'nope'" in unknown.output


# -- store replay ------------------------------------------------------------------------------
P = {"local": 0.5, "mini": 0.8, "frontier": 0.95}
STORE_CANDIDATES = ["local", "mini", "frontier"]


def store_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "backends": [
            backend("local", input_cost_per_token="0.0000001", output_cost_per_token="0.0000001"),
            backend("mini", input_cost_per_token="0.000001", output_cost_per_token="0.000002"),
            backend("frontier", input_cost_per_token="0.00001", output_cost_per_token="0.00003"),
        ],
        "policies": {"default": cheapest(0.7, STORE_CANDIDATES)},
        "routing": {"default": "default"},
        "predictor": {"enabled": True, "timeout_ms": 200},
        "store": {"spool_dir": str(tmp_path / "spool"), "flush_interval_ms": 20},
    }


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_backtest_on_logged_traffic(tmp_path: Path, store: str, request: Any) -> None:
    url = str(request.getfixturevalue("sqlite_url" if store == "sqlite" else "pg_url"))
    config = store_config(tmp_path)
    with app_client(settings_for(config, url), predictor=FakePredictor(P)) as (client, _):
        key = create_key(client)
        auth = {"authorization": f"Bearer {key}"}
        rids = []
        for i in range(4):
            resp = client.post(
                "/v1/chat/completions",
                json=chat_body(model="auto", text=f"question number {i} please"),
                headers=auth,
            )
            assert resp.status_code == 200 and resp.headers["x-tollgate-backend"] == "mini"
            rids.append(resp.headers["x-tollgate-request-id"])
        pinned = client.post("/v1/chat/completions", json=chat_body(model="local"), headers=auth)
        assert pinned.status_code == 200  # no policy decision: not replayable
        for rid, ok in ((rids[0], True), (rids[1], False)):
            fb = client.post("/v1/feedback", json={"request_id": rid, "success": ok}, headers=auth)
            assert fb.status_code in (200, 201), fb.text
    cfg = write(tmp_path / "config.yaml", config)
    env = {"TOLLGATE_DATABASE_URL": url}

    strict = write(
        tmp_path / "strict.yaml",
        {"policies": {"default": cheapest(0.9, STORE_CANDIDATES)}},  # routing: the config's
    )
    result = run(
        "policy",
        "backtest",
        "--policy",
        strict,
        "--on",
        "store",
        "--config",
        cfg,
        "--json",
        "--rows",
        env=env,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    cur, cand = data["current"], data["candidate"]
    assert cur["requests"] == cand["requests"] == 4
    assert cur["mix"] == {"mini": 4} and cur["estimated_rows"] == 0
    assert (cur["succeeded"], cur["failed"], cur["unknown"]) == (1, 1, 2)
    # frontier was never called: every candidate row is estimated from the predictor
    assert cand["mix"] == {"frontier": 4}
    assert cand["estimated_rows"] == 4 and cand["estimate"] == "estimated (predictor)"
    assert cand["succeeded"] == pytest.approx(4 * 0.95) and cand["unknown"] == 0
    assert float(cand["spend_usd"]) > float(cur["spend_usd"]) > 0
    assert all(r["candidate"]["estimated"] for r in data["rows"])
    assert any("pinned backend" in n for n in data["notes"])
    assert any("routing" in n for n in data["notes"])  # inherited from the config

    same = write(
        tmp_path / "same.yaml", {"policies": config["policies"], "routing": config["routing"]}
    )
    result = run(
        "policy", "backtest", "--policy", same, "--on", "store", "--config", cfg, "--json", env=env
    )
    data = json.loads(result.stdout)
    assert data["candidate"]["estimated_rows"] == 0 and data["changed_choices"] == 0
    assert data["candidate"]["spend_usd"] == data["current"]["spend_usd"]
    assert (
        data["difference"]["spend_usd"]["abs"] == "0E-12"
        or float(data["difference"]["spend_usd"]["abs"]) == 0
    )

    table = run("policy", "backtest", "--policy", strict, "--on", "store", "--config", cfg, env=env)
    assert table.exit_code == 0, table.output
    assert "estimated (predictor)" in table.stdout and "candidate*" in table.stdout
