"""Answer validators: json_schema, regex, non_empty, refusal, max_length."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from policies.validator_specs import ValidatorSpec
from policies.validators import all_passed, run_validator, run_validators

SPEC: TypeAdapter[Any] = TypeAdapter(ValidatorSpec)


def check(spec: dict[str, Any], text: str) -> tuple[bool, str]:
    result = run_validator(SPEC.validate_python(spec), text)
    assert result.validator == spec["kind"]
    return result.ok, result.reason


SCHEMA = {
    "type": "object",
    "required": ["answer"],
    "properties": {"answer": {"type": "string"}, "n": {"type": "integer", "minimum": 0}},
}


@pytest.mark.parametrize(
    ("text", "ok", "fragment"),
    [
        ('{"answer": "yes", "n": 2}', True, "valid"),
        ('{"answer": "yes", "n": -1}', False, "at n:"),
        ('{"n": 1}', False, "'answer' is a required property"),
        ("not json", False, "not valid JSON"),
        ('```json\n{"answer": "x"}\n```', False, "not valid JSON"),
    ],
)
def test_json_schema(text: str, ok: bool, fragment: str) -> None:
    passed, reason = check({"kind": "json_schema", "schema": SCHEMA}, text)
    assert passed is ok and fragment in reason


def test_json_schema_code_fence_and_remote_refs() -> None:
    fenced = '```json\n{"answer": "x"}\n```'
    assert check({"kind": "json_schema", "schema": SCHEMA, "allow_code_fence": True}, fenced)[0]
    # Remote references are never fetched (pure): the check fails with a reason instead.
    ok, reason = check({"kind": "json_schema", "schema": {"$ref": "https://example.com/s"}}, "{}")
    assert not ok and "cannot be resolved" in reason


def test_regex_modes() -> None:
    assert check({"kind": "regex", "pattern": r"^\d+$"}, "123")[0]
    assert not check({"kind": "regex", "pattern": r"^\d+$"}, "12a")[0]
    assert not check({"kind": "regex", "pattern": "secret", "mode": "must_not_match"}, "a secret")[
        0
    ]
    assert check({"kind": "regex", "pattern": "SECRET", "ignore_case": True}, "a secret")[0]


@pytest.mark.parametrize(("text", "ok"), [("", False), ("  \n\t", False), (" x ", True)])
def test_non_empty(text: str, ok: bool) -> None:
    assert check({"kind": "non_empty"}, text)[0] is ok


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I am sorry, I cannot assist with this request.",
        "I apologize, but I cannot provide that information.",
        "Unfortunately I can't comply with this request.",
        "As an AI language model, I cannot browse the internet.",
        "I must respectfully decline.",
        "I'm unable to help with that request.",
        "That request goes against my guidelines.",
    ],
)
def test_refusals_are_detected(text: str) -> None:
    ok, reason = check({"kind": "refusal"}, text)
    assert not ok and "refusal" in reason


@pytest.mark.parametrize(
    "text",
    [
        "Sure! Here is the function you asked for.",
        "I'm sorry to hear that your build failed; here is how to fix it.",
        "The error says the server can't help with requests over 1 MB.",
        "x" * 500 + " I cannot help with that.",  # beyond the inspected window
    ],
)
def test_non_refusals_pass(text: str) -> None:
    assert check({"kind": "refusal"}, text)[0]


def test_refusal_extra_patterns_and_window() -> None:
    spec = {"kind": "refusal", "extra_patterns": ["policy forbids"], "window_chars": 1000}
    assert not check(spec, "Our policy forbids this.")[0]
    assert not check(spec, "x" * 500 + " I cannot help with that.")[0]


def test_max_length() -> None:
    assert check({"kind": "max_length", "chars": 3}, "abc")[0]
    ok, reason = check({"kind": "max_length", "chars": 3}, "abcd")
    assert not ok and reason == "4 chars > 3"


def test_run_validators_reports_every_result_in_order() -> None:
    specs = [
        SPEC.validate_python({"kind": "non_empty"}),
        SPEC.validate_python({"kind": "max_length", "chars": 2}),
        SPEC.validate_python({"kind": "refusal"}),
    ]
    results = run_validators(specs, "hello")
    assert [(r.validator, r.ok) for r in results] == [
        ("non_empty", True),
        ("max_length", False),
        ("refusal", True),
    ]
    assert not all_passed(results)
    assert all_passed(run_validators(specs[:1], "x"))
