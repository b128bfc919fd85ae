"""What a report holds: one row per group (:class:`GroupStats`, with the derived rates: success
rate, cost per successful task, error and fallback rates, latency percentiles), the savings
against a baseline backend, the judge's spend, the response cache's hits and savings, and the
whole :class:`Report`, each with the JSON shape the CLI and ``GET /v1/spend`` print."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from gateway.analytics.reports.latency import histogram_percentile
from gateway.analytics.reports.query import ReportKind, ReportQuery
from gateway.pricing import format_usd
from gateway.store.models import LATENCY_BUCKETS


@dataclass
class GroupStats:
    """One row of a report (a group, or the total)."""

    group: str
    label: str
    kind: ReportKind = "spend"
    requests: int = 0
    attempts: int = 0
    errors: int = 0
    extra_attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    spend: Decimal = Decimal(0)
    unpriced_attempts: int = 0
    tasks: int = 0
    succeeded: int = 0
    failed: int = 0
    task_spend: Decimal = Decimal(0)
    ok_prompt_tokens: int = 0
    ok_completion_tokens: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * LATENCY_BUCKETS)
    baseline_cost: Decimal | None = None

    @property
    def unknown(self) -> int:
        return self.tasks - self.succeeded - self.failed

    @property
    def success_rate(self) -> float | None:
        known = self.succeeded + self.failed
        return self.succeeded / known if known else None

    @property
    def cost_per_successful_task(self) -> Decimal | None:
        money = self.task_spend if self.kind == "tasks" else self.spend
        return money / self.succeeded if self.succeeded else None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.attempts if self.attempts else None

    @property
    def fallback_rate(self) -> float | None:
        return self.extra_attempts / self.attempts if self.attempts else None

    @property
    def p50_latency_ms(self) -> float | None:
        return histogram_percentile(self.latency, 0.5)

    @property
    def p95_latency_ms(self) -> float | None:
        return histogram_percentile(self.latency, 0.95)

    def add(self, sums: dict[str, Any], prefix: str = "") -> None:
        """Add summed cell columns (from ATTEMPT_SUMS / TASK_SUMS)."""
        for col, value in sums.items():
            if value is None:
                continue
            if col in ("spend", "task_spend"):
                current = getattr(self, col)
                setattr(self, col, current + Decimal(str(value)))
            elif col.startswith("l") and col[1:].isdigit():
                self.latency[int(col[1:])] += int(value)
            else:
                attr = _ATTR.get(col, col)
                setattr(self, attr, getattr(self, attr) + int(value))

    def as_dict(self) -> dict[str, Any]:
        cpst = self.cost_per_successful_task
        return {
            "group": self.group,
            "label": self.label,
            "requests": self.requests,
            "attempts": self.attempts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "spend_usd": format_usd(self.spend),
            "task_spend_usd": format_usd(self.task_spend),
            "unpriced_attempts": self.unpriced_attempts,
            "tasks": self.tasks,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "unknown": self.unknown,
            "success_rate": _round(self.success_rate),
            "cost_per_successful_task_usd": format_usd(cpst) if cpst is not None else None,
            "p50_latency_ms": _round(self.p50_latency_ms, 1),
            "p95_latency_ms": _round(self.p95_latency_ms, 1),
            "error_rate": _round(self.error_rate),
            "fallback_rate": _round(self.fallback_rate),
            "baseline_cost_usd": format_usd(self.baseline_cost)
            if self.baseline_cost is not None
            else None,
        }


_ATTR = {
    "extra": "extra_attempts",
    "pt": "prompt_tokens",
    "ct": "completion_tokens",
    "ok_pt": "ok_prompt_tokens",
    "ok_ct": "ok_completion_tokens",
    "unpriced": "unpriced_attempts",
}


@dataclass
class Savings:
    """The recorded traffic priced on a baseline backend, against what it did cost."""

    baseline: str
    actual_spend: Decimal
    baseline_cost: Decimal
    actual_success_rate: float | None
    baseline_success_rate: float | None  # of tasks the baseline itself answered, where known
    baseline_tasks_known: int

    @property
    def saved(self) -> Decimal:
        return self.baseline_cost - self.actual_spend

    @property
    def saved_fraction(self) -> float | None:
        return float(self.saved / self.baseline_cost) if self.baseline_cost else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "actual_spend_usd": format_usd(self.actual_spend),
            "baseline_cost_usd": format_usd(self.baseline_cost),
            "saved_usd": format_usd(self.saved),
            "saved_fraction": _round(self.saved_fraction),
            "actual_success_rate": _round(self.actual_success_rate),
            "baseline_success_rate": _round(self.baseline_success_rate),
            "baseline_tasks_with_known_outcome": self.baseline_tasks_known,
        }


@dataclass
class JudgeSpend:
    """The judge's verdicts and what they cost over a report's range: evaluation overhead, kept
    apart from traffic spend (judge calls are never attempt rows)."""

    verdicts: int = 0
    passed: int = 0
    failed: int = 0
    spend: Decimal = Decimal(0)
    unpriced: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdicts": self.verdicts,
            "passed": self.passed,
            "failed": self.failed,
            "spend_usd": format_usd(self.spend),
            "unpriced_verdicts": self.unpriced,
        }


@dataclass
class CacheSavings:
    """Response cache hits over a report's range and what they saved: the cost of the reused
    answers when they were made (hits themselves are recorded at zero cost)."""

    hits: int = 0
    requests: int = 0
    saved: Decimal = Decimal(0)
    unpriced: int = 0  # hits whose reused answer was unpriced

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.requests if self.requests else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "hits": self.hits,
            "requests": self.requests,
            "hit_rate": _round(self.hit_rate),
            "saved_usd": format_usd(self.saved),
            "unpriced_hits": self.unpriced,
        }


@dataclass
class Report:
    kind: ReportKind
    query: ReportQuery
    rows: list[GroupStats]
    total: GroupStats
    savings: Savings | None = None
    judge: JudgeSpend | None = None  # spend reports only
    cache: CacheSavings | None = None  # spend reports only

    def as_dict(self) -> dict[str, Any]:
        q = self.query
        return {
            "object": "tollgate.report",
            "kind": self.kind,
            "group_by": q.group_by,
            "start": q.start.isoformat() if q.start else None,
            "end": q.end.isoformat() if q.end else None,
            "rows": [r.as_dict() for r in self.rows],
            "total": self.total.as_dict(),
            "savings": self.savings.as_dict() if self.savings else None,
            "judge": self.judge.as_dict() if self.judge else None,
            "cache": self.cache.as_dict() if self.cache else None,
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
