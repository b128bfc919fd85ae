"""Policy documents from several files (``config.yaml`` and the files it includes) → one set.

The gateway reads the files (I/O stays there) and passes each parsed top-level mapping as a
:class:`PolicySource`. :func:`load_policy_set` merges them and validates the result; every
problem comes back as a :class:`SourceIssue` naming the source, the YAML path *inside that
source* and a message, so the loader only has to turn ``(source, loc)`` into a line number.

Merge rules (source order = ``config.yaml`` first, then includes in the order listed):
- ``policies``: union; a name defined twice is an error (reported at the second definition);
- ``routing.rules`` and ``shadow``: concatenated in source order;
- any other ``routing`` key (``default``): set by exactly one source;
- other top-level keys are not ours and are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from policies.schema import PolicySet, yaml_loc
from policies.spec_base import Loc

SECTIONS = ("policies", "routing", "shadow")


@dataclass(frozen=True, slots=True)
class PolicySource:
    """One parsed YAML document; ``label`` names it in errors (e.g. its path)."""

    label: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SourceIssue:
    source: str
    loc: Loc
    message: str

    def __str__(self) -> str:
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.loc).lstrip(".")
        return f"{self.source}: {path or '(top level)'}: {self.message}"


class PolicyLoadError(ValueError):
    """The policy documents are invalid; ``issues`` says where (the running set stays)."""

    def __init__(self, issues: Sequence[SourceIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


@dataclass(frozen=True)
class MergedPolicies:
    """The merged document, plus where each part of it came from."""

    data: dict[str, Any]
    #: (merged loc prefix, source label, loc prefix in that source); longest prefix wins.
    origins: tuple[tuple[Loc, str, Loc], ...] = field(default=())

    def origin(self, loc: Loc) -> tuple[str, Loc]:
        """Map a loc in the merged document to ``(source label, loc in that source)``."""
        best: tuple[Loc, str, Loc] | None = None
        for merged, label, local in self.origins:
            if loc[: len(merged)] == merged and (best is None or len(merged) > len(best[0])):
                best = (merged, label, local)
        if best is None:
            return (self.origins[0][1] if self.origins else "?"), loc
        merged, label, local = best
        return label, local + loc[len(merged) :]


def merge_sources(sources: Sequence[PolicySource]) -> tuple[MergedPolicies, list[SourceIssue]]:
    """Merge the policy sections of ``sources`` (see the module docstring for the rules)."""
    issues: list[SourceIssue] = []
    policies: dict[str, Any] = {}
    routing: dict[str, Any] = {}
    rules: list[Any] = []
    shadow: list[Any] = []
    origins: list[tuple[Loc, str, Loc]] = []
    defined_in: dict[str, str] = {}
    routing_key_in: dict[str, str] = {}
    saw_rules = saw_shadow = False

    for src in sources:
        label = src.label
        origins.append(((), label, ()))
        if "policies" in src.data:
            section = src.data["policies"]
            if not isinstance(section, Mapping):
                issues.append(SourceIssue(label, ("policies",), "must be a mapping of policies"))
            else:
                for name, body in section.items():
                    if name in defined_in:
                        issues.append(
                            SourceIssue(
                                label,
                                ("policies", name),
                                f"policy {name!r} is already defined in {defined_in[name]}",
                            )
                        )
                        continue
                    defined_in[name] = label
                    policies[name] = body
                    origins.append((("policies", name), label, ("policies", name)))
        if "routing" in src.data:
            section = src.data["routing"]
            if not isinstance(section, Mapping):
                issues.append(SourceIssue(label, ("routing",), "must be a mapping"))
            else:
                for key, value in section.items():
                    if key == "rules":
                        saw_rules = True
                        if not isinstance(value, list):
                            issues.append(
                                SourceIssue(label, ("routing", "rules"), "must be a list")
                            )
                            continue
                        for i, rule in enumerate(value):
                            origins.append(
                                (("routing", "rules", len(rules)), label, ("routing", "rules", i))
                            )
                            rules.append(rule)
                    elif key in routing_key_in:
                        issues.append(
                            SourceIssue(
                                label,
                                ("routing", key),
                                f"routing.{key} is already set in {routing_key_in[key]}",
                            )
                        )
                    else:
                        routing_key_in[key] = label
                        routing[key] = value
                        origins.append((("routing", key), label, ("routing", key)))
        if "shadow" in src.data:
            section = src.data["shadow"]
            saw_shadow = True
            if not isinstance(section, list):
                issues.append(SourceIssue(label, ("shadow",), "must be a list"))
            else:
                for i, entry in enumerate(section):
                    origins.append((("shadow", len(shadow)), label, ("shadow", i)))
                    shadow.append(entry)

    data: dict[str, Any] = {"policies": policies, "routing": routing}
    if saw_rules:
        routing["rules"] = rules
    if saw_shadow:
        data["shadow"] = shadow
    return MergedPolicies(data, tuple(origins)), issues


def load_policy_set(
    sources: Sequence[PolicySource], backend_names: Iterable[str] | None = None
) -> PolicySet:
    """Merge and validate; raise :class:`PolicyLoadError` with every issue, located."""
    merged, issues = merge_sources(sources)
    if issues:
        raise PolicyLoadError(issues)
    context = None if backend_names is None else {"backend_names": set(backend_names)}
    try:
        return PolicySet.model_validate(merged.data, context=context)
    except ValidationError as exc:
        located = []
        for err in exc.errors():
            label, loc = merged.origin(yaml_loc(tuple(err["loc"])))
            located.append(SourceIssue(label, loc, err["msg"]))
        raise PolicyLoadError(located) from exc
