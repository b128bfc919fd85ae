"""Budget enforcement: reserve a request's worst-case cost up front, settle to the real cost.

Scopes are a key's and a tenant's budgets (``max_budget_usd``). The ledger lives in the shared
state (Redis across replicas); a scope seen for the first time is seeded from the SQL store's
recorded spend, so a Redis restart does not reset anyone's budget.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from gateway.auth import Principal
from gateway.errors import BudgetExceeded
from gateway.state import RESERVATION_TTL_MS, SharedState, from_nano, to_nano
from gateway.store import queries

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


@dataclass
class Reservation:
    """One request's hold on each of its budgets; lapses by itself after ``ttl_ms``."""

    scopes: list[str] = field(default_factory=list)
    amount_nano: int = 0
    settled: bool = False
    hold: str = field(default_factory=lambda: uuid.uuid4().hex)


class BudgetLedger:
    def __init__(self, state: SharedState, engine: AsyncEngine) -> None:
        self.state = state
        self.engine = engine

    async def _seed(self, scope: str) -> None:
        if await self.state.budget_seeded(scope):
            return
        kind, _, ident = scope.partition(":")
        if kind == "key":
            spent = await queries.recorded_spend(self.engine, key_id=ident)
        else:
            spent = await queries.recorded_spend(self.engine, tenant_id=ident)
        await self.state.budget_seed(scope, to_nano(spent))

    @staticmethod
    def _limits(principal: Principal) -> list[tuple[str, Decimal]]:
        out = []
        if principal.key_id and principal.key_budget_usd is not None:
            out.append((f"key:{principal.key_id}", principal.key_budget_usd))
        if principal.tenant_budget_usd is not None:
            out.append((f"tenant:{principal.tenant_id}", principal.tenant_budget_usd))
        return out

    async def reserve(
        self, principal: Principal, worst_case_usd: Decimal, *, ttl_ms: int = RESERVATION_TTL_MS
    ) -> Reservation:
        """Reserve ``worst_case_usd`` in every budget of the caller, or raise BudgetExceeded.
        The hold lapses after ``ttl_ms`` if it is never settled (its replica died)."""
        reservation = Reservation(amount_nano=to_nano(worst_case_usd, round_up=True))
        for scope, limit in self._limits(principal):
            await self._seed(scope)
            ok = await self.state.budget_reserve(
                scope, to_nano(limit), reservation.amount_nano, reservation.hold, ttl_ms
            )
            if not ok:
                await self.settle(reservation, Decimal(0))
                spent, reserved = await self.state.budget_spent(scope)
                raise BudgetExceeded(
                    f"budget exceeded for {scope.split(':')[0]}: limit ${limit}, spent "
                    f"${from_nano(spent)}, in flight ${from_nano(reserved)}, this request may cost "
                    f"up to ${worst_case_usd.quantize(Decimal('1e-8'))}; raise max_budget_usd or "
                    f"lower max_tokens"
                )
            reservation.scopes.append(scope)
        return reservation

    async def settle(self, reservation: Reservation, actual_usd: Decimal) -> None:
        if reservation.settled:
            return
        reservation.settled = True
        actual = to_nano(actual_usd)
        for scope in reservation.scopes:
            await self.state.budget_settle(scope, reservation.hold, actual)
