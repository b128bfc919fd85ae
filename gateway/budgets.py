"""Budget enforcement: reserve a request's worst-case cost up front, settle to the real cost.

The budgets of a request are every limit that applies to it: its key's (``max_budget_usd``,
over the key's ``budget_window``), its tenant's, and the limits of the ``budgets:`` config
section and of the database (``tollgate budgets set``, ``/admin/budgets``) whose scope matches
— the key, the tenant (by name), the policy that serves it, or one of its tags. Each limit
counts in its window (``gateway.config.budgets``): a windowed limit's ledger scope embeds its
period (``tenant:<id>:day:2026-11-30``), so the next period starts from zero.

A reservation holds the worst case in every one of them at once, or in none (the first refusal
releases what was held): the ledger lives in the shared state (Redis across replicas). A scope
seen for the first time is seeded from the SQL store's recorded spend of that scope since its
window started, so a Redis restart does not reset anyone's budget. The clock is injectable
(``clock``) so that tests roll a window without waiting for midnight.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from gateway.auth import Principal
from gateway.config.budgets import BudgetLimit, BudgetsConfig, scope_id, window_bounds
from gateway.errors import BudgetExceeded
from gateway.state import RESERVATION_TTL_MS, SharedState, from_nano, to_nano
from gateway.store import budgets as budget_store
from gateway.store import queries

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("tollgate.budgets")
Clock = Callable[[], datetime]
# A windowed scope's counter outlives its window by this much (holds reserved just before
# the window ended still settle into it), then Redis drops it.
WINDOW_GRACE = timedelta(days=1)
DEFAULT_BUDGETS = BudgetsConfig()


def system_clock(offset_s: float = 0.0) -> Clock:
    """The wall clock (UTC), shifted by ``offset_s`` (``TOLLGATE_CLOCK_OFFSET_S``: tests)."""
    shift = timedelta(seconds=offset_s)
    return lambda: datetime.now(UTC) + shift


@dataclass(frozen=True)
class ScopeLimit:
    """One budget that applies to a request, in the period current now."""

    kind: str  # key | tenant | policy | tag
    ident: str  # the key id, the tenant id, the policy name, the tag
    window: str  # total | day | month
    limit: Decimal
    scope: str  # the ledger scope: kind:ident[:period]
    since: datetime | None  # the window's start (None: lifetime)
    until: datetime | None

    def describe(self) -> str:
        period = {"day": " (daily)", "month": " (monthly)"}.get(self.window, "")
        return f"{self.kind} {self.ident}{period}"


@dataclass
class Reservation:
    """One request's hold on each of its budgets; lapses by itself after ``ttl_ms``."""

    scopes: list[str] = field(default_factory=list)
    amount_nano: int = 0
    settled: bool = False
    hold: str = field(default_factory=lambda: uuid.uuid4().hex)


