"""Can each policy still serve when the predictor gives no estimate? (a check, not a decision)

This module owns the warning that ``tollgate config check`` and the gateway's start-up print
when none of a policy's ``predictor_fallback`` entries names a backend that can be called:
then every request of that policy fails whenever the predictor times out, errors or is off.
Pure: the caller says which backends are unavailable and why (missing credentials, say).
"""

from __future__ import annotations

from collections.abc import Mapping

from policies.schema import PolicySet

KEYWORDS_OVER_ALL = ("cheapest", "first_candidate")


def fallback_warnings(policy_set: PolicySet, unavailable: Mapping[str, str | None]) -> list[str]:
    """One line per policy whose predictor fallback has no available backend.

    ``unavailable`` maps backend names to why they cannot be called (``None``: available);
    a name missing from it is not a configured backend.
    """
    out = []
    for name, policy in policy_set.policies.items():
        choices = policy.predictor_fallbacks
        reachable: list[str] = []
        if choices[0] == "error":
            continue  # failing without an estimate is what the operator asked for
        for choice in choices:
            if choice == "error":
                break
            names = list(policy.candidates) if choice in KEYWORDS_OVER_ALL else [choice]
            reachable += [n for n in names if n in unavailable and unavailable[n] is None]
            if choice in KEYWORDS_OVER_ALL:
                break
        if reachable:
            continue
        why = "; ".join(
            f"{c}: {unavailable.get(c) or 'not a configured backend'}"
            for c in dict.fromkeys(
                n
                for choice in choices
                if choice != "error"
                for n in (policy.candidates if choice in KEYWORDS_OVER_ALL else (choice,))
            )
        )
        label = choices[0] if len(choices) == 1 else f"[{', '.join(choices)}]"
        spare = [n for n in policy.candidates if unavailable.get(n, "") is None]
        hint = (
            "list an available candidate after it, e.g. predictor_fallback: "
            f"[{', '.join([*(c for c in choices if c != 'error'), spare[0]])}]"
            if spare
            else "none of its candidates is available either"
        )
        out.append(
            f"policy {name!r}: no backend of its predictor_fallback {label} is available "
            f"({why}); its requests fail whenever the predictor gives no estimate: {hint}"
        )
    return out
