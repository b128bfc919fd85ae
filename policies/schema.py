"""Strict pydantic models for the policy YAML (`policies`, `routing`, `shadow`) and their versions.

This module owns the shape of what operators write: policies (candidates, objective,
constraints, predictor fallback, escalation), the routing rules that select a policy per
request, and the shadow policies. Every error is a pydantic ``ValidationError`` whose ``loc``
is the exact YAML path (``("policies", "cheap", "candidates", 2)``), cross-references
included, so the gateway's config loader can map it to a file and line. Pure: no I/O.

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
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

Loc = tuple[str | int, ...]

#: Keywords allowed in ``on_no_adequate`` (anything else names a backend).
NO_ADEQUATE_KEYWORDS = frozenset({"most_capable", "cheapest", "error"})
#: Keywords allowed in ``predictor_fallback`` (anything else names a backend).
PREDICTOR_FALLBACK_KEYWORDS = frozenset({"cheapest", "first_candidate", "error"})

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]*$"
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=_NAME_RE)]
Capability = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
Tag = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Usd = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _not_empty(value: Any) -> Any:
    # An after-validator rather than ``min_length``: pydantic would also report "too short"
    # when an item is invalid, pointing the operator at the wrong line.
    if len(value) == 0:
        raise PydanticCustomError("empty", "must not be empty")
    return value


def _raise(title: str, issues: list[tuple[Loc, str, Any]]) -> None:
    """Raise one ValidationError carrying every issue at its own loc (relative to the model)."""
    if not issues:
        return
    details = [
        InitErrorDetails(
            type=PydanticCustomError("policy_reference", "{message}", {"message": msg}),
            loc=loc,
            input=value,
        )
        for loc, msg, value in issues
    ]
    raise ValidationError.from_exception_data(title, details)


def _compile(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise PydanticCustomError(
            "regex_invalid", "invalid regular expression: {error}", {"error": str(exc)}
        ) from exc
    return pattern


Regex = Annotated[str, Field(min_length=1, max_length=2000)]


# --------------------------------------------------------------------------- validators


class JsonSchemaCheck(_Strict):
    """The answer must parse as JSON and validate against ``schema`` (JSON Schema)."""

    kind: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(alias="schema")
    #: Accept an answer wrapped in one markdown code fence (```json ... ```).
    allow_code_fence: bool = False

    @field_validator("json_schema")
    @classmethod
    def _schema_is_valid(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            validator_for(value).check_schema(value)
        except SchemaError as exc:
            raise PydanticCustomError(
                "json_schema_invalid", "invalid JSON Schema: {error}", {"error": exc.message}
            ) from exc
        return value


class RegexCheck(_Strict):
    """The answer must (``must_match``) or must not (``must_not_match``) match ``pattern``."""

    kind: Literal["regex"]
    pattern: Regex
    mode: Literal["must_match", "must_not_match"] = "must_match"
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        return _compile(value)


class NonEmptyCheck(_Strict):
    """The answer must contain something other than whitespace."""

    kind: Literal["non_empty"]


class RefusalCheck(_Strict):
    """The answer must not open with a refusal (see ``policies.validators.REFUSAL_PATTERNS``)."""

    kind: Literal["refusal"]
    #: Extra case-insensitive patterns, searched in the same window as the built-in ones.
    extra_patterns: tuple[Regex, ...] = ()
    #: Only the first ``window_chars`` characters are inspected: a long answer that mentions
    #: "I can't" in passing is not a refusal.
    window_chars: int = Field(default=400, ge=1, le=100_000)

    @field_validator("extra_patterns")
    @classmethod
    def _check_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            _compile(pattern)
        return value


class MaxLengthCheck(_Strict):
    """The answer must be at most ``chars`` characters long."""

    kind: Literal["max_length"]
    chars: int = Field(ge=0)


ValidatorSpec = Annotated[
    JsonSchemaCheck | RegexCheck | NonEmptyCheck | RefusalCheck | MaxLengthCheck,
    Field(discriminator="kind"),
]


# --------------------------------------------------------------------------- objectives


class CheapestAdequate(_Strict):
    """The cheapest adequate candidate: predicted P(success) >= ``min_success`` and, with
    ``max_shortfall``, at most that far below the best eligible candidate's."""

    kind: Literal["cheapest_adequate"]
    #: Absolute bar on the calibrated P(success).
    min_success: Probability = 0.0
    #: Relative bar: adequate only within this of the highest P(success) among the eligible
    #: (0.03: "at most 3 points worse than the best we could call"). Unset: no relative bar.
    max_shortfall: Probability | None = None
    #: ``most_capable`` | ``cheapest`` | ``error`` | the name of one of the candidates.
    on_no_adequate: Name = "error"

    @model_validator(mode="after")
    def _a_bar(self) -> CheapestAdequate:
        if not {"min_success", "max_shortfall"} & self.model_fields_set:
            raise PydanticCustomError("bar_missing", "give min_success, max_shortfall or both")
        return self


