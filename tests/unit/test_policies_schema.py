"""Policy YAML schema: strictness, precise error locs, cross-references, versions."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from policies.schema import Policy, PolicySet

BACKENDS = {"local", "mini", "sonnet"}

EXAMPLE = """
policies:
  cheap:
    description: cheapest backend that will probably do
    candidates: [local, mini, sonnet]
    objective: {kind: cheapest_adequate, min_success: 0.8, on_no_adequate: most_capable}
    constraints:
      require_capabilities: [json_mode]
      max_cost_usd: 0.05
      latency_slo_ms: 3000
      forbid_tags: [deprecated]
      tenants:
        acme: {allow: [local, mini]}
        globex: {deny: [sonnet]}
      unpriced: exclude
    predictor_fallback: cheapest
    escalation:
      validators:
        - {kind: json_schema, schema: {type: object, required: [answer]}}
        - {kind: regex, pattern: "^\\\\{", mode: must_match}
        - {kind: non_empty}
        - {kind: refusal, extra_patterns: ["not allowed to"]}
        - {kind: max_length, chars: 4000}
      max_escalations: 2
      retries_per_tier: 1
      order: candidates
  value:
    candidates: [mini, sonnet]
    objective: {kind: min_cost_per_success, min_success: 0.2}
    predictor_fallback: mini
  best:
    candidates: [sonnet, mini]
    objective: {kind: max_quality_within, cost_cap_usd: 0.02, on_no_adequate: cheapest}
    predictor_fallback: first_candidate
routing:
  rules:
    - name: tools
      match: {has_tools: true}
      policy: value
    - match: {tenants: [acme], headers: {X-Team: search}, prompt_tokens: {min: 2000}}
      policy: best
    - match: {prompt_regex: "(?i)prove|theorem", header_regex: {x-tier: "^gold"}}
      policy: best
  default: cheap
shadow:
  - {policy: value, when_serving: [cheap], sample: 0.25}
