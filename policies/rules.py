"""Selection rules: which policy serves a request (first matching rule wins, else the default)."""

from __future__ import annotations

import re

from policies.facts import RequestFacts
from policies.routing_specs import Match
from policies.schema import PolicySet

DEFAULT_RULE = "default"


def rule_label(index: int, name: str | None) -> str:
    """How a rule is named in decisions: its ``name``, else ``rules[<index>]``."""
    return name if name is not None else f"rules[{index}]"


def matches(match: Match, request: RequestFacts) -> bool:
    """True when every condition given in ``match`` holds for ``request``."""
    if match.tenants is not None and request.tenant not in match.tenants:
        return False
    if match.key_ids is not None and request.key_id not in match.key_ids:
        return False
    if match.has_tools is not None and request.has_tools != match.has_tools:
        return False
    if match.json_mode is not None and request.json_mode != match.json_mode:
        return False
    if match.prompt_chars is not None and not match.prompt_chars.contains(len(request.prompt_text)):
        return False
    if match.prompt_tokens is not None and not match.prompt_tokens.contains(
        request.est_prompt_tokens
    ):
        return False
    for name, value in (match.headers or {}).items():
        if request.headers.get(name) != value:
            return False
    for name, pattern in (match.header_regex or {}).items():
        header = request.headers.get(name)
        if header is None or re.search(pattern, header) is None:
            return False
    # Last: the only condition whose cost grows with the prompt.
    return (
        match.prompt_regex is None or re.search(match.prompt_regex, request.prompt_text) is not None
    )


def select(policy_set: PolicySet, request: RequestFacts) -> tuple[str, str]:
    """``(policy_name, rule_label)``: the first rule whose match holds, else the default."""
    for i, rule in enumerate(policy_set.routing.rules):
        if matches(rule.match, request):
            return rule.policy, rule_label(i, rule.name)
    return policy_set.routing.default, DEFAULT_RULE
