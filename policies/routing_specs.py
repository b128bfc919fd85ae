"""How a request is sent to a policy (``routing:``) and which policies shadow it (``shadow:``).

This module owns the YAML shape of the routing rules (a :class:`Match` of conditions on the
request, first match wins, then ``default``) and of the shadow entries. Matching a request
is ``policies.rules``'s; whether the policies they name exist is checked by the policy set
(``policies.schema.PolicySet``). Pure: no I/O.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from policies.spec_base import Name, Probability, Regex, StrictModel, compile_regex


class IntRange(StrictModel):
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


class Match(StrictModel):
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
            compile_regex(pattern)
        return value

    @field_validator("prompt_regex")
    @classmethod
    def _prompt_pattern(cls, value: str | None) -> str | None:
        return None if value is None else compile_regex(value)

    @model_validator(mode="after")
    def _not_empty(self) -> Match:
        if all(getattr(self, f) is None for f in type(self).model_fields):
            raise PydanticCustomError(
                "match_empty",
                "a match needs at least one condition; use routing.default for the catch-all",
            )
        return self


class Rule(StrictModel):
    """When ``match`` holds, use ``policy``. Rules are tried in order; first match wins."""

    name: Name | None = None
    match: Match
    policy: Name


class Routing(StrictModel):
    rules: tuple[Rule, ...] = ()
    default: Name


class Shadow(StrictModel):
    """Evaluate ``policy`` alongside the served one and record what it would have chosen."""

    policy: Name
    #: The served policies it shadows; omitted: all of them.
    when_serving: tuple[Name, ...] | None = None
    #: Fraction of requests evaluated, sampled by a stable hash of a key the caller passes in.
    sample: Probability = 1.0
