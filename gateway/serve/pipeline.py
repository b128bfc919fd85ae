"""One request through the gateway, as values (no HTTP here): the edge hands in who is calling
and the validated body; it gets back an ``Answer`` (JSON and headers) or a ``Stream`` (SSE
bytes and headers).

The steps, in order:
1. snapshot: the config snapshot current now is this request's to its end;
2. resolve the ``model`` field and read the body once (``gateway.serve.request``);
3. facts and route: a pinned backend, or the policy decision (``gateway.serve.routing``);
4. budget: reserve the worst case the request may cost; rate limits: admit it in its key's
   and tenant's windows (``gateway.serve.limits``; model access: ``gateway.serve.access``);
5. dispatch: retries, fallbacks, breakers (``gateway.serve.dispatch``); a plain answer the
   policy's validators reject escalates to the next tier; a cascade decision's plan runs on
   the first answer (``gateway.serve.cascade``); a stream is relayed
   (``gateway.serve.relay``);
6. finish, exactly once, for every request that got a reservation — plain, streamed, or
   failed (``gateway.serve.finish``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.auth import Principal
from gateway.budgets import Reservation
from gateway.config import BackendConfig
from gateway.errors import (
    DependencyUnavailable,
    NoBackendAvailable,
    RateLimited,
    UpstreamError,
)
from gateway.pricing import format_usd
from gateway.request_record import note_request
from gateway.runtime import Runtime
from gateway.serve import access, cache, limits
from gateway.serve.attempts import start_task
from gateway.serve.cascade import CascadeRun, cascade_run
from gateway.serve.context import RequestContext
from gateway.serve.dispatch import Dispatcher
from gateway.serve.finish import Finish, OutcomeHooks
from gateway.serve.relay import StreamEnd, relay
from gateway.serve.request import ClientRequest, parse_request
from gateway.serve.routing import Routed, Router
from gateway.snapshot import Snapshot
from policies import Policy, ValidationResult, run_validators
from policies.schema import Escalation


@dataclass(frozen=True)
class Answer:
    """A plain answer: the backend's OpenAI JSON (with the bytes it came in as, when the
    caller kept them: ``backends.upstream.json_bytes``) and the response headers."""

    body: dict[str, Any]
    headers: dict[str, str]


@dataclass(frozen=True)
class Stream:
    """A streamed answer: SSE bytes (closing them early ends the request: recorded, settled)
    and the response headers."""

    chunks: AsyncIterator[bytes]
    headers: dict[str, str]


class AnswerCheck:
    """A policy's escalation validators over an answer; keeps the last results, which become
    the task's validator outcome."""

    def __init__(self, specs: Any) -> None:
        self.specs = specs
        self.last: list[ValidationResult] = []

    def __call__(self, text: str) -> str | None:
        self.last = run_validators(self.specs, text)
        failed = [r for r in self.last if not r.ok]
        return "; ".join(f"{r.validator}: {r.reason}" for r in failed)[:500] or None


def response_headers(
    ctx: RequestContext, backend: BackendConfig | None, *, cost: bool
) -> dict[str, str]:
    """Tollgate's response headers; without ``cost`` (a stream) the serving attempt is still
    in flight."""
    headers = {
        "x-tollgate-request-id": ctx.request_id,
        "x-tollgate-task-id": ctx.task_ref,
        "x-tollgate-attempts": str(ctx.attempts + (0 if cost else 1)),
    }
    headers.update(ctx.rates.headers)  # x-ratelimit-*: the caller's rate limits
    if backend is not None:
        headers["x-tollgate-backend"] = backend.name
    if ctx.policy and ctx.decision is None:
        headers["x-tollgate-policy"] = ctx.policy
    if cost:
        headers["x-tollgate-cost-usd"] = format_usd(None if ctx.unpriced else ctx.total_cost)
    if ctx.cache is not None:
        headers.update(ctx.cache.headers())  # x-tollgate-cache: hit | miss
    plan = ctx.decision.get("cascade") if ctx.decision is not None else None
    if isinstance(plan, dict) and plan.get("skipped"):  # a cascade that did not run says so
        headers["x-tollgate-cascade"] = f"skipped:{plan['skipped']}"
    return headers


def worst_case(
    snap: Snapshot, chain: list[BackendConfig], prompt_tokens: int, max_out: int
) -> Decimal:
    """The most one answer may cost on any backend of ``chain``."""
    worst = Decimal(0)
    for backend in chain:
        price = snap.price(backend)
        if price is not None:
            worst = max(worst, price.cost(prompt_tokens, max_out))
    return worst


def escalation_of(policy: Policy | None, request: ClientRequest) -> Escalation | None:
    """The policy's escalation where it applies: its validators judge a non-streamed chat
    answer, and only such an answer escalates."""
    if policy is None or request.endpoint != "chat" or request.stream:
        return None
    return policy.escalation


