"""What a routing decision says about the predictor's part in it: the statuses a predictor
call ends with (:class:`Scored`, and the client's counts of them, :class:`ClientStats`), the
outcome stored with the decision (``ok``, or ``fallback`` and why), the
``x-tollgate-predictor`` header, and a rate-limited log of decisions made without it."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from predictors.service import Prediction

log = logging.getLogger("tollgate.predictor")


@dataclass(frozen=True)
class Scored:
    """The outcome of one call: a prediction, or ``None`` and the reason (``status``)."""

    prediction: Prediction | None
    status: str
    ms: float
    cached: bool = False
    #: for a timeout: ``expired`` (not started by its deadline), ``late`` (answered after
    #: it) or ``no_answer`` (nothing within the grace)
    detail: str | None = None

    def record(self) -> dict[str, Any]:
        """What the stored decision says about the predictor for this request."""
        out: dict[str, Any] = {"status": self.status, "ms": round(self.ms, 3)}
        if self.cached:
            out["cached"] = True
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass
class ClientStats:
    calls: int = 0
    cache_hits: int = 0
    coalesced: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    restarts: int = 0
    # timeouts by kind: not started by its deadline, answered after it, or no answer at all
    expired: int = 0
    late: int = 0
    gave_up: int = 0


OK, TIMEOUT, ERROR, UNAVAILABLE, OVERLOADED = "ok", "timeout", "error", "unavailable", "overloaded"
FALLBACK_REASONS = (TIMEOUT, ERROR, UNAVAILABLE, OVERLOADED)


def outcome_of(fell_back: bool, called: dict[str, Any]) -> dict[str, Any]:
    """What a decision records about the predictor: ``{"status": "ok", ...}``, or
    ``{"status": "fallback", "reason": ...}`` when the policy's ``predictor_fallback`` chose.

    ``called`` is :meth:`Scored.record` (or ``{"status": "disabled"}`` with no predictor);
    ``fell_back`` is whether the decision was made without an estimate. The reason is why
    there was none: the call's status, or ``no_estimate`` when the predictor answered but has
    no profile for any eligible candidate.
    """
    out = dict(called)
    status = out.pop("status", OK)
    if not fell_back:
        return {"status": OK, **out}
    return {"status": "fallback", "reason": status if status != OK else "no_estimate", **out}


def header_value(outcome: dict[str, Any]) -> str:
    """``x-tollgate-predictor``: ``ok`` or ``fallback:<reason>``."""
    if outcome.get("status") == "fallback":
        return f"fallback:{outcome.get('reason', 'unknown')}"
    return OK


class FallbackLog:
    """Logs predictor fallbacks without flooding: the first at once, then one summary line
    per ``every_s`` with the counts by reason (a fallback is also counted in ``/metrics``)."""

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s = every_s
        self._last = 0.0
        self._counts: Counter[str] = Counter()

    def note(self, reason: str, policy: str) -> None:
        self._counts[f"{policy}:{reason}"] += 1
        now = time.monotonic()
        if now - self._last >= self.every_s:
            summary = ", ".join(f"{k}={v}" for k, v in sorted(self._counts.items()))
            log.warning(
                "routing decisions made without the predictor (predictor_fallback applied) "
                "in the last %.0f s: %s",
                min(now - self._last, self.every_s) if self._last else 0.0,
                summary,
            )
            self._last = now
            self._counts.clear()


FALLBACK_LOG = FallbackLog()
