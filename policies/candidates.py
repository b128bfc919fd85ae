"""A candidate backend as the policy engine sees it, its orderings, and how it is shown.

This module owns the values the engine (``policies.engine``), the objectives
(``policies.objectives``) and the cascade (``policies.cascade``) all rank:

* :class:`Cand`: one candidate (its position in the policy, expected cost, predicted
  P(success), the constraint that removed it);
* its orderings: cheapest, most capable, the operator's order (an unpriced candidate ranks
  after every priced one: unknown is never free);
* :class:`Ranked`: what an objective returns, its adequate candidates best first;
* how a cost and a probability read in a decision's reason (:func:`usd`, :func:`fmt_p`).

Pure and deterministic like the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

#: Objective scores (USD) are rounded to this, so float noise in P(success) never reorders them.
SCORE_QUANTUM = Decimal("1e-12")


@dataclass(frozen=True, slots=True)
class Cand:
    idx: int
    name: str
    cost: Decimal | None
    p: float | None
    removed: tuple[str, str] | None


def cost_key(c: Cand) -> tuple[int, Decimal]:
    # Unpriced candidates rank after every priced one: unknown is never free.
    return (0, c.cost) if c.cost is not None else (1, Decimal(0))


def p_key(c: Cand) -> tuple[bool, float]:
    return (c.p is None, -(c.p or 0.0))


def most_capable(cs: Iterable[Cand]) -> list[Cand]:
    return sorted(cs, key=lambda c: (p_key(c), cost_key(c), c.idx))


def cheapest(cs: Iterable[Cand]) -> list[Cand]:
    return sorted(cs, key=lambda c: (cost_key(c), p_key(c), c.idx))


def in_order(cs: Iterable[Cand]) -> list[Cand]:
    return sorted(cs, key=lambda c: c.idx)


def usd(value: Decimal | None) -> str:
    return "unpriced" if value is None else f"${value:.6f}"


def fmt_p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@dataclass(frozen=True, slots=True)
class Ranked:
    adequate: list[Cand]  # in objective order, best first
    scores: dict[str, Decimal | None]
    describe: Callable[[Cand], str]  # why the chosen adequate candidate won
    inadequate: str  # what "no adequate candidate" means for this objective
