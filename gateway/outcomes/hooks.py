"""What the request pipeline tells the success side, wired in by the app factory: a policy's
validator verdict on a served answer becomes a task outcome (queued on the record writer), and
a served answer is offered to the judge. Both return at once, with no store I/O (``OutcomeHooks`` in
``gateway.serve.finish``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from gateway.outcomes import judge
from gateway.outcomes.recording import schedule_outcome, validator_outcome
from gateway.runtime import Runtime
from gateway.serve.context import RequestContext
from policies import ValidationResult

log = logging.getLogger("tollgate.feedback")


class RequestOutcomes:
    """``OutcomeHooks`` over a running gateway."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def validated(self, ctx: RequestContext, results: list[ValidationResult]) -> None:
        try:  # a journal line at most; never fails the request it is about
            outcome = validator_outcome(
                ctx.principal.tenant_id, ctx.task_id, ctx.request_id, results
            )
            schedule_outcome(self.rt.writer, outcome)
        except Exception:
            log.exception("could not queue the validator outcome of request %s", ctx.request_id)

    def served(self, ctx: RequestContext, answer: str | Mapping[str, Any], *, ok: bool) -> None:
        judge.consider(self.rt, ctx, answer, ok=ok)