"""


def example() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE)
    assert isinstance(data, dict)
    return data


def errors(data: dict[str, Any], **context: Any) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as info:
        PolicySet.model_validate(data, context=context or None)
    return [(e["loc"], e["msg"]) for e in info.value.errors()]


def locs(data: dict[str, Any], **context: Any) -> list[tuple[Any, ...]]:
    return [loc for loc, _ in errors(data, **context)]


def test_example_parses_with_known_backends() -> None:
    ps = PolicySet.model_validate(example(), context={"backend_names": BACKENDS})
    assert set(ps.policies) == {"cheap", "value", "best"}
    assert ps.routing.rules[1].match.headers == {"x-team": "search"}  # names lower-cased
    assert ps.policies["cheap"].escalation is not None
    assert len(ps.policies["cheap"].escalation.validators) == 5


def test_docs_example_parses() -> None:
    """The complete example in docs/policies.md stays valid."""
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "policies.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    data = yaml.safe_load(block)
    backends = {"local-moe", "gpt-4o-mini", "claude-sonnet", "claude-opus"}
    ps = PolicySet.model_validate(
        {k: data[k] for k in ("policies", "routing", "shadow")},
        context={"backend_names": backends},
    )
    assert ps.routing.default in ps.policies


def test_unknown_field_is_rejected_at_its_path() -> None:
    data = example()
    data["policies"]["cheap"]["constraints"]["max_cost"] = 1
    assert locs(data) == [("policies", "cheap", "constraints", "max_cost")]


def test_wrong_objective_kind_names_the_tag() -> None:
    data = example()
    data["policies"]["value"]["objective"]["kind"] = "cheapest"
    (loc,) = locs(data)
    assert loc == ("policies", "value", "objective")


def test_min_success_out_of_range() -> None:
    data = example()
    data["policies"]["cheap"]["objective"]["min_success"] = 1.5
    assert locs(data) == [("policies", "cheap", "objective", "cheapest_adequate", "min_success")]


def test_predictor_fallback_is_required() -> None:
    data = example()
    del data["policies"]["value"]["predictor_fallback"]
    assert locs(data) == [("policies", "value", "predictor_fallback")]


def test_rule_naming_unknown_policy() -> None:
    data = example()
    data["routing"]["rules"][2]["policy"] = "nope"
    data["routing"]["default"] = "gone"
    data["shadow"][0]["when_serving"] = ["cheap", "missing"]
    found = errors(data)
    assert [loc for loc, _ in found] == [
        ("routing", "rules", 2, "policy"),
        ("routing", "default"),
        ("shadow", 0, "when_serving", 1),
    ]
    assert "unknown policy 'nope'" in found[0][1]


def test_unknown_backend_via_context() -> None:
    data = example()
    data["policies"]["cheap"]["candidates"].append("opus")
    assert locs(data, backend_names=BACKENDS) == [("policies", "cheap", "candidates", 3)]
    # Without backend names the structure alone is valid.
    PolicySet.model_validate(data)


def test_validate_against_raises_validation_error_with_locs() -> None:
    data = example()
    data["policies"]["best"]["candidates"] = ["sonnet", "gpt5"]
    ps = PolicySet.model_validate(data)
    assert ps.reference_issues(BACKENDS)[0][0] == ("policies", "best", "candidates", 1)
    with pytest.raises(ValidationError) as info:
        ps.validate_against(BACKENDS)
    assert info.value.errors()[0]["loc"] == ("policies", "best", "candidates", 1)
    assert ps.validate_against(BACKENDS | {"gpt5"}) is ps


def test_nested_in_a_larger_config_keeps_the_prefix() -> None:
    from pydantic import BaseModel

    class Config(BaseModel):
        policy_set: PolicySet

    data = example()
    data["routing"]["default"] = "nope"
    with pytest.raises(ValidationError) as info:
        Config.model_validate({"policy_set": data})
    assert info.value.errors()[0]["loc"] == ("policy_set", "routing", "default")


def test_fallback_backend_must_be_a_candidate() -> None:
    data = example()
    data["policies"]["value"]["predictor_fallback"] = "local"
    data["policies"]["best"]["objective"]["on_no_adequate"] = "local"
    assert sorted(locs(data)) == [
        ("policies", "best", "objective", "on_no_adequate"),
        ("policies", "value", "predictor_fallback"),
    ]


def test_duplicate_candidate_and_tenant_list_reference() -> None:
    data = example()
    data["policies"]["value"]["candidates"] = ["mini", "sonnet", "mini"]
    data["policies"]["cheap"]["constraints"]["tenants"]["acme"]["allow"] = ["local", "opus"]
    assert sorted(locs(data), key=str) == sorted(
        [
            ("policies", "value", "candidates", 2),
            ("policies", "cheap", "constraints", "tenants", "acme", "allow", 1),
        ],
        key=str,
    )


def test_invalid_regexes_are_rejected_where_written() -> None:
    data = example()
    data["routing"]["rules"][2]["match"]["prompt_regex"] = "(unclosed"
    data["policies"]["cheap"]["escalation"]["validators"][1]["pattern"] = "[a-"
    found = dict(errors(data))
    assert ("routing", "rules", 2, "match", "prompt_regex") in found
    assert ("policies", "cheap", "escalation", "validators", 1, "regex", "pattern") in found
    assert "invalid regular expression" in found[("routing", "rules", 2, "match", "prompt_regex")]


def test_invalid_json_schema_is_rejected() -> None:
    data = example()
    data["policies"]["cheap"]["escalation"]["validators"][0]["schema"] = {"type": "objekt"}
    (loc,) = locs(data)
    assert loc == ("policies", "cheap", "escalation", "validators", 0, "json_schema", "schema")


def test_empty_match_and_bad_range() -> None:
    data = example()
    data["routing"]["rules"][0]["match"] = {}
    data["routing"]["rules"][1]["match"]["prompt_tokens"] = {"min": 10, "max": 5}
    assert sorted(locs(data), key=str) == sorted(
        [
            ("routing", "rules", 0, "match"),
            ("routing", "rules", 1, "match", "prompt_tokens"),
        ],
        key=str,
    )


def test_policy_version_is_stable_and_content_sensitive() -> None:
    a = PolicySet.model_validate(example())
    reordered = example()
    cheap = reordered["policies"]["cheap"]
    reordered["policies"]["cheap"] = dict(reversed(list(cheap.items())))
    b = PolicySet.model_validate(reordered)
    assert a.policies["cheap"].version == b.policies["cheap"].version
    assert len(a.policies["cheap"].version) == 12
    edited = copy.deepcopy(example())
    edited["policies"]["cheap"]["objective"]["min_success"] = 0.81
    c = PolicySet.model_validate(edited)
    assert c.policies["cheap"].version != a.policies["cheap"].version
    assert c.policies["value"].version == a.policies["value"].version  # others unchanged
    assert c.version != a.version


def test_models_are_frozen() -> None:
    policy = PolicySet.model_validate(example()).policies["cheap"]
    with pytest.raises(ValidationError):
        policy.candidates = ("x",)
    assert isinstance(policy, Policy)
