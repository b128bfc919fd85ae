"""Pure answer validators used by escalation (and outcome recording): does this answer pass?

Each validator takes the answer text and returns a :class:`ValidationResult`; none of them
does I/O. JSON Schema validation uses the ``jsonschema`` library with a registry that cannot
retrieve anything: a ``$ref`` to a remote document fails the check instead of fetching it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jsonschema.exceptions import ValidationError as JsonSchemaValidationError
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for
from jsonschema_specifications import REGISTRY as _METASCHEMAS
from referencing.exceptions import Unresolvable

from policies.validator_specs import (
    JsonSchemaCheck,
    MaxLengthCheck,
    NonEmptyCheck,
    RefusalCheck,
    RegexCheck,
    ValidatorSpec,
)

#: Built-in refusal patterns (case-insensitive, searched in the first ``window_chars`` of the
#: answer). They target the openings models use when they decline, not any "cannot" anywhere.
REFUSAL_PATTERNS: tuple[str, ...] = (
    r"^\W*(i'?m|i am) (very |really |so )?sorry,? (but )?(i|as an ai)",
    r"^\W*(i|we) apologi[sz]e,? (but )?(i|we) (can(no|')?t|am unable|won'?t)",
    r"\bi (can(no|')?t|cannot|am (not able|unable)|won'?t|will not) "
    r"(help|assist|comply|provide|fulfil+|do that|answer|support|engage)",
    r"\bi'?m (not able|unable) to (help|assist|comply|provide|fulfil+|answer)",
    r"\bas an ai( language)? model,? i (can(no|')?t|cannot|am (not able|unable)|don'?t)",
    r"\bi must (respectfully )?decline\b",
    r"\bthat (request )?(goes against|violates) (my|our) (guidelines|policies|policy)\b",
)
_REFUSAL_RES = tuple(re.compile(p, re.IGNORECASE) for p in REFUSAL_PATTERNS)

_FENCE_RE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ValidationResult:
    validator: str
    ok: bool
    reason: str


def _result(kind: str, ok: bool, reason: str) -> ValidationResult:
    return ValidationResult(validator=kind, ok=ok, reason=reason)


def check_json_schema(
    schema: dict[str, Any], text: str, *, allow_code_fence: bool = False
) -> ValidationResult:
    """The text parses as JSON and validates against ``schema``."""
    body = text
    if allow_code_fence:
        fenced = _FENCE_RE.match(text)
        if fenced is not None:
            body = fenced.group(1)
    try:
        document = json.loads(body)
    except ValueError as exc:
        return _result("json_schema", False, f"not valid JSON: {exc}")
    cls = validator_for(schema)
    validator = cls(schema, registry=_METASCHEMAS)
    try:
        error = best_match(validator.iter_errors(document))
    except Unresolvable as exc:
        return _result("json_schema", False, f"schema reference cannot be resolved: {exc}")
    if error is None:
        return _result("json_schema", True, "valid against the JSON schema")
    return _result("json_schema", False, _describe(error))


def _describe(error: JsonSchemaValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"schema violation at {where}: {error.message}"


def check_regex(spec: RegexCheck, text: str) -> ValidationResult:
    flags = re.IGNORECASE if spec.ignore_case else 0
    found = re.search(spec.pattern, text, flags) is not None
    if spec.mode == "must_match":
        return _result("regex", found, "matches" if found else f"does not match {spec.pattern!r}")
    return _result(
        "regex", not found, f"matches forbidden {spec.pattern!r}" if found else "no forbidden match"
    )


def check_non_empty(text: str) -> ValidationResult:
    ok = bool(text.strip())
    return _result("non_empty", ok, "non-empty" if ok else "answer is empty or whitespace")


def check_refusal(spec: RefusalCheck, text: str) -> ValidationResult:
    window = text[: spec.window_chars]
    extra = (re.compile(p, re.IGNORECASE) for p in spec.extra_patterns)
    for pattern in (*_REFUSAL_RES, *extra):
        hit = pattern.search(window)
        if hit is not None:
            return _result("refusal", False, f"looks like a refusal: {hit.group(0)!r}")
    return _result("refusal", True, "no refusal detected")


def check_max_length(spec: MaxLengthCheck, text: str) -> ValidationResult:
    ok = len(text) <= spec.chars
    return _result("max_length", ok, f"{len(text)} chars {'<=' if ok else '>'} {spec.chars}")


def run_validator(spec: ValidatorSpec, text: str) -> ValidationResult:
    if isinstance(spec, JsonSchemaCheck):
        return check_json_schema(spec.json_schema, text, allow_code_fence=spec.allow_code_fence)
    if isinstance(spec, RegexCheck):
        return check_regex(spec, text)
    if isinstance(spec, NonEmptyCheck):
        return check_non_empty(text)
    if isinstance(spec, RefusalCheck):
        return check_refusal(spec, text)
    return check_max_length(spec, text)


def run_validators(specs: Iterable[ValidatorSpec], text: str) -> list[ValidationResult]:
    """Every validator's result, in spec order (no short-circuit: all reasons are recorded)."""
    return [run_validator(spec, text) for spec in specs]


def all_passed(results: Iterable[ValidationResult]) -> bool:
    return all(r.ok for r in results)
