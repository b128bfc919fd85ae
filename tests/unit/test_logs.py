"""Log hygiene: repeated warnings are rate-limited (with a count of what was dropped), other
levels and distinct messages pass, secrets are redacted."""

from __future__ import annotations

import logging

from gateway.logs import RateLimitFilter, RedactingFilter


def _record(msg: str, level: int = logging.ERROR, *args: object) -> logging.LogRecord:
    return logging.LogRecord("tollgate.x", level, __file__, 1, msg, args, None)


def test_repeated_errors_are_rate_limited_and_counted() -> None:
    f = RateLimitFilter(burst=3, interval_s=60)
    passed = [f.filter(_record("store down: %s", logging.ERROR, i)) for i in range(50)]
    assert passed.count(True) == 3
    assert f.filter(_record("another template"))  # a different message has its own budget
    assert all(f.filter(_record("x", logging.INFO)) for _ in range(20))  # info is untouched


def test_the_next_window_reports_what_was_suppressed() -> None:
    f = RateLimitFilter(burst=1, interval_s=0.0)
    assert f.filter(_record("boom"))
    f.interval_s = 60
    assert not f.filter(_record("boom"))
    assert not f.filter(_record("boom"))
    f.interval_s = 0.0
    rec = _record("boom")
    assert f.filter(rec)
    assert rec.getMessage() == "boom (2 similar suppressed)"


def test_secrets_are_redacted() -> None:
    rec = _record("key %s used", logging.WARNING, "tg-abcdefghijklmnopqrstuvwxyz")
    assert RedactingFilter().filter(rec)
    assert "abcdefghijklmnop" not in rec.getMessage()
