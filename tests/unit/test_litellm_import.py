"""Importing a LiteLLM proxy config: the mapping (pure), and the command that writes a config
``tollgate config check`` accepts."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gateway.cli.main import app
from gateway.config import Config, load_config
from gateway.config.litellm_import import import_litellm_config, safe_name

SAMPLE = Path(__file__).parent / "data" / "litellm_proxy_config.yaml"


def _sample() -> dict[str, Any]:
    return dict(yaml.safe_load(SAMPLE.read_text()))


def _by_name(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["name"]: b for b in config["backends"]}


def test_model_list_becomes_backends_groups_and_fallbacks_become_policies() -> None:
    result = import_litellm_config(_sample())
    cfg = Config.model_validate(result.config)  # the schema accepts it as it is
    backends = _by_name(result.config)
    # a group of two deployments + a fallback: two backends and a policy trying them in order
    assert backends["gpt-4o-1"]["model"] == "azure/gpt-4o-eu"
    assert backends["gpt-4o-1"]["api_key"] == "os.environ/AZURE_API_KEY_EU"
    assert backends["gpt-4o-1"]["api_version"] == "2024-08-01-preview"
    assert backends["gpt-4o-1"]["capabilities"] == ["streaming", "tools", "vision"]
    assert backends["gpt-4o-1"]["context_window"] == 128000
    assert backends["gpt-4o-2"]["timeout_s"] == 45 and backends["gpt-4o-1"]["timeout_s"] == 30
    assert all(b["max_retries"] == 3 for b in backends.values())  # router num_retries
    assert cfg.policies["gpt-4o"].candidates == ("gpt-4o-1", "gpt-4o-2", "claude-3-5-sonnet")
    assert cfg.policies["gpt-4o"].predictor_fallback == "first_candidate"
    assert not cfg.predictor.enabled
    # clients keep calling the LiteLLM names
    assert cfg.aliases["gpt-4o"] == "tollgate/gpt-4o"
    assert cfg.aliases["gpt-4"] == "tollgate/gpt-4o"  # model_group_alias
    # claude's only fallback is unknown (reported): it stays a plain backend, priced as given
    assert backends["claude-3-5-sonnet"]["input_cost_per_token"] == "3e-06"
    assert "claude-3-5-sonnet" not in cfg.policies
    # context-window fallbacks: Tollgate moves on after a context-window error
    assert cfg.policies["local-qwen"].candidates == ("local-qwen-1", "claude-3-5-sonnet")
    assert cfg.aliases["local/qwen"] == "tollgate/local-qwen"
    assert backends["local-qwen-1"]["params"] == {"temperature": 0.2}
    assert backends["text-embedding-3-small"]["capabilities"] == ["embeddings"]
    assert cfg.circuit_breaker.failure_threshold == 3 and cfg.circuit_breaker.cooldown_s == 60


def test_secrets_are_never_copied_and_everything_dropped_is_reported() -> None:
    result = import_litellm_config(_sample())
    text = yaml.safe_dump(result.config)
    assert "sk-literal-key" not in text and "sk-1234" not in text and "pk-xyz" not in text
    qwen = _by_name(result.config)["local-qwen-1"]
    assert qwen["api_key"] == "os.environ/LOCAL_QWEN_1_API_KEY"
    assert "LOCAL_QWEN_1_API_KEY" in result.env_needed and "OPENAI_API_KEY" in result.env_needed
    notes = {u.path: u.reason for u in result.unmapped}
    assert "LOCAL_QWEN_1_API_KEY" in notes["model_list[3].litellm_params.api_key"]
    assert "secret" in notes["model_list[3].litellm_params.aws_secret_access_key"]
    # a deployment's rate limits are its backend's: at its limit, it is skipped (as in LiteLLM)
    assert _by_name(result.config)["gpt-4o-1"]["rpm"] == 600
    assert _by_name(result.config)["gpt-4o-2"]["tpm"] == 200000
    assert not [path for path in notes if path.endswith((".rpm", ".tpm"))]
    assert "wildcard" in notes["model_list[5]"]
    # one price alone cannot be used: priced from the catalog, and said so
    assert "input_cost_per_token" not in _by_name(result.config)["text-embedding-3-small"]
    assert "both" in notes["model_list[4].litellm_params.input_cost_per_token"]
    assert "'nope' is not in model_list" in notes["router_settings.fallbacks[1].claude-3-5-sonnet"]
    assert "not load-balanced" in notes["router_settings.routing_strategy"]
    assert "TOLLGATE_REDIS_URL" in notes["router_settings.redis_host"]
    assert "--max-budget-usd 100" in notes["litellm_settings.max_budget"]
    assert "TOLLGATE_ADMIN_KEY" in notes["general_settings.master_key"]
    assert "$DATABASE_URL" in notes["general_settings.database_url"]
    assert "LANGFUSE_PUBLIC_KEY" in notes["environment_variables"]
    for key in ("litellm_settings.drop_params", "litellm_settings.success_callback"):
        assert key in notes


def test_a_single_deployment_keeps_its_name_and_odd_names_get_an_alias() -> None:
    data = {
        "model_list": [
            {"model_name": "fast", "litellm_params": {"model": "openai/gpt-4o-mini"}},
            {"model_name": "openai/gpt-4o", "litellm_params": {"model": "openai/gpt-4o"}},
        ]
    }
    result = import_litellm_config(data)
    cfg = Config.model_validate(result.config)
    assert [b.name for b in cfg.backends] == ["fast", "openai-gpt-4o"]
    assert cfg.aliases == {"openai/gpt-4o": "openai-gpt-4o"}
    assert not cfg.policies and result.unmapped == []
    assert safe_name("a b/c") == "a-b-c"


@pytest.mark.parametrize("bad", [None, [], {"model_list": []}, {"model_list": [{"x": 1}]}])
def test_not_a_litellm_config_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        import_litellm_config(bad)


def test_cli_writes_a_config_that_config_check_accepts(tmp_path: Path) -> None:
    out = tmp_path / "tollgate.yaml"
    runner = CliRunner()
    result = runner.invoke(app, ["import", "litellm-config", str(SAMPLE), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "not mapped (" in result.output and "wildcard" in result.output
    assert "sk-literal-key" not in result.output + out.read_text()
    assert len(load_config(out).backends) == 5
    check = runner.invoke(app, ["config", "check", str(out)])
    assert check.exit_code == 0, check.output
    assert "OK" in check.output
    missing = runner.invoke(app, ["import", "litellm-config", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 2


def _deployment(name: str, model: str, **params: Any) -> dict[str, Any]:
    return {"model_name": name, "litellm_params": {"model": model, **params}}


def test_budgets_map_where_they_map_and_are_never_sent_to_a_backend() -> None:
    """A LiteLLM deployment budget (``max_budget`` + ``budget_duration`` in litellm_params) of a
    model group served by that deployment alone becomes a policy budget in ``budgets:`` (the
    group is then a policy, so the budget caps what clients calling the group's name spend);
    a budget of one deployment among several, or one whose period Tollgate has no window for,
    is reported; the proxy-wide budget is reported with its window. No budget setting is ever
    passed on to the backend as a request parameter."""
    data = {
        "model_list": [
            _deployment("gpt-4o", "openai/gpt-4o", max_budget=25, budget_duration="1d"),
            _deployment("mini", "openai/gpt-4o-mini", max_budget="5.50", budget_duration="1mo"),
            _deployment("forever", "openai/gpt-4.1", max_budget=7),
            _deployment("pair", "openai/o3", max_budget=3, budget_duration="1d"),
            _deployment("pair", "azure/o3", max_budget=3, budget_duration="1d"),
            _deployment("weekly", "openai/o4-mini", max_budget=1, budget_duration="7d"),
        ],
        "litellm_settings": {"max_budget": 100, "budget_duration": "30d"},
        "router_settings": {"provider_budget_config": {"openai": {"budget_limit": 9}}},
    }
    result = import_litellm_config(data)
    cfg = Config.model_validate(result.config)
    for backend in result.config["backends"]:
        assert not {"max_budget", "budget_duration"} & set(backend.get("params") or {}), backend
    limits = {(b.scope, b.name): (b.max_usd, b.window) for b in cfg.budgets.limits}
    assert limits == {
        ("policy", "gpt-4o"): (Decimal("25"), "day"),
        ("policy", "mini"): (Decimal("5.50"), "month"),
        ("policy", "forever"): (Decimal("7"), "total"),
    }
    assert cfg.policies["gpt-4o"].candidates == ("gpt-4o-1",)
    assert cfg.aliases["gpt-4o"] == "tollgate/gpt-4o"  # the group's name still works
    notes = {u.path: u.reason for u in result.unmapped}
    for index in (3, 4):  # one deployment of several: no per-backend budget in Tollgate
        assert "max_budget" in notes[f"model_list[{index}].litellm_params.max_budget"]
    assert "7d" in notes["model_list[5].litellm_params.budget_duration"]
    assert "weekly" not in cfg.policies
    proxy = notes["litellm_settings.max_budget"]
    assert "--max-usd 100" in proxy and "--window month" in proxy
    assert "provider" in notes["router_settings.provider_budget_config"]


def test_a_budget_is_not_mapped_where_its_policy_would_not_see_all_the_spend() -> None:
    """A budgeted group another group falls back to: that group's policy calls the budgeted
    backend too, outside the budgeted policy, so a policy budget would not cap what LiteLLM
    capped (the deployment's whole spend): reported, not mapped. An amount Tollgate's budgets
    cannot hold (infinite, past the largest budget) is reported too, never written into a
    config that then fails to load."""
    data = {
        "model_list": [
            _deployment("cheap", "openai/gpt-4o-mini", max_budget=5, budget_duration="1d"),
            _deployment("main", "openai/gpt-4o"),
            _deployment("endless", "openai/o3", max_budget="inf"),
            _deployment("huge", "openai/o4-mini", max_budget="1e400"),
        ],
        "router_settings": {"fallbacks": [{"main": ["cheap"]}]},
    }
    result = import_litellm_config(data)
    cfg = Config.model_validate(result.config)
    assert "cheap" in cfg.policies["main"].candidates
    assert not cfg.budgets.limits
    notes = {u.path: u.reason for u in result.unmapped}
    assert "fallback" in notes["model_list[0].litellm_params.max_budget"]
    assert "not a USD amount" in notes["model_list[2].litellm_params.max_budget"]
    assert "not a USD amount" in notes["model_list[3].litellm_params.max_budget"]
