"""The ``predictor`` CLI's score command and runtime profile mapping, with the real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli.predictor import app
from predictors.datasets import default_data_dir, read_routerbench
from predictors.service import fit_profile, load_artifact


def test_score_writes_one_line_per_input(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    out = tmp_path / "out.jsonl"
    inp.write_text(
        json.dumps({"id": 1, "prompt": "What is 2 + 2?"})
        + "\n\n"
        + json.dumps({"id": "q2", "prompt": "Prove that there are infinitely many primes."})
        + "\n"
    )
    result = CliRunner().invoke(app, ["score", "--input", str(inp), "--output", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == [1, "q2"]
    profiles = load_artifact().profiles
    for x in lines:
        assert set(x) == {"id", "complexity", "p_success"}
        assert 0.0 <= x["complexity"] <= 1.0
        assert list(x["p_success"]) == profiles
        assert all(0.0 < v < 1.0 for v in x["p_success"].values())
    assert "gpt-4-1106-preview" in lines[0]["p_success"]


def test_score_rejects_bad_lines(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": 1}\n')
    result = CliRunner().invoke(
        app, ["score", "--input", str(inp), "--output", str(tmp_path / "o")]
    )
    assert result.exit_code != 0


def test_alias_maps_an_unknown_backend_to_a_known_profile() -> None:
    pred = load_artifact().with_alias("my-local-mixtral", "mistralai/mixtral-8x7b-chat")
    (p,) = pred.predict_batch(["Write a function to reverse a list."])
    assert p.p_success["my-local-mixtral"] == p.p_success["mistralai/mixtral-8x7b-chat"]
    assert "my-local-mixtral" in pred.profiles
    with pytest.raises(KeyError):
        pred.with_alias("x", "no-such-profile")


@pytest.mark.skipif(not default_data_dir().is_dir(), reason="../shared/data is not available")
def test_fit_profile_from_labelled_outcomes() -> None:
    t = read_routerbench(files=("mbpp", "winogrande"), nrows=120)
    base = load_artifact()
    pred = fit_profile(
        base, "new-backend", list(t.prompts), list(t.outcome["claude-v2"]), min_examples=100
    )
    assert "new-backend" in pred.profiles and "new-backend" not in base.profiles
    probs = [p.p_success["new-backend"] for p in pred.predict_batch(list(t.prompts))]
    # claude-v2 fails winogrande far more often than mbpp; the fitted profile learns that
    mbpp = [p for p, g in zip(probs, t.groups, strict=True) if g == "mbpp"]
    wino = [p for p, g in zip(probs, t.groups, strict=True) if g == "winogrande"]
    rate = t.outcome["claude-v2"].groupby(t.groups).mean()
    assert (sum(mbpp) / len(mbpp) > sum(wino) / len(wino)) == (rate["mbpp"] > rate["winogrande"])
    with pytest.raises(ValueError):
        fit_profile(base, "x", ["a"], [1.0])


def test_a_prediction_does_not_depend_on_its_batch_mates() -> None:
    pred = load_artifact()
    prompts = ["hi", "Write a function to sort a list." * 20, "What is the capital of France?"]
    together = pred.predict_batch(prompts)
    alone = [pred.predict_batch([p])[0] for p in prompts]
    for t, a in zip(together, alone, strict=True):  # equal up to float rounding in the head
        assert t.complexity == pytest.approx(a.complexity, abs=1e-6)
        assert dict(t.p_success) == pytest.approx(dict(a.p_success), abs=1e-6)
