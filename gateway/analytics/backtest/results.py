"""A backtest's result: each replayed request under one policy set (:class:`Replayed`), the
aggregates of a side (:class:`Summary`: spend, success rate, cost per successful task, backend
mix) and both sides with their difference (:class:`BacktestResult`). Pure values."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

ESTIMATED = "estimated (predictor)"
#: what an estimated candidate row of a store replay is, for the reader
ESTIMATED_TEXT = (
    "estimated (predictor): cost = the recorded prompt and completion tokens x that "
    "backend's price, success = the stored predicted P(success)"
)
NO_BACKEND = "(none)"


class BacktestError(ValueError):
    """A backtest cannot run as asked (unknown dataset or backend, no mapping, no store…);
    the message says what to change."""


@dataclass(frozen=True)
class Replayed:
    """One request under one policy set."""

    id: str
    policy: str | None
    rule: str | None
    backend: str | None
    #: USD spent (recorded, or estimated when ``estimated``); priced attempts only.
    cost_usd: Decimal
    #: 1/0 recorded, the predicted P(success) when ``estimated``, ``None`` unknown.
    success: float | None
    estimated: bool = False
    #: Some of the cost is unknown (an unpriced backend or attempt).
    unpriced: bool = False
    #: The decision's error code when no backend was chosen (the request would fail).
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "policy": self.policy,
            "rule": self.rule,
            "backend": self.backend,
            "cost_usd": str(self.cost_usd),
            "success": self.success,
            "estimated": self.estimated,
            "unpriced": self.unpriced,
            "error": self.error,
        }


def _div(a: Decimal, b: float) -> Decimal | None:
    return None if b <= 0 else a / Decimal(repr(b))


@dataclass(frozen=True)
class Summary:
    """Aggregates over the replayed requests of one side.

    ``succeeded`` / ``failed`` are expected counts: recorded 0/1 outcomes plus, for estimated
    rows, the predicted P(success) (and 1 - P). A request whose policy chose no backend is a
    failure at no cost. Unknown outcomes are left out of the success rate, never successes.
    """

    requests: int
    served: int
    spend_usd: Decimal
    unpriced: int
    succeeded: float
    failed: float
    unknown: int
    estimated: int
    mix: dict[str, int]

    @classmethod
    def of(cls, rows: Sequence[Replayed]) -> Summary:
        ok = sum(r.success for r in rows if r.success is not None)
        known = sum(1 for r in rows if r.success is not None)
        mix = Counter(r.backend or NO_BACKEND for r in rows)
        return cls(
            requests=len(rows),
            served=sum(1 for r in rows if r.backend is not None),
            spend_usd=sum((r.cost_usd for r in rows), Decimal(0)),
            unpriced=sum(1 for r in rows if r.unpriced),
            succeeded=float(ok),
            failed=float(known - ok),
            unknown=len(rows) - known,
            estimated=sum(1 for r in rows if r.estimated),
            mix=dict(sorted(mix.items(), key=lambda kv: (-kv[1], kv[0]))),
        )

    @property
    def success_rate(self) -> float | None:
        known = self.succeeded + self.failed
        return self.succeeded / known if known > 0 else None

    @property
    def cost_per_success(self) -> Decimal | None:
        return _div(self.spend_usd, self.succeeded)

    def mix_share(self) -> dict[str, float]:
        return {k: v / self.requests for k, v in self.mix.items()} if self.requests else {}

    def to_dict(self) -> dict[str, Any]:
        cps = self.cost_per_success
        rate = self.success_rate
        return {
            "requests": self.requests,
            "served": self.served,
            "spend_usd": str(self.spend_usd),
            "unpriced": self.unpriced,
            "succeeded": round(self.succeeded, 4),
            "failed": round(self.failed, 4),
            "unknown": self.unknown,
            "success_rate": None if rate is None else round(rate, 6),
            "cost_per_successful_task_usd": None if cps is None else str(_round_usd(cps)),
            "mix": self.mix,
            "mix_share": {k: round(v, 6) for k, v in self.mix_share().items()},
            "estimated_rows": self.estimated,
            "estimate": ESTIMATED if self.estimated else None,
        }


def _round_usd(value: Decimal) -> Decimal:
    return value.quantize(Decimal("1e-12"))


@dataclass(frozen=True)
class Side:
    """One policy set's replay: the label (``current`` / ``candidate``) and its rows."""

    label: str
    version: str | None
    rows: tuple[Replayed, ...]

    @property
    def summary(self) -> Summary:
        return Summary.of(self.rows)


def _change(new: float | Decimal | None, old: float | Decimal | None) -> dict[str, Any]:
    if new is None or old is None:
        return {"abs": None, "pct": None}
    delta = new - old  # type: ignore[operator]
    pct = None if old == 0 else float(delta) / float(old) * 100
    value: Any = str(_round_usd(delta)) if isinstance(delta, Decimal) else round(delta, 6)
    return {"abs": value, "pct": None if pct is None else round(pct, 2)}


@dataclass(frozen=True)
class BacktestResult:
    """Both sides of a backtest plus what the reader must know to trust the numbers."""

    source: str
    current: Side
    candidate: Side
    notes: tuple[str, ...] = ()
    #: True when the predictor was trained on these very queries; None: not applicable.
    in_sample: bool | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def diff(self) -> dict[str, Any]:
        """Candidate minus current: absolute and % (success rate: points, as a fraction)."""
        a, b = self.current.summary, self.candidate.summary
        return {
            "spend_usd": _change(b.spend_usd, a.spend_usd),
            "success_rate": _change(b.success_rate, a.success_rate),
            "cost_per_successful_task_usd": _change(b.cost_per_success, a.cost_per_success),
            "succeeded": _change(b.succeeded, a.succeeded),
        }

    @property
    def changed(self) -> int:
        """Requests where the candidate chose a different backend."""
        return sum(
            1
            for x, y in zip(self.current.rows, self.candidate.rows, strict=True)
            if x.backend != y.backend
        )

    def to_dict(self, rows: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "in_sample": self.in_sample,
            "meta": self.meta,
            "current": {"version": self.current.version, **self.current.summary.to_dict()},
            "candidate": {"version": self.candidate.version, **self.candidate.summary.to_dict()},
            "difference": self.diff(),
            "changed_choices": self.changed,
            "notes": list(self.notes),
        }
        if rows:
            out["rows"] = [
                {"current": x.to_dict(), "candidate": y.to_dict()}
                for x, y in zip(self.current.rows, self.candidate.rows, strict=True)
            ]
        return out
