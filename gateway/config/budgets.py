"""Budget limits as operators write them (the ``budgets:`` section), and the calendar windows
they count in.

A limit caps the spend of one *scope* — a key, a tenant, a policy or a request tag — over a
*window*: ``total`` (lifetime), ``day`` or ``month``, calendar periods in the configured time
zone (``budgets.timezone``, an IANA name read with :mod:`zoneinfo`; default UTC). A windowed
limit's ledger scope embeds its period (``tenant:<id>:day:2026-11-30``), so a new period starts
from zero on its own and the old one is simply never read again; a lifetime scope keeps the
plain id (``key:<id>``). Pure functions of a clock value: no I/O here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from gateway.config.sections import Strict

ScopeKind = Literal["key", "tenant", "policy", "tag"]
Window = Literal["total", "day", "month"]
WINDOWS: tuple[str, ...] = ("total", "day", "month")
#: The most one budget may be (USD): larger values are a typo, and would overflow nano-USD.
MAX_BUDGET_USD = Decimal("1e9")
SCOPE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]*$"


class BudgetLimit(Strict):
    """One limit: at most ``max_usd`` spent by ``scope`` ``name`` per ``window``."""

    scope: ScopeKind
    #: The tenant's name, the policy's name, the tag, or the key's id.
    name: str = Field(min_length=1, max_length=128, pattern=SCOPE_NAME)
    max_usd: Decimal = Field(ge=0, le=MAX_BUDGET_USD, allow_inf_nan=False)
    window: Window = "total"


class BudgetsConfig(Strict):
    """The ``budgets:`` section: the windows' time zone and the limits set in the file (the CLI
    and the admin API add limits stored in the database; see ``docs/configuration.md``)."""

    timezone: str = "UTC"
    limits: tuple[BudgetLimit, ...] = ()
    #: How long a replica trusts the limits it read from the database (CLI / admin API ones).
    db_cache_s: float = Field(default=5.0, ge=0, le=3600)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        zone_of(value)
        return value

    @field_validator("limits")
    @classmethod
    def _no_duplicates(cls, limits: tuple[BudgetLimit, ...]) -> tuple[BudgetLimit, ...]:
        seen: dict[tuple[str, str, str], int] = {}
        for i, limit in enumerate(limits):
            ident = (limit.scope, limit.name, limit.window)
            if ident in seen:
                raise ValueError(
                    f"limits[{i}]: {limit.scope} {limit.name!r} already has a {limit.window} "
                    f"limit at limits[{seen[ident]}]"
                )
            seen[ident] = i
        return limits

    @property
    def zone(self) -> ZoneInfo:
        return zone_of(self.timezone)


def zone_of(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; a ValueError naming it when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as UTC or Europe/Paris"
        ) from None


def window_bounds(
    window: str, now: datetime, zone: ZoneInfo
) -> tuple[datetime | None, datetime | None]:
    """[start, end) of the ``window`` that contains ``now``, in UTC (``total``: None, None).
    Calendar periods in ``zone``: a day starts at local midnight, a month on its 1st."""
    if window == "total":
        return None, None
    local = now.astimezone(zone)
    if window == "day":
        start = datetime(local.year, local.month, local.day, tzinfo=zone)
        nxt = (start.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=zone)
    elif window == "month":
        start = datetime(local.year, local.month, 1, tzinfo=zone)
        year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        nxt = datetime(year, month, 1, tzinfo=zone)
    else:
        raise ValueError(f"unknown budget window {window!r}; one of {', '.join(WINDOWS)}")
    return start.astimezone(UTC), nxt.astimezone(UTC)


def period_label(window: str, now: datetime, zone: ZoneInfo) -> str:
    """The period of ``now`` as it appears in a scope id: ``day:2026-11-30``, ``month:2026-11``,
    or "" for a lifetime window."""
    if window == "total":
        return ""
    local = now.astimezone(zone)
    if window == "day":
        return f"day:{local:%Y-%m-%d}"
    if window == "month":
        return f"month:{local:%Y-%m}"
    raise ValueError(f"unknown budget window {window!r}; one of {', '.join(WINDOWS)}")


def scope_id(kind: str, ident: str, window: str, now: datetime, zone: ZoneInfo) -> str:
    """The ledger scope of one limit now: ``key:<id>`` for a lifetime window (as before windows
    existed), ``key:<id>:day:2026-11-30`` for a windowed one."""
    label = period_label(window, now, zone)
    return f"{kind}:{ident}:{label}" if label else f"{kind}:{ident}"
