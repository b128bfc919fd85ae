"""Merging policy documents from several files, with every error located in its own file."""

from __future__ import annotations

from typing import Any

import pytest

from policies.schema import yaml_loc
from policies.sources import PolicyLoadError, PolicySource, load_policy_set, merge_sources


def pol(*cands: str, **kw: Any) -> dict[str, Any]:
    return {
        "candidates": list(cands),
        "objective": {"kind": "cheapest_adequate", "min_success": 0.5},
        "predictor_fallback": "cheapest",
        **kw,
    }


MAIN = PolicySource(
    "config.yaml",
    {
        "backends": {"ignored": "not ours"},
        "policies": {"cheap": pol("a", "b")},
        "routing": {
            "rules": [{"match": {"has_tools": True}, "policy": "tools"}],
            "default": "cheap",
        },
    },
)
EXTRA = PolicySource(
    "policies/teams.yaml",
    {
        "policies": {"tools": pol("b"), "json": pol("a", "b")},
        "routing": {"rules": [{"match": {"json_mode": True}, "policy": "json"}]},
        "shadow": [{"policy": "json"}],
    },
)


def issues(
    *sources: PolicySource, backends: set[str] | None = None
) -> list[tuple[str, tuple[Any, ...]]]:
    with pytest.raises(PolicyLoadError) as info:
        load_policy_set(sources, backends)
    return [(i.source, i.loc) for i in info.value.issues]


def test_merge_concatenates_rules_in_source_order() -> None:
    ps = load_policy_set([MAIN, EXTRA], {"a", "b"})
    assert list(ps.policies) == ["cheap", "tools", "json"]
    assert [r.policy for r in ps.routing.rules] == ["tools", "json"]
    assert ps.routing.default == "cheap" and ps.shadow[0].policy == "json"


def test_errors_are_located_in_their_own_file() -> None:
    bad = PolicySource(
        "policies/teams.yaml",
        {
            "policies": {"tools": pol("b", "zzz"), "json": pol("a", nope=1)},
            "routing": {"rules": [{"match": {"json_mode": True}, "policy": "missing"}]},
            "shadow": [{"policy": "json", "sample": 2}],
        },
    )
    found = issues(MAIN, bad, backends={"a", "b"})
    assert sorted(found, key=str) == sorted(
        [
            ("policies/teams.yaml", ("policies", "json", "nope")),
            ("policies/teams.yaml", ("shadow", 0, "sample")),
        ],
        key=str,
    )
    # Once the structure is valid, cross-references are located the same way.
    bad.data["policies"]["json"].pop("nope")
    bad.data["shadow"][0]["sample"] = 1
    found = issues(MAIN, bad, backends={"a", "b"})
    assert sorted(found, key=str) == sorted(
        [
            ("policies/teams.yaml", ("policies", "tools", "candidates", 1)),
            ("policies/teams.yaml", ("routing", "rules", 0, "policy")),
        ],
        key=str,
    )


def test_duplicates_across_files() -> None:
    dup = PolicySource("b.yaml", {"policies": {"cheap": pol("a")}, "routing": {"default": "cheap"}})
    found = issues(MAIN, dup)
    assert found == [("b.yaml", ("policies", "cheap")), ("b.yaml", ("routing", "default"))]
    with pytest.raises(
        PolicyLoadError, match=r"b.yaml: policies.cheap: .*already defined in config.yaml"
    ):
        load_policy_set([MAIN, dup])


def test_wrong_section_types() -> None:
    found = issues(
        PolicySource("x.yaml", {"policies": [1], "routing": {"rules": {}}, "shadow": {}})
    )
    assert found == [
        ("x.yaml", ("policies",)),
        ("x.yaml", ("routing", "rules")),
        ("x.yaml", ("shadow",)),
    ]


def test_discriminator_tags_are_dropped_from_locs() -> None:
    data = pol("a", escalation={"validators": [{"kind": "regex", "pattern": "("}]})
    data["objective"]["min_success"] = 7
    found = issues(PolicySource("c.yaml", {"policies": {"p": data}, "routing": {"default": "p"}}))
    assert sorted(found, key=str) == sorted(
        [
            ("c.yaml", ("policies", "p", "objective", "min_success")),
            ("c.yaml", ("policies", "p", "escalation", "validators", 0, "pattern")),
        ],
        key=str,
    )
    assert yaml_loc(("policies", "cheapest_adequate", "objective")) == (
        "policies",
        "cheapest_adequate",
        "objective",
    )


def test_origin_falls_back_to_the_first_source() -> None:
    merged, problems = merge_sources([MAIN, EXTRA])
    assert problems == []
    assert merged.origin(("routing", "rules", 1, "match")) == (
        "policies/teams.yaml",
        ("routing", "rules", 0, "match"),
    )
    assert merged.origin(("routing", "default")) == ("config.yaml", ("routing", "default"))
