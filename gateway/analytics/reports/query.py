"""What a report is asked for: the grouping, the time range and the tenant, and the parser of
the time forms the CLI and the HTTP API accept (``7d``, ``today``, ISO dates)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

GroupBy = Literal["backend", "policy", "tenant", "key", "tag", "day"]
GROUP_BYS: tuple[str, ...] = get_args(GroupBy)
ReportKind = Literal["spend", "tasks"]
TOTAL = "(total)"
NONE_LABEL = "(none)"


@dataclass(frozen=True)
class ReportQuery:
    """What to report on: a time range [start, end), one tenant or all, and the grouping."""

    group_by: GroupBy = "backend"
    start: datetime | None = None
    end: datetime | None = None
    tenant_id: str | None = None  # None: every tenant (admin)
    tags: dict[str, tuple[str, ...]] = field(default_factory=dict)  # tag -> backends


def parse_when(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """'7d', '12h', '30m' (ago), 'today', or an ISO date/time (UTC when no zone is given)."""
    if text is None or text == "":
        return None
    now = now or datetime.now(UTC)
    t = text.strip().lower()
    units = {"d": "days", "h": "hours", "m": "minutes", "w": "weeks"}
    if t[-1:] in units and t[:-1].isdigit():
        try:
            return now - timedelta(**{units[t[-1]]: int(t[:-1])})
        except OverflowError:  # 99999999d: before year 1
            raise ValueError(f"age {text!r} reaches before the year 1: use a smaller one") from None
    if t == "today":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"cannot read time {text!r}: use an ISO date/time (2026-01-31, 2026-01-31T12:00) "
            "or an age such as 7d, 12h, 30m"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