class BudgetLedger:
    def __init__(self, state: SharedState, engine: AsyncEngine, *, clock: Clock | None = None):
        self.state = state
        self.engine = engine
        self.clock = clock or system_clock()
        self._db: tuple[BudgetLimit, ...] = ()
        self._db_read_at: float | None = None
        self._db_lock = asyncio.Lock()

    # -- which limits apply --------------------------------------------------------------
    def forget_stored(self) -> None:
        """Read the database's limits again at the next request (this replica changed them)."""
        self._db_read_at = None

    async def stored_limits(self, cfg: BudgetsConfig) -> tuple[BudgetLimit, ...]:
        """The limits stored in the database, read at most every ``db_cache_s``; while the
        store is unreachable the last ones read stay in force."""

        def fresh() -> bool:
            at = self._db_read_at
            return at is not None and time.monotonic() - at < cfg.db_cache_s

        if fresh():
            return self._db
        async with self._db_lock:
            if fresh():
                return self._db
            try:
                self._db = tuple(await budget_store.list_limits(self.engine))
            except Exception as exc:  # the store is down: keep enforcing what we knew
                log.warning("stored budgets unreadable (%s); last ones apply", type(exc).__name__)
            self._db_read_at = time.monotonic()
        return self._db

    async def may_apply(self, principal: Principal, cfg: BudgetsConfig = DEFAULT_BUDGETS) -> bool:
        """Whether any budget may apply to this caller's requests (before the policy is known):
        then the request's tokens are counted and its worst case reserved."""
        if principal.key_budget_usd is not None or principal.tenant_budget_usd is not None:
            return True
        return bool(cfg.limits) or bool(await self.stored_limits(cfg))

    async def limits(
        self,
        principal: Principal,
        cfg: BudgetsConfig = DEFAULT_BUDGETS,
        *,
        policy: str | None = None,
        tags: Iterable[str] = (),
    ) -> list[ScopeLimit]:
        """Every budget that applies to a request of ``principal`` served by ``policy`` with
        ``tags``, in its current period; a scope limited twice keeps the lower limit."""
        now, zone, tagset = self.clock(), cfg.zone, frozenset(tags)
        found: dict[str, ScopeLimit] = {}

        def add(kind: str, ident: str, window: str, limit: Decimal) -> None:
            scope = scope_id(kind, ident, window, now, zone)
            since, until = window_bounds(window, now, zone)
            held = found.get(scope)
            if held is None or limit < held.limit:
                found[scope] = ScopeLimit(kind, ident, window, limit, scope, since, until)

        if principal.key_id and principal.key_budget_usd is not None:
            add("key", principal.key_id, principal.key_budget_window, principal.key_budget_usd)
        if principal.tenant_budget_usd is not None:
            add("tenant", principal.tenant_id, "total", principal.tenant_budget_usd)
        for limit in (*cfg.limits, *(await self.stored_limits(cfg))):
            if limit.scope == "key" and limit.name == principal.key_id:
                add("key", limit.name, limit.window, limit.max_usd)
            elif limit.scope == "tenant" and limit.name == principal.tenant_name:
                add("tenant", principal.tenant_id, limit.window, limit.max_usd)
            elif limit.scope == "policy" and limit.name == policy:
                add("policy", limit.name, limit.window, limit.max_usd)
            elif limit.scope == "tag" and limit.name in tagset:
                add("tag", limit.name, limit.window, limit.max_usd)
        return list(found.values())

    async def usage(
        self, limit: BudgetLimit, cfg: BudgetsConfig = DEFAULT_BUDGETS
    ) -> dict[str, object]:
        """Where one limit stands in its current period (for the admin API): its ledger
        scope, the period's bounds, spent and in flight (USD)."""
        ident: str | None = limit.name
        if limit.scope == "tenant":
            ident = await queries.tenant_id_by_name(self.engine, limit.name)
        now, zone = self.clock(), cfg.zone
        since, until = window_bounds(limit.window, now, zone)
        out: dict[str, object] = {
            "period_start": since.isoformat() if since else None,
            "period_end": until.isoformat() if until else None,
            "spent_usd": "0",
            "in_flight_usd": "0",
        }
        if ident is None:  # a tenant with no key yet has spent nothing
            return out
        scope = scope_id(limit.scope, ident, limit.window, now, zone)
        entry = ScopeLimit(limit.scope, ident, limit.window, limit.max_usd, scope, since, until)
        await self._seed(entry)
        spent, held = await self.state.budget_spent(scope)
        out["ledger_scope"] = scope
        out.update(spent_usd=str(from_nano(spent)), in_flight_usd=str(from_nano(held)))
        return out

    # -- the ledger ----------------------------------------------------------------------
    async def _seed(self, limit: ScopeLimit) -> None:
        if await self.state.budget_seeded(limit.scope):
            return
        kind, ident = limit.kind, limit.ident
        spent = await queries.recorded_spend(
            self.engine,
            key_id=ident if kind == "key" else None,
            tenant_id=ident if kind == "tenant" else None,
            policy=ident if kind == "policy" else None,
            tag=ident if kind == "tag" else None,
            since=limit.since,
        )
        ttl_ms = None
        if limit.until is not None:
            ttl_ms = max(1, int((limit.until + WINDOW_GRACE - self.clock()).total_seconds() * 1000))
        await self.state.budget_seed(limit.scope, to_nano(spent), ttl_ms)

    async def remaining(self, limits: list[ScopeLimit]) -> tuple[Decimal | None, float | None]:
        """(USD left, share of its limit left) of the tightest of ``limits`` (None, None: no
        budget applies); what is reserved in flight counts as spent."""
        usd: Decimal | None = None
        share: float | None = None
        for limit in limits:
            await self._seed(limit)
            spent, held = await self.state.budget_spent(limit.scope)
            left = limit.limit - from_nano(spent + held)
            frac = float(left / limit.limit) if limit.limit > 0 else 0.0
            usd = left if usd is None else min(usd, left)
            share = max(0.0, frac) if share is None else min(share, max(0.0, frac))
        return usd, share

    async def reserve(
        self,
        principal: Principal,
        worst_case_usd: Decimal,
        *,
        cfg: BudgetsConfig = DEFAULT_BUDGETS,
        policy: str | None = None,
        tags: Iterable[str] = (),
        ttl_ms: int = RESERVATION_TTL_MS,
    ) -> Reservation:
        """Reserve ``worst_case_usd`` in every budget of the request, or raise BudgetExceeded
        (holding nothing). The hold lapses after ``ttl_ms`` if it is never settled (its
        replica died)."""
        reservation = Reservation(amount_nano=to_nano(worst_case_usd, round_up=True))
        for limit in await self.limits(principal, cfg, policy=policy, tags=tags):
            await self._seed(limit)
            ok = await self.state.budget_reserve(
                limit.scope, to_nano(limit.limit), reservation.amount_nano, reservation.hold, ttl_ms
            )
            if not ok:
                await self.settle(reservation, Decimal(0))
                spent, reserved = await self.state.budget_spent(limit.scope)
                raise BudgetExceeded(
                    f"budget exceeded for {limit.describe()}: limit ${limit.limit}, spent "
                    f"${from_nano(spent)}, in flight ${from_nano(reserved)}, this request may cost "
                    f"up to ${worst_case_usd.quantize(Decimal('1e-8'))}; raise the budget or "
                    f"lower max_tokens"
                )
            reservation.scopes.append(limit.scope)
        return reservation

    async def settle(self, reservation: Reservation, actual_usd: Decimal) -> None:
        if reservation.settled:
            return
        reservation.settled = True
        actual = to_nano(actual_usd)
        for scope in reservation.scopes:
            await self.state.budget_settle(scope, reservation.hold, actual)
