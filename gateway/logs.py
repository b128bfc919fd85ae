"""Logging set-up: one format, a filter that scrubs anything that looks like a secret, and one
that rate-limits repeated warnings and errors (an outage must not flood the logs)."""

from __future__ import annotations

import logging
import re
import time

SECRET = re.compile(r"(tg-[A-Za-z0-9_\-]{16,}|sk-[A-Za-z0-9_\-]{16,}|Bearer\s+\S+)")


def redact(text: str) -> str:
    return SECRET.sub(lambda m: m.group(0)[:6] + "…[redacted]", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class RateLimitFilter(logging.Filter):
    """At most ``burst`` records per ``interval_s`` for each (logger, level, message template)
    at WARNING and above; the next record let through says how many were suppressed, and a
    suppressed record's traceback is never formatted. Lower levels pass untouched."""

    def __init__(self, burst: int = 5, interval_s: float = 10.0) -> None:
        super().__init__()
        self.burst = burst
        self.interval_s = interval_s
        self._windows: dict[tuple[str, int, str], tuple[float, int, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        start, count, suppressed = self._windows.get(key, (now, 0, 0))
        if now - start >= self.interval_s:
            start, count = now, 0
        if count >= self.burst:
            self._windows[key] = (start, count, suppressed + 1)
            return False
        if suppressed:
            record.msg = f"{record.getMessage()} ({suppressed} similar suppressed)"
            record.args = None
        self._windows[key] = (start, count + 1, 0)
        if len(self._windows) > 10_000:  # templates are few; ids in messages must not leak memory
            self._windows.clear()
        return True


def configure_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if not any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(RateLimitFilter())
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
    logging.getLogger("tollgate").setLevel(level)
    for noisy in ("LiteLLM", "litellm", "httpx", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
