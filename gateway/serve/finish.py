"""The end of a request, plain or streamed: one step that runs exactly once.

It records a stream's serving attempt (its usage as reported, else counted from the text it
carried) and tells that backend's breaker if the stream broke mid-way; settles the budget
reservation to what the request really cost (every attempt, escalations included) and its
token rate-limit reservations to the tokens it really used; and then
hands the success side what it needs — the validators' verdict on the answer and the served
answer itself (for the judge) — through ``OutcomeHooks``, which the app factory wires to
``gateway.outcomes`` (the serve layer never imports it). Accounting is shielded from
cancellation: a client that goes away never leaves a reservation unsettled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import anyio

from gateway.budgets import Reservation
from gateway.runtime import Runtime
from gateway.serve import limits
from gateway.serve.attempts import record_attempt
from gateway.serve.context import AttemptClock, RequestContext
from gateway.serve.dispatch import record_breaker
from gateway.serve.relay import StreamEnd
from gateway.serve.usage import usage_from
from policies import ValidationResult

log = logging.getLogger("tollgate.finish")


class OutcomeHooks(Protocol):
    """The success side, as the request pipeline sees it (implemented in gateway.outcomes).
    Both calls return at once: the work they start runs off the request path."""

    def validated(self, ctx: RequestContext, results: list[ValidationResult]) -> None:
        """The policy's validators judged the answer served to ``ctx``."""

    def served(self, ctx: RequestContext, answer: str | Mapping[str, Any], *, ok: bool) -> None:
        """An answer was served (``answer``: the response JSON or a stream's text; ``ok``:
        served in full and not rejected by the validators)."""


class NoOutcomes:
    """Hooks that record nothing (a pipeline with no success side wired in)."""

    def validated(self, ctx: RequestContext, results: list[ValidationResult]) -> None:
        return None

    def served(self, ctx: RequestContext, answer: str | Mapping[str, Any], *, ok: bool) -> None:
        return None


class Finish:
    """The finish step of one request; calling it again does nothing."""

    def __init__(
        self, rt: Runtime, hooks: OutcomeHooks, ctx: RequestContext, reservation: Reservation
    ) -> None:
        self.rt = rt
        self.hooks = hooks
        self.ctx = ctx
        self.reservation = reservation
        self.done = False

    async def __call__(
        self,
        *,
        answer: str | Mapping[str, Any] | None = None,
        ok: bool = False,
        validation: list[ValidationResult] | None = None,
        stream: tuple[AttemptClock, StreamEnd] | None = None,
    ) -> None:
        """End the request: ``answer`` is what was served (None: nothing was), ``stream`` the
        serving attempt of a stream and how the stream ended."""
        if self.done:
            return
        self.done = True
        rt, ctx = self.rt, self.ctx
        with anyio.CancelScope(shield=True):
            try:
                if stream is not None:
                    await self._end_stream(*stream)
            finally:
                await rt.budgets.settle(self.reservation, ctx.total_cost)
                await limits.settle(rt, ctx)  # token windows: reserved -> really used
        if validation:
            self.hooks.validated(ctx, validation)
        if answer is not None:
            self.hooks.served(ctx, answer, ok=ok)

    async def _end_stream(self, clock: AttemptClock, end: StreamEnd) -> None:
        rt, ctx = self.rt, self.ctx
        usage = usage_from(
            rt.caller,
            clock.backend,
            end.usage,
            end.text,
            lambda: ctx.request.count_prompt(rt.caller, clock.backend),
        )
        record_attempt(
            rt, ctx, clock, status=end.status, usage=usage, failure=end.failure, http_status=200
        )
        if end.failure is not None:
            # its success was heard when the first chunk came; a break mid-way is a failure
            await record_breaker(rt, ctx.snap, clock.backend, False)
