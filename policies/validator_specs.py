"""The answer validators an operator can declare (``escalation.validators``): their YAML shape.

This module owns the ``kind``-tagged specs of the validators (JSON Schema, regex, non-empty,
refusal, maximum length), checked when the policy loads (a JSON Schema must be valid, a
pattern must compile). Running them over an answer is ``policies.validators``'s. Pure: no I/O.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from policies.spec_base import Regex, StrictModel, compile_regex

#: The ``kind`` of every validator spec (the discriminator of :data:`ValidatorSpec`).
VALIDATOR_KINDS = frozenset({"json_schema", "regex", "non_empty", "refusal", "max_length"})


class JsonSchemaCheck(StrictModel):
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


class RegexCheck(StrictModel):
    """The answer must (``must_match``) or must not (``must_not_match``) match ``pattern``."""

    kind: Literal["regex"]
    pattern: Regex
    mode: Literal["must_match", "must_not_match"] = "must_match"
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        return compile_regex(value)


class NonEmptyCheck(StrictModel):
    """The answer must contain something other than whitespace."""

    kind: Literal["non_empty"]


class RefusalCheck(StrictModel):
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
            compile_regex(pattern)
        return value


class MaxLengthCheck(StrictModel):
    """The answer must be at most ``chars`` characters long."""

    kind: Literal["max_length"]
    chars: int = Field(ge=0)


ValidatorSpec = Annotated[
    JsonSchemaCheck | RegexCheck | NonEmptyCheck | RefusalCheck | MaxLengthCheck,
    Field(discriminator="kind"),
]
