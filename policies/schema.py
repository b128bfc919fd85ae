"""Strict pydantic models of one routing policy and of the policy set, and their versions.

This module owns the shape of a policy (candidates, objective, constraints, predictor
fallback, escalation, budget awareness) and of the ``PolicySet`` (``policies``, ``routing``,
``shadow``: the unit of hot reload), with the cross-references between them. The parts it is
built from have their own modules: the field types and strict base (``policies.spec_base``),
the validator specs (``validator_specs``), the objective specs (``objective_specs``), the
routing rules and shadow entries (``routing_specs``). Every error is a pydantic
``ValidationError`` whose ``loc`` is the exact YAML path
(``("policies", "cheap", "candidates", 2)``), cross-references included, so the gateway's
config loader can map it to a file and line (:func:`yaml_loc`). Pure: no I/O.

Cross-references checked while validating a ``PolicySet``:
- a routing rule, the routing default or a shadow entry naming an unknown policy;
- a policy's ``on_no_adequate`` / ``predictor_fallback`` backend that is not one of its
  candidates;
- with ``context={"backend_names": {...}}`` passed to ``model_validate`` (or via
  :meth:`PolicySet.validate_against`), a candidate naming an unknown backend.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from policies.objective_specs import OBJECTIVE_KINDS, Cascade, Objective
from policies.routing_specs import Routing, Shadow
from policies.spec_base import (
    Capability,
    Loc,
    Name,
    Probability,
    StrictModel,
    Tag,
    Usd,
    not_empty,
    raise_issues,
)
from policies.validator_specs import VALIDATOR_KINDS, ValidatorSpec

#: Keywords allowed in ``on_no_adequate`` (anything else names a backend).
NO_ADEQUATE_KEYWORDS = frozenset({"most_capable", "cheapest", "error"})
#: Keywords allowed in ``predictor_fallback`` (anything else names a backend).
PREDICTOR_FALLBACK_KEYWORDS = frozenset({"cheapest", "first_candidate", "error"})


# --------------------------------------------------------------------------- constraints


class TenantAccess(StrictModel):
    """Backends a tenant may use (``allow``: only these) or must not use (``deny``)."""

    allow: tuple[Name, ...] | None = None
    deny: tuple[Name, ...] = ()


class Constraints(StrictModel):
    """Hard filters applied to every candidate before the objective chooses."""

    require_capabilities: frozenset[Capability] = frozenset()
    max_cost_usd: Usd | None = None
    latency_slo_ms: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    require_tags: frozenset[Tag] = frozenset()
    forbid_tags: frozenset[Tag] = frozenset()
    #: Per-tenant backend allow/deny lists, keyed by tenant id.
    tenants: dict[Name, TenantAccess] = Field(default_factory=dict)
    #: ``rank_last``: unpriced backends stay eligible but rank after every priced one in
    #: cost objectives; ``exclude``: they are removed (constraint ``unpriced``).
    unpriced: Literal["rank_last", "exclude"] = "rank_last"


class BudgetAware(StrictModel):
    """Spend less as the caller's budgets run low: once the tightest of the budgets that apply
    to a request has less than ``below_fraction`` of its limit left, the objective's adequate
    candidates are taken cheapest first (``cheapest_adequate``), or every eligible candidate
    is (``cheapest``: adequacy no longer matters). Not applied to the ``cascade`` objective."""

    below_fraction: Probability = 0.2
    objective: Literal["cheapest_adequate", "cheapest"] = "cheapest_adequate"


class Escalation(StrictModel):
    """Cascade: when a validator rejects an answer, retry on the next tier."""

    validators: tuple[ValidatorSpec, ...]
    #: How many tiers above the first one may be tried (0: validators only record outcome).
    max_escalations: int = Field(default=1, ge=0, le=10)
    #: Same-backend retries after a rejected answer, before escalating.
    retries_per_tier: int = Field(default=0, ge=0, le=5)
    #: ``capability``: the next tiers are the eligible candidates predicted more likely to
    #: succeed, in ascending P(success); ``candidates``: the eligible candidates listed after
    #: the chosen one, in the operator's order.
    order: Literal["capability", "candidates"] = "capability"

    _validators_given = field_validator("validators")(not_empty)


# --------------------------------------------------------------------------- locations


def yaml_loc(loc: Loc) -> Loc:
    """A pydantic error ``loc`` as a path in the YAML document.

    pydantic puts the discriminator value of a tagged union into ``loc``
    (``objective.cheapest_adequate.min_success``); the YAML has no such key, so drop it.
    """
    out: list[str | int] = []
    for i, part in enumerate(loc):
        prev = loc[i - 1] if i > 0 else None
        if prev == "objective" and part in OBJECTIVE_KINDS:
            continue
        if isinstance(prev, int) and i >= 2 and loc[i - 2] == "validators":
            if part in VALIDATOR_KINDS:
                continue
        out.append(part)
    return tuple(out)


# --------------------------------------------------------------------------- policy


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def content_version(value: Any) -> str:
    """A stable 12-hex-digit hash of JSON-ready content (key order does not matter)."""
    return hashlib.sha256(_canonical_json(value).encode()).hexdigest()[:12]


class Policy(StrictModel):
    """One routing policy: who may serve, how to choose, and what to do when unsure."""

    description: str = ""
    #: Backend names, in the operator's order (used for ties and ``first_candidate``).
    candidates: tuple[Name, ...]
    objective: Objective
    constraints: Constraints = Field(default_factory=Constraints)
    #: When the predictor gives no estimate: ``cheapest`` | ``first_candidate`` | ``error`` |
    #: a candidate's name, or an ordered list of these: the first listed backend that is
    #: eligible serves (a keyword orders all eligible ones and ends the list). Required: never
    #: a silent guess.
    predictor_fallback: Name | tuple[Name, ...]
    escalation: Escalation | None = None
    #: Prefer cheaper adequate backends as the caller's budget runs low (unset: never).
    budget_aware: BudgetAware | None = None

    _version: str = PrivateAttr(default="")
    _candidates_given = field_validator("candidates")(not_empty)

    def model_post_init(self, context: Any, /) -> None:
        self._version = content_version(self.model_dump(mode="json", by_alias=True))

    @property
    def version(self) -> str:
        """Hash of the normalized policy content; changes whenever a decision could."""
        return self._version

    @property
    def predictor_fallbacks(self) -> tuple[str, ...]:
        """``predictor_fallback`` as a list (one name or keyword is a list of one)."""
        fb = self.predictor_fallback
        return (fb,) if isinstance(fb, str) else fb

    @model_validator(mode="after")
    def _check_references(self) -> Policy:
        issues: list[tuple[Loc, str, Any]] = []
        seen: dict[str, int] = {}
        for i, name in enumerate(self.candidates):
            if name in seen:
                issues.append(
                    (
                        ("candidates", i),
                        f"duplicate candidate {name!r} (also at [{seen[name]}])",
                        name,
                    )
                )
            seen.setdefault(name, i)
        choice = self.objective.on_no_adequate
        if choice not in NO_ADEQUATE_KEYWORDS and choice not in seen:
            issues.append(
                (
                    ("objective", "on_no_adequate"),
                    f"{choice!r} is neither one of {sorted(NO_ADEQUATE_KEYWORDS)} nor a "
                    "candidate of this policy",
                    choice,
                )
            )
        obj = self.objective
        if isinstance(obj, Cascade):
            named: dict[str, str] = {}
            for field_name in ("first", "check", "escalate_to"):
                value = getattr(obj, field_name)
                if value is None:
                    continue
                if value not in seen:
                    issues.append(
                        (
                            ("objective", field_name),
                            f"{value!r} is not a candidate of this policy",
                            value,
                        )
                    )
                elif value in named:
                    issues.append(
                        (
                            ("objective", field_name),
                            f"{value!r} is already the cascade's {named[value]}",
                            value,
                        )
                    )
                named.setdefault(value, field_name)
            if self.escalation is not None:
                issues.append(
                    (
                        ("escalation",),
                        "a cascade escalates on its own verdict: drop escalation, or route "
                        "with another objective",
                        None,
                    )
                )
        fbs = self.predictor_fallbacks
        if not fbs:
            issues.append((("predictor_fallback",), "must not be empty", fbs))
        listed: dict[str, int] = {}
        single = isinstance(self.predictor_fallback, str)
        for i, fb in enumerate(fbs):
            loc: Loc = ("predictor_fallback",) if single else ("predictor_fallback", i)
            if fb not in PREDICTOR_FALLBACK_KEYWORDS and fb not in seen:
                issues.append(
                    (
                        loc,
                        f"{fb!r} is neither one of {sorted(PREDICTOR_FALLBACK_KEYWORDS)} nor a "
                        "candidate of this policy",
                        fb,
                    )
                )
            elif fb in listed:
                issues.append((loc, f"{fb!r} is listed twice (also at [{listed[fb]}])", fb))
            elif fb in PREDICTOR_FALLBACK_KEYWORDS and i < len(fbs) - 1:
                issues.append(
                    (loc, f"{fb!r} decides for every candidate: it can only come last", fb)
                )
            listed.setdefault(fb, i)
        for tenant, access in self.constraints.tenants.items():
            for field in ("allow", "deny"):
                names = getattr(access, field) or ()
                for i, name in enumerate(names):
                    if name not in seen:
                        issues.append(
                            (
                                ("constraints", "tenants", tenant, field, i),
                                f"{name!r} is not a candidate of this policy",
                                name,
                            )
                        )
        raise_issues("Policy", issues)
        return self


# --------------------------------------------------------------------------- policy set


class PolicySet(StrictModel):
    """Everything under ``policies``/``routing``/``shadow``: the unit of (hot) reload."""

    policies: dict[Name, Policy]
    routing: Routing
    shadow: tuple[Shadow, ...] = ()

    _version: str = PrivateAttr(default="")
    _policies_given = field_validator("policies")(not_empty)

    def model_post_init(self, context: Any, /) -> None:
        self._version = content_version(self.model_dump(mode="json", by_alias=True))

    @property
    def version(self) -> str:
        return self._version

    def reference_issues(self, backend_names: Iterable[str] | None = None) -> list[tuple[Loc, str]]:
        """Cross-reference problems as ``(loc, message)``, loc relative to the PolicySet."""
        return [(loc, msg) for loc, msg, _ in self._issues(backend_names)]

    def validate_against(self, backend_names: Iterable[str]) -> PolicySet:
        """Raise a ValidationError if a candidate names a backend not in ``backend_names``."""
        raise_issues("PolicySet", self._issues(backend_names))
        return self

    def _issues(self, backend_names: Iterable[str] | None) -> list[tuple[Loc, str, Any]]:
        issues: list[tuple[Loc, str, Any]] = []
        known = set(self.policies)

        def unknown_policy(loc: Loc, name: str) -> None:
            if name not in known:
                issues.append((loc, f"unknown policy {name!r} (known: {sorted(known)})", name))

        for i, rule in enumerate(self.routing.rules):
            unknown_policy(("routing", "rules", i, "policy"), rule.policy)
        unknown_policy(("routing", "default"), self.routing.default)
        for i, shadow in enumerate(self.shadow):
            unknown_policy(("shadow", i, "policy"), shadow.policy)
            for j, name in enumerate(shadow.when_serving or ()):
                unknown_policy(("shadow", i, "when_serving", j), name)
        if backend_names is not None:
            backends = set(backend_names)
            for pname, policy in self.policies.items():
                for j, cand in enumerate(policy.candidates):
                    if cand not in backends:
                        issues.append(
                            (
                                ("policies", pname, "candidates", j),
                                f"unknown backend {cand!r} (known: {sorted(backends)})",
                                cand,
                            )
                        )
        return issues

    @model_validator(mode="after")
    def _check_references(self, info: ValidationInfo) -> PolicySet:
        names = None
        if isinstance(info.context, Mapping):
            names = info.context.get("backend_names")
        raise_issues("PolicySet", self._issues(names))
        return self
