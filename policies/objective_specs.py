"""The objectives a policy can choose with (``objective:``): their YAML shape and bounds.

This module owns the ``kind``-tagged objective specs (``cheapest_adequate``,
``min_cost_per_success``, ``max_quality_within``, ``cascade``) and the checks on their own
fields. How each one ranks candidates is ``policies.objectives``'s (the cascade's steps:
``policies.cascade``); whether the backends they name are candidates is checked by the
policy (``policies.schema.Policy``). Pure: no I/O.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from policies.spec_base import Name, Probability, StrictModel, Usd

#: The ``kind`` of every objective spec (the discriminator of :data:`Objective`).
OBJECTIVE_KINDS = frozenset(
    {"cheapest_adequate", "min_cost_per_success", "max_quality_within", "cascade"}
)


class CheapestAdequate(StrictModel):
    """The cheapest adequate candidate: predicted P(success) >= ``min_success`` and, with
    ``max_shortfall``, at most that far below the best eligible candidate's."""

    kind: Literal["cheapest_adequate"]
    #: Absolute bar on the calibrated P(success).
    min_success: Probability = 0.0
    #: Relative bar: adequate only within this of the highest P(success) among the eligible
    #: (0.03: "at most 3 points worse than the best we could call"). Unset: no relative bar.
    max_shortfall: Probability | None = None
    #: ``most_capable`` | ``cheapest`` | ``error`` | the name of one of the candidates.
    on_no_adequate: Name = "error"

    @model_validator(mode="after")
    def _a_bar(self) -> CheapestAdequate:
        if not {"min_success", "max_shortfall"} & self.model_fields_set:
            raise PydanticCustomError("bar_missing", "give min_success, max_shortfall or both")
        return self


class MinCostPerSuccess(StrictModel):
    """Minimise expected task cost per success, retries and escalation included: the ratio
    ``E / S``, or with ``success_value_usd`` the net cost ``E - value * S``."""

    kind: Literal["min_cost_per_success"]
    #: Optional floor: candidates predicted below it are not adequate.
    min_success: Probability = 0.0
    #: What one more expected success is worth: a costlier candidate wins while each extra
    #: expected success it buys costs at most this (USD). Unset: the plain ratio E / S,
    #: which nearly always picks the cheapest candidate.
    success_value_usd: Usd | None = None
    on_no_adequate: Name = "error"


class MaxQualityWithin(StrictModel):
    """The candidate most likely to succeed whose expected cost is <= ``cost_cap_usd``."""

    kind: Literal["max_quality_within"]
    cost_cap_usd: Usd
    on_no_adequate: Name = "error"


class Cascade(StrictModel):
    """Answer with a cheap backend first; accept its answer or escalate on a verdict over it.

    The decision names the first backend to call (``first``, or the escalation tier right
    away when the predictor says the first is unlikely to succeed); after each answer the
    gateway asks ``policies.cascade.cascade_step`` whether to accept, call ``check``, or
    escalate. Every call is paid for and counts toward the task.
    """

    kind: Literal["cascade"]
    #: The cheap backend that answers first. Unset: chosen per request, with
    #: ``success_value_usd``, as ``min_cost_per_success`` would choose (the lowest net expected
    #: cost ``cost - value * P(success)`` among the eligible, undominated candidates other than
    #: ``check``); when that is the escalation tier itself, it answers alone.
    first: Name | None = None
    #: What one expected success is worth (USD) when ``first`` is chosen per request.
    success_value_usd: Usd | None = None
    #: A second cheap backend whose answer to the same request is compared with the first's
    #: (agreement on a closed-form answer is the strongest verdict signal). Unset: no check.
    check: Name | None = None
    #: Where rejected or hard requests go. Unset: the most capable other eligible candidate.
    escalate_to: Name | None = None
    #: The verdict's P(the first answer is right) needed to accept it.
    accept_confidence: Probability
    #: After the first answer (before any check): accept at once at or above this verdict
    #: (and ``accept_confidence``; the check is skipped); escalate at once below
    #: ``escalate_below``; check in between.
    skip_check_above: Probability = 1.0
    escalate_below: Probability = 0.0
    #: Predicted P(success) of ``first`` below which the request goes straight to the
    #: escalation tier (the cheap answer would be wasted). Unset: never.
    straight_up_below: Probability | None = None
    #: When ``first`` is not eligible or has no estimate: what to call instead.
    on_no_adequate: Name = "most_capable"

    @model_validator(mode="after")
    def _bands(self) -> Cascade:
        if self.escalate_below > self.skip_check_above:
            raise PydanticCustomError("band_order", "escalate_below must be <= skip_check_above")
        if (self.first is None) == (self.success_value_usd is None):
            raise PydanticCustomError(
                "first_missing",
                "give first (a fixed first backend) or success_value_usd (the first backend "
                "chosen per request), not both",
            )
        return self


Objective = Annotated[
    CheapestAdequate | MinCostPerSuccess | MaxQualityWithin | Cascade,
    Field(discriminator="kind"),
]