class MinCostPerSuccess(_Strict):
    """Minimise expected task cost per success, retries and escalation included: the ratio
    ``E / S``, or with ``success_value_usd`` the net cost ``E - value * S``."""

    kind: Literal["min_cost_per_success"]
    #: Optional floor: candidates predicted below it are not adequate.
    min_success: Probability = 0.0
    #: What one more expected success is worth: a costlier candidate wins while each extra
    #: expected success it buys costs at most this (USD). Unset: the plain ratio E / S,
    #: which nearly always picks the cheapest candidate.
    success_value_usd: Usd | None = None
    on_no_adequate: Name = "error"


class MaxQualityWithin(_Strict):
    """The candidate most likely to succeed whose expected cost is <= ``cost_cap_usd``."""

    kind: Literal["max_quality_within"]
    cost_cap_usd: Usd
    on_no_adequate: Name = "error"


class Cascade(_Strict):
    """Answer with a cheap backend first; accept its answer or escalate on a verdict over it.

    The decision names the first backend to call (``first``, or the escalation tier right
    away when the predictor says the first is unlikely to succeed); after each answer the
    gateway asks ``policies.cascade.cascade_step`` whether to accept, call ``check``, or
    escalate. Every call is paid for and counts toward the task.
    """

    kind: Literal["cascade"]
    #: The cheap backend that answers first.
    first: Name
    #: A second cheap backend whose answer to the same request is compared with the first's
    #: (agreement on a closed-form answer is the strongest verdict signal). Unset: no check.
    check: Name | None = None
    #: Where rejected or hard requests go. Unset: the most capable other eligible candidate.
    escalate_to: Name | None = None
    #: The verdict's P(the first answer is right) needed to accept it.
    accept_confidence: Probability
    #: After the first answer (before any check): accept at once at or above this verdict
    #: (and ``accept_confidence``; the check is skipped); escalate at once below
    #: ``escalate_below``; check in between.
    skip_check_above: Probability = 1.0
    escalate_below: Probability = 0.0
    #: Predicted P(success) of ``first`` below which the request goes straight to the
    #: escalation tier (the cheap answer would be wasted). Unset: never.
    straight_up_below: Probability | None = None
    #: When ``first`` is not eligible or has no estimate: what to call instead.
    on_no_adequate: Name = "most_capable"

    @model_validator(mode="after")
    def _bands(self) -> Cascade:
        if self.escalate_below > self.skip_check_above:
            raise PydanticCustomError("band_order", "escalate_below must be <= skip_check_above")
        return self


Objective = Annotated[
    CheapestAdequate | MinCostPerSuccess | MaxQualityWithin | Cascade,
    Field(discriminator="kind"),
]
ObjectiveKind = Literal[
    "cheapest_adequate", "min_cost_per_success", "max_quality_within", "cascade"
]


# --------------------------------------------------------------------------- constraints


class TenantAccess(_Strict):
    """Backends a tenant may use (``allow``: only these) or must not use (``deny``)."""

    allow: tuple[Name, ...] | None = None
    deny: tuple[Name, ...] = ()


class Constraints(_Strict):
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


class BudgetAware(_Strict):
    """Spend less as the caller's budgets run low: once the tightest of the budgets that apply
    to a request has less than ``below_fraction`` of its limit left, the objective's adequate
    candidates are taken cheapest first (``cheapest_adequate``), or every eligible candidate
    is (``cheapest``: adequacy no longer matters). Not applied to the ``cascade`` objective."""

    below_fraction: Probability = 0.2
    objective: Literal["cheapest_adequate", "cheapest"] = "cheapest_adequate"


