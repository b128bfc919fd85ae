"""The record of one client request that its access-log line and its trace are written from.

The HTTP edge (``gateway.http.observe``) opens a ``RequestRecord`` for each request and binds it
to the request's context; the pipeline offers every attempt row it records (``note_attempt``),
which costs one context-variable read and a list append, and notes who asked and the policy
(``note_request``) before the first attempt. A request with no record bound (a
test calling the pipeline directly, a background judge call) notes nothing.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

_CURRENT: ContextVar[RequestRecord | None] = ContextVar("tollgate_request_record", default=None)


@dataclass
class RequestRecord:
    """What one request did: its attempts (the rows written to the store), when it started,
    and what the edge learned from the response (status, error type)."""

    request_id: str
    method: str
    path: str
    started_ns: int = field(default_factory=time.time_ns)
    t0: float = field(default_factory=time.perf_counter)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    status: int = 0
    error_type: str | None = None
    requested_model: str | None = None
    # who asked and which policy took it, noted by the pipeline before any attempt: a request
    # refused before its first attempt (budget, rate limit, unknown model) has no row to say it
    tenant_id: str | None = None
    key_id: str | None = None
    policy: str | None = None

    # -- sums over the attempts --------------------------------------------------------------
    def _last(self, key: str) -> Any:
        for row in reversed(self.attempts):
            if row.get(key) is not None:
                return row[key]
        return None

    @property
    def served_by(self) -> dict[str, Any] | None:
        """The attempt whose answer the client got (the last successful one), if any."""
        for row in reversed(self.attempts):
            if row.get("status") in ("ok", "rejected"):
                return row
        return None

    def tokens(self, kind: str) -> int:
        return sum(int(row.get(f"{kind}_tokens") or 0) for row in self.attempts)

    def cost(self) -> Decimal | None:
        """All attempts' cost; None when one of them is unpriced."""
        total = Decimal(0)
        for row in self.attempts:
            if row.get("cost_usd") is None:
                return None
            total += Decimal(str(row["cost_usd"]))
        return total

    def summary(self) -> dict[str, Any]:
        """Request-level facts from the attempt rows (what the access line and span carry)."""
        served = self.served_by or (self.attempts[-1] if self.attempts else {})
        return {
            "task_id": self._last("task_id"),
            "tenant": self._last("tenant_id") or self.tenant_id,
            "key_id": self._last("key_id") or self.key_id,
            "policy": self._last("policy") or self.policy,
            "endpoint": self._last("endpoint"),
            "backend": served.get("backend"),
            "model": served.get("model"),
            "streamed": served.get("streamed"),
            "attempts": len(self.attempts),
            "prompt_tokens": self.tokens("prompt"),
            "completion_tokens": self.tokens("completion"),
            "cost": self.cost(),
            # the serving attempt's own failure (a stream that broke after its first chunk), or
            # the last failure when no attempt answered
            "attempt_error": served.get("error_type") if served.get("status") != "ok" else None,
        }


def bind(record: RequestRecord) -> Any:
    """Make ``record`` the current request's record; returns the token for ``unbind``."""
    return _CURRENT.set(record)


def unbind(token: Any) -> None:
    _CURRENT.reset(token)


def current() -> RequestRecord | None:
    return _CURRENT.get()


def note_request(**facts: str | None) -> None:
    """Note facts of the current request once known: ``tenant_id``, ``key_id``, ``policy``, or
    ``error_type`` (an edge whose error body cannot carry Tollgate's code)."""
    record = _CURRENT.get()
    if record is not None:
        for name, value in facts.items():
            setattr(record, name, value)


def note_attempt(row: dict[str, Any]) -> None:
    """Offer one recorded attempt row (as written to the store) to the current request."""
    record = _CURRENT.get()
    if record is not None:
        record.attempts.append(row)