def paid_calls(
    policy: Policy | None, request: ClientRequest, cascade_calls: list[BackendConfig]
) -> int:
    """How many backend calls one request may pay for: its answer, each escalation tier that
    applies to it, and a cascade's check and escalation calls."""
    escalation = escalation_of(policy, request)
    tiers = escalation.max_escalations if escalation is not None else 0
    return 1 + tiers + len(cascade_calls)


class Pipeline:
    """Serves requests; ``outcomes`` receives validator verdicts and served answers."""

    def __init__(self, runtime: Runtime, outcomes: OutcomeHooks) -> None:
        self.rt = runtime
        self.outcomes = outcomes

    async def serve(
        self,
        principal: Principal,
        endpoint: str,
        body: dict[str, Any],
        headers: Mapping[str, str],
        request_id: str,
        *,
        streamable: bool,
    ) -> Answer | Stream:
        rt = self.rt
        note_request(tenant_id=principal.tenant_id, key_id=principal.key_id)  # refused or not
        if rt.writer.spool_full:  # the store is down and the disk bound reached: nothing new
            raise DependencyUnavailable(  # is served that could not be recorded
                "the gateway cannot record new requests right now (its store is unreachable and "
                "its local spool is full); retry shortly",
                retry_after_s=30,
            )
        snap = rt.snapshot  # this request's config, to its end (a reload does not change it)
        route = snap.resolve(body["model"])
        note_request(policy=route.policy)
        request = parse_request(endpoint, body, headers, streamable=streamable)
        ctx = RequestContext(
            principal=principal,
            request=request,
            snap=snap,
            policy=route.policy,
            request_id=request_id,
        )
        checked: access.Checked | None = None  # a policy's check, for the router to reuse
        if route.policy is None:  # the same access check for pinned and routed requests,
            access.check_backend(principal, route.chain[0], snap.config)  # cache hits included
        elif (named := snap.config.policies.get(route.policy)) is not None:
            allowed = access.check_policy(principal, route.policy, named.candidates, snap.config)
            checked = access.Checked(route.policy, allowed)
        ctx.cache = await cache.probe(rt, ctx, route)  # before routing and any reservation
        if ctx.cache.hit is not None:
            return self._cached(ctx)
        budgeted = await rt.budgets.may_apply(principal, snap.config.budgets)
        # the token estimate feeds the policy facts and the budget reservation; a request
        # pinned to one backend with no budget needs neither, so it skips the tokenizer
        prompt_tokens = 0
        if route.policy is not None or budgeted or limits.needs_tokens(principal, route.chain):
            first_backend = route.chain[0] if route.chain else snap.config.backends[0]
            prompt_tokens = request.count_prompt(rt.caller, first_backend)
        if route.policy is None:
            routed = Routed(None, snap.callable_chain(route))
        else:
            routed = await Router(rt, snap).route(
                route.policy,
                principal,
                request,
                request_id=request_id,
                prompt_tokens=prompt_tokens,
                budgeted=budgeted,
                checked=checked,
            )
            ctx.policy, ctx.decision = routed.policy, routed.record
        policy = snap.config.policies.get(routed.policy) if routed.policy else None
        plan = routed.decision.cascade if routed.decision is not None else None
        run = cascade_run(plan, rt.predictor, snap.config.backends)
        if run is not None and (request.stream or request.endpoint != "chat"):
            # a stream is served by the first tier as it answers (see cascade): the plan is
            # kept in the stored decision, marked as not run, and the response says so
            run = None
            if ctx.decision is not None and ctx.decision.get("cascade"):
                skipped = "stream" if request.stream else request.endpoint
                ctx.decision["cascade"] = {**ctx.decision["cascade"], "skipped": skipped}
        extra = run.backends_in_reach() if run is not None else []
        calls = paid_calls(policy, request, extra)
        reach = routed.chain + routed.escalation + extra
        reservation = Reservation()
        if budgeted:
            reservation = await self._reserve(ctx, routed, prompt_tokens, reach, calls)
        finish = Finish(rt, self.outcomes, ctx, reservation)
        try:
            await limits.admit(rt, ctx, reach, prompt_tokens, calls)
            start_task(rt, ctx)
            if request.stream:
                return await self._stream(ctx, routed, finish)
            return await self._answer(ctx, routed, policy, finish, run)
        except BaseException:
            await finish()  # nothing served: settles the reservation (no-op if done)
            raise

    def _cached(self, ctx: RequestContext) -> Answer | Stream:
        """A response-cache hit: no upstream call and no reservation; recorded as one attempt
        at zero cost (gateway.serve.cache)."""
        start_task(self.rt, ctx)
        ctx.cache.record_hit(self.rt, ctx)
        headers = response_headers(ctx, None, cost=True)
        if ctx.request.stream:
            return Stream(ctx.cache.chunks(ctx), headers)
        return Answer(ctx.cache.answer(), headers)

    async def _reserve(
        self,
        ctx: RequestContext,
        routed: Routed,
        prompt_tokens: int,
        reach: list[BackendConfig],
        calls: int,
    ) -> Reservation:
        """Reserve an upper bound of what the request may cost: every answer (n, list prompts)
        at the priciest backend in reach, once per escalation tier (or cascade check and
        escalation call) that may also be paid for, in every budget of the request
        (``gateway.budgets``). A request with no output cap is capped at what was reserved,
        so no backend can write past the hold."""
        snap, request = ctx.snap, ctx.request
        out_cap = request.max_tokens
        if out_cap is None:
            declared = [b.max_output_tokens for b in reach]
            out_cap = min(filter(None, declared), default=snap.config.server.reserve_output_tokens)
        worst = worst_case(snap, reach, prompt_tokens, int(out_cap) * request.answers)
        reservation = await self.rt.budgets.reserve(
            ctx.principal,
            worst * calls,
            cfg=snap.config.budgets,
            policy=routed.policy,
            tags=request.tags,
            ttl_ms=int(snap.config.server.reservation_ttl_s * 1000),
        )
        if reservation.scopes and request.max_tokens is None and request.endpoint != "embeddings":
            request.body["max_tokens"] = out_cap  # the upstream cannot write past the hold
        return reservation

    async def _answer(
        self,
        ctx: RequestContext,
        routed: Routed,
        policy: Policy | None,
        finish: Finish,
        run: CascadeRun | None = None,
    ) -> Answer:
        caller, request = self.rt.caller, ctx.request
        escalation = escalation_of(policy, request)
        check = AnswerCheck(escalation.validators) if escalation is not None else None
        op = {
            "chat": caller.chat,
            "completions": caller.completion,
            "embeddings": caller.embedding,
        }[request.endpoint]
        dispatcher = Dispatcher(self.rt, ctx)
        if run is not None:  # the cascade objective: first tier, then its verdict's steps
            backend, resp = await run.run(dispatcher, routed.chain, op)
            await finish(answer=resp, ok=True)
            await ctx.cache.keep_answer(self.rt, ctx, resp, backend)
            headers = {**routed.headers(), **response_headers(ctx, backend, cost=True)}
            headers["x-tollgate-cascade"] = run.header()
            return Answer(resp, headers)
        backend, resp, rejection = await dispatcher.call(routed.chain, op, check)
        limit = escalation.max_escalations if escalation is not None else 0
        for tier in routed.escalation[:limit]:
            if rejection is None:
                break
            # the answer failed the policy's validators: retry on the next tier (its cost
            # counts toward the task); if that tier fails, the answer already paid for is
            # returned, marked as failing validation
            try:
                backend, resp, rejection = await dispatcher.call([tier], op, check)
            except (UpstreamError, NoBackendAvailable, RateLimited):
                break
        await finish(answer=resp, ok=rejection is None, validation=check.last if check else None)
        if rejection is None:
            await ctx.cache.keep_answer(self.rt, ctx, resp, backend)
        headers = {**routed.headers(), **response_headers(ctx, backend, cost=True)}
        if check is not None:
            headers["x-tollgate-validation"] = "passed" if rejection is None else "failed"
            headers["x-tollgate-escalations"] = str(ctx.rejections)
        return Answer(resp, headers)

    async def _stream(self, ctx: RequestContext, routed: Routed, finish: Finish) -> Stream:
        caller, request = self.rt.caller, ctx.request
        op = caller.chat_stream if request.endpoint == "chat" else caller.completion_stream
        clock, first, upstream = await Dispatcher(self.rt, ctx).open_stream(routed.chain, op)

        async def on_end(end: StreamEnd) -> dict[str, Any]:
            await finish(answer=end.text, ok=end.status == "ok", stream=(clock, end))
            await ctx.cache.keep_stream(self.rt, ctx, end, clock.backend, first.get("model"))
            # what the request cost, every attempt included: on the stream's last chunk
            cost = None if ctx.unpriced else format_usd(ctx.total_cost)
            return {"cost_usd": cost, "attempts": ctx.attempts, "request_id": ctx.request_id}

        chunks = relay(
            first,
            upstream,
            backend=clock.backend.name,
            forward_usage=request.forward_usage,
            on_end=on_end,
        )
        headers = {**routed.headers(), **response_headers(ctx, clock.backend, cost=False)}
        return Stream(chunks, headers)
