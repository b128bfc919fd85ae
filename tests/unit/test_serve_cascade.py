"""The request path's cascade: what the verdict reads of an answer."""

from __future__ import annotations


def test_the_verdict_reads_the_first_choice_only() -> None:
    from gateway.serve.cascade import _facts

    two = {"choices": [{"message": {"content": "B"}}, {"message": {"content": "C, surely"}}]}
    facts = _facts(0.7, two)
    assert (facts.choice, facts.chars, facts.p_success) == ("B", 1, 0.7)
    assert _facts(None, {"choices": []}).p_success == 0.5
