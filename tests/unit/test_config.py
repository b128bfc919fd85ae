"""Config schema and loader: every error names the YAML path and line; env overrides."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, load_config_text, load_settings

MINIMAL = """\
backends:
  - name: local
    model: openai/some-model          # any litellm model string
    api_base: http://127.0.0.1:9000/v1
    api_key: os.environ/LOCAL_KEY
    input_cost_per_token: 0.0000002   # optional price override, USD
    output_cost_per_token: 0.0000006
"""


def test_minimal_backend_entry_from_the_issue_is_accepted() -> None:
    cfg = load_config_text(MINIMAL)
    (b,) = cfg.backends
    assert b.api_key is not None and b.api_key.env == "LOCAL_KEY"
    assert b.input_cost_per_token == Decimal("0.0000002") and b.is_local


def issues(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "c.yaml")
    return [(i.path, i.line, i.message) for i in info.value.issues]


def test_errors_carry_path_and_line() -> None:
    found = issues(
        MINIMAL.replace("api_key: os.environ/LOCAL_KEY", "api_key: sk-plaintext")
        + "    colour: red\n    timeout_s: 0\n"
    )
    assert ("backends[0].api_key", 5) == found[0][:2] and "os.environ/NAME" in found[0][2]
    paths = {(p, line) for p, line, _ in found}
    assert ("backends[0].colour", 8) in paths and ("backends[0].timeout_s", 9) in paths


POLICY = """\
policies:
  p:
    candidates: [local, ghost]
    objective: {kind: cheapest_adequate, min_success: 0.5}
    predictor_fallback: first_candidate
routing:
  default: p
  rules:
    - {match: {has_tools: true}, policy: nope}
aliases:
  auto: tollgate/missing
"""


def test_cross_reference_errors_are_located() -> None:
    found = issues(MINIMAL + POLICY)
    by_path = {p: (line, m) for p, line, m in found}
    assert (
        by_path["policies.p.candidates[1]"][0] == 10
        and "ghost" in by_path["policies.p.candidates[1]"][1]
    )
    assert by_path["routing.rules[0].policy"][0] == 16
    assert "aliases.auto" in by_path


def test_policy_schema_errors_name_yaml_paths() -> None:
    bad = POLICY.replace("min_success: 0.5", "min_success: 5").replace("ghost", "local2")
    found = issues(MINIMAL + bad)
    assert ("policies.p.objective.min_success", 11) in {(p, line) for p, line, _ in found}


def test_policies_from_included_files(tmp_path: Path) -> None:
    (tmp_path / "extra.yaml").write_text(
        "policies:\n  q:\n    candidates: [local]\n"
        "    objective: {kind: cheapest_adequate, min_success: 2}\n"
        "    predictor_fallback: first_candidate\n"
    )
    main = tmp_path / "config.yaml"
    main.write_text(
        MINIMAL
        + "include: [extra.yaml]\n"
        + POLICY.replace("[local, ghost]", "[local]")
        .replace("policy: nope", "policy: q")
        .replace("tollgate/missing", "tollgate/q")
    )
    with pytest.raises(ConfigError) as info:
        load_config(main)
    (issue,) = info.value.issues
    assert issue.source.endswith("extra.yaml") and issue.line == 4
    assert issue.path == "policies.q.objective.min_success"
    (tmp_path / "extra.yaml").write_text(
        (tmp_path / "extra.yaml").read_text().replace("min_success: 2", "min_success: 0.2")
    )
    cfg = load_config(main)
    assert cfg.policy_set is not None and set(cfg.policy_set.policies) == {"p", "q"}


def test_yaml_syntax_error_has_line() -> None:
    (issue,) = issues("backends:\n  - name: a\n    model: [unclosed\n")
    assert issue[1] is not None and issue[1] >= 3


def test_duplicate_backend_and_half_prices() -> None:
    text = MINIMAL + "  - name: local\n    model: openai/x\n    input_cost_per_token: 1\n"
    found = issues(text)
    messages = " ".join(m for _, _, m in found)
    assert "both input_cost_per_token and output_cost_per_token" in messages


def test_shipped_config_is_valid() -> None:
    cfg = load_config(Path(__file__).resolve().parents[2] / "config.yaml")
    assert {b.name for b in cfg.backends} >= {"local-moe", "premium-api"}
    local = cfg.backend("local-moe")
    assert local is not None and local.self_hosted is not None


def test_environment_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL)
    env = {
        "TOLLGATE_DATABASE_URL": "postgresql://u@h/db",
        "TOLLGATE_REDIS_URL": "redis://r:1/0",
        "TOLLGATE_ADMIN_KEY": "admin-zq9",
    }
    s = load_settings(str(path), environ=env)
    assert (s.database_url, s.redis_url, s.admin_key) == (
        "postgresql://u@h/db",
        "redis://r:1/0",
        "admin-zq9",
    )
    assert "admin-zq9" not in repr(s)


JUDGE = """\
judge:
  backend: ghost
  sample: 1.5
  policies: [p, nope]
"""


def test_judge_errors_are_located() -> None:
    policy = POLICY.replace("[local, ghost]", "[local]").replace("policy: nope", "policy: p")
    policy = policy.replace("tollgate/missing", "tollgate/p")
    found = issues(MINIMAL + policy + JUDGE)
    by_path = {p: (line, m) for p, line, m in found}
    assert set(by_path) == {"judge.sample"}, found  # the field error comes first
    assert (
        by_path["judge.sample"][0] == 21 and "less than or equal to 1" in by_path["judge.sample"][1]
    )

    found = issues(MINIMAL + policy + JUDGE.replace("1.5", "0.5"))
    by_path = {p: (line, m) for p, line, m in found}
    assert by_path["judge.backend"][0] == 20 and "'ghost'" in by_path["judge.backend"][1]
    assert by_path["judge.policies[1]"][0] == 22 and "'nope'" in by_path["judge.policies[1]"][1]
    assert "judge.policies[0]" not in by_path

    good = JUDGE.replace("1.5", "0.5").replace("ghost", "local").replace(", nope", "")
    cfg = load_config_text(MINIMAL + policy + good)
    assert cfg.judge is not None and cfg.judge.sample == 0.5 and cfg.judge.max_tokens == 256
    assert cfg.judge.policies == ("p",)


def test_shipped_config_judge_example_is_valid() -> None:
    """The commented ``judge:`` example at the end of config.yaml, uncommented, is valid."""
    text = (Path(__file__).resolve().parents[2] / "config.yaml").read_text()
    head, _, example = text.partition("\n# judge:\n")
    assert example, "config.yaml keeps a commented-out judge example"
    lines = ["judge:"] + [line.removeprefix("# ") for line in example.splitlines()]
    cfg = load_config_text(head + "\n" + "\n".join(lines) + "\n")
    assert cfg.judge is not None and cfg.judge.backend == "premium-api"
    assert cfg.judge.sample == 0.05 and "grade" in cfg.judge.rubric