class Escalation(_Strict):
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

    _validators_given = field_validator("validators")(_not_empty)


# --------------------------------------------------------------------------- locations

_OBJECTIVE_TAGS = frozenset(
    {"cheapest_adequate", "min_cost_per_success", "max_quality_within", "cascade"}
)
_VALIDATOR_TAGS = frozenset({"json_schema", "regex", "non_empty", "refusal", "max_length"})


def yaml_loc(loc: Loc) -> Loc:
    """A pydantic error ``loc`` as a path in the YAML document.

    pydantic puts the discriminator value of a tagged union into ``loc``
    (``objective.cheapest_adequate.min_success``); the YAML has no such key, so drop it.
    """
    out: list[str | int] = []
    for i, part in enumerate(loc):
        prev = loc[i - 1] if i > 0 else None
        if prev == "objective" and part in _OBJECTIVE_TAGS:
            continue
        if isinstance(prev, int) and i >= 2 and loc[i - 2] == "validators":
            if part in _VALIDATOR_TAGS:
                continue
        out.append(part)
    return tuple(out)


# --------------------------------------------------------------------------- policy


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def content_version(value: Any) -> str:
    """A stable 12-hex-digit hash of JSON-ready content (key order does not matter)."""
    return hashlib.sha256(_canonical_json(value).encode()).hexdigest()[:12]


class Policy(_Strict):
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
    _candidates_given = field_validator("candidates")(_not_empty)

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
        _raise("Policy", issues)
        return self


# --------------------------------------------------------------------------- routing


class IntRange(_Strict):
    """Inclusive bounds; either may be omitted."""

    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.min is None and self.max is None:
            raise PydanticCustomError("range_empty", "give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise PydanticCustomError("range_order", "min must be <= max")
        return self

    def contains(self, value: int) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class Match(_Strict):
    """Conditions on a request; all given conditions must hold (AND)."""

    tenants: frozenset[Name] | None = None
    key_ids: frozenset[Name] | None = None
    #: Header name (case-insensitive) -> exact value.
    headers: dict[str, str] | None = None
    #: Header name (case-insensitive) -> regex searched in the value.
    header_regex: dict[str, Regex] | None = None
    has_tools: bool | None = None
    json_mode: bool | None = None
    prompt_chars: IntRange | None = None
    prompt_tokens: IntRange | None = None
    #: Regex searched (``re.search``) in the prompt text.
    prompt_regex: Regex | None = None

    @field_validator("headers", "header_regex")
    @classmethod
    def _lower_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else {k.lower(): v for k, v in value.items()}

    @field_validator("header_regex")
    @classmethod
    def _header_patterns(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for pattern in (value or {}).values():
            _compile(pattern)
        return value

    @field_validator("prompt_regex")
    @classmethod
    def _prompt_pattern(cls, value: str | None) -> str | None:
        return None if value is None else _compile(value)

    @model_validator(mode="after")
    def _not_empty(self) -> Match:
        if all(getattr(self, f) is None for f in type(self).model_fields):
            raise PydanticCustomError(
                "match_empty",
                "a match needs at least one condition; use routing.default for the catch-all",
            )
        return self


class Rule(_Strict):
    """When ``match`` holds, use ``policy``. Rules are tried in order; first match wins."""

    name: Name | None = None
    match: Match
    policy: Name


class Routing(_Strict):
    rules: tuple[Rule, ...] = ()
    default: Name


class Shadow(_Strict):
    """Evaluate ``policy`` alongside the served one and record what it would have chosen."""

    policy: Name
    #: The served policies it shadows; omitted: all of them.
    when_serving: tuple[Name, ...] | None = None
    #: Fraction of requests evaluated, sampled by a stable hash of a key the caller passes in.
    sample: Probability = 1.0


class PolicySet(_Strict):
    """Everything under ``policies``/``routing``/``shadow``: the unit of (hot) reload."""

    policies: dict[Name, Policy]
    routing: Routing
    shadow: tuple[Shadow, ...] = ()

    _version: str = PrivateAttr(default="")
    _policies_given = field_validator("policies")(_not_empty)

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
        _raise("PolicySet", self._issues(backend_names))
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
        _raise("PolicySet", self._issues(names))
        return self
