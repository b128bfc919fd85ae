"""What every model of the policy YAML is built on: a strict base, field types, YAML-path errors.

This module owns, for ``policies.schema`` and the spec modules beside it
(``validator_specs``, ``objective_specs``, ``routing_specs``):

* :class:`StrictModel`: frozen, and an unknown key is an error (``extra="forbid"``);
* the field types operators write: backend and policy names, capabilities, tags,
  probabilities, USD amounts, regular expressions (checked to compile by :func:`compile_regex`);
* :func:`raise_issues`: several cross-reference problems raised as one pydantic
  ``ValidationError``, each at its own ``loc`` (a path in the YAML), and :func:`not_empty`.

Pure: no I/O.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

#: A pydantic error location: the path of keys and list indexes in the YAML document.
Loc = tuple[str | int, ...]

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]*$"
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=_NAME_RE)]
Capability = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
Tag = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Usd = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def not_empty(value: Any) -> Any:
    # An after-validator rather than ``min_length``: pydantic would also report "too short"
    # when an item is invalid, pointing the operator at the wrong line.
    if len(value) == 0:
        raise PydanticCustomError("empty", "must not be empty")
    return value


def raise_issues(title: str, issues: list[tuple[Loc, str, Any]]) -> None:
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


def compile_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise PydanticCustomError(
            "regex_invalid", "invalid regular expression: {error}", {"error": str(exc)}
        ) from exc
    return pattern


Regex = Annotated[str, Field(min_length=1, max_length=2000)]
