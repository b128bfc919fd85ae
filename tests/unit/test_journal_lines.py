"""The write-ahead journal's lines (``gateway.store.journal.journal_line``, orjson on the hot
path) read back as the rows they were, and say what the json-module encoding said: a journal
written by one version of the gateway is recovered by another."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.store.journal import decode_row, encode_row, journal_line


def _row(**extra: Any) -> dict[str, Any]:
    return {
        "id": "a1",
        "status": "ok",
        "prompt_tokens": 13,
        "cost_usd": Decimal("0.0000122"),
        "cache_saved_usd": None,
        "latency_ms": 22.75,
        "created_at": datetime(2026, 11, 30, 14, 31, 6, 742954, tzinfo=UTC),
        "finished_at": datetime(2026, 11, 30, 14, 31, 7, tzinfo=UTC),  # no microseconds
        "decision": {"policy": "default", "p_success": {"cheap": 0.5}, "why": "naïve ✓"},
        "tags": ",a,b,",
        "streamed": False,
        **extra,
    }


def _old_line(kind: str, row: dict[str, Any]) -> str:
    return json.dumps({"k": kind, "r": encode_row(row)}, separators=(",", ":"))


def test_a_line_reads_back_as_its_row() -> None:
    row = _row()
    item = json.loads(journal_line("attempt", row))
    assert item["k"] == "attempt"
    assert decode_row(item["r"]) == row


def test_a_line_says_what_the_json_module_said() -> None:
    for row in (_row(), _row(cost_usd=None, decision=None), _row(cost_usd=Decimal("1E-12"))):
        assert json.loads(journal_line("task", row)) == json.loads(_old_line("task", row))


def test_what_orjson_refuses_takes_the_json_module_way() -> None:
    huge = _row(prompt_tokens=2**70)  # past 64 bits; a lone surrogate, too
    lone = _row(tags="\ud800")
    for row in (huge, lone):
        assert journal_line("attempt", row) == _old_line("attempt", row)
    assert decode_row(json.loads(journal_line("attempt", huge))["r"]) == huge


def test_a_line_with_a_unicode_line_break_is_recovered(tmp_path: Path) -> None:
    # orjson writes U+2028, U+2029 and U+0085 as they are (json.dumps escaped them): a reader
    # that splits on every Unicode line break would tear the line and drop the row
    from gateway.store.journal import Segment, read_orphan

    seg = Segment(tmp_path)
    outcome = {
        "id": "o1",
        "updated_at": datetime(2026, 11, 30, 14, 31, 6, tzinfo=UTC),
        "comment": "tenant text\u2028with\u2029line\x85breaks",
    }
    attempt = _row(decision={"why": "rule\u2028two"})
    seg.append("outcome", outcome)
    seg.append("attempt", attempt)
    seg.fh.close()
    attempts, tasks, outcomes = read_orphan(seg.path)
    assert outcomes == [outcome]
    assert attempts == [attempt]
    assert tasks == []
