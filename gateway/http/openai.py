"""The OpenAI-compatible API: chat completions, completions, embeddings, models, and a
tenant-scoped view of a request's recorded attempts.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from sqlalchemy import select

from gateway.auth import Principal
from gateway.backends.upstream import json_bytes
from gateway.budgets import Reservation
from gateway.config import AUTO_POLICY, BackendConfig
from gateway.errors import InvalidRequest, NoBackendAvailable, NotFound, UpstreamError
from gateway.http.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from gateway.outcomes import judge
from gateway.pricing import format_usd
from gateway.runtime import Runtime
from gateway.serve.dispatch import Dispatcher, RequestContext
from gateway.serve.relay import SSEResponse, relay
from gateway.serve.routing import Routed, Router
from gateway.snapshot import POLICY_PREFIX, Snapshot, unavailable_reason
from gateway.store.models import requests as requests_table
from policies import Policy, run_validators

router = APIRouter()

TASK_HEADER = "x-tollgate-task-id"
MAX_TASK_ID = 256


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime


def _task_ref(request: Request, body: dict[str, Any]) -> str:
    ref = request.headers.get(TASK_HEADER)
    if ref is None:
        meta = body.get("metadata")
        if isinstance(meta, dict) and meta.get("task_id") is not None:
            ref = str(meta["task_id"])
    if ref is not None and not (
        0 < len(ref) <= MAX_TASK_ID and ref.isascii() and ref.isprintable()
    ):
        raise InvalidRequest(
            f"task id must be 1..{MAX_TASK_ID} printable ASCII characters (it is echoed in the "
            f"{TASK_HEADER} response header)",
            param=TASK_HEADER,
        )
    return ref or ""


def _headers(ctx: RequestContext, backend: BackendConfig | None, *, cost: bool) -> dict[str, str]:
    """Response headers; without ``cost`` (a stream) the serving attempt is still in flight."""
    headers = {
        "x-tollgate-request-id": ctx.request_id,
        "x-tollgate-task-id": ctx.task_ref,
        "x-tollgate-attempts": str(ctx.attempts + (0 if cost else 1)),
    }
    if backend is not None:
        headers["x-tollgate-backend"] = backend.name
    if ctx.policy and ctx.decision is None:
        headers["x-tollgate-policy"] = ctx.policy
    if cost:
        headers["x-tollgate-cost-usd"] = format_usd(None if ctx.unpriced else ctx.total_cost)
    return headers


def _worst_case(
    snap: Snapshot, chain: list[BackendConfig], prompt_tokens: int, max_out: int
) -> Decimal:
    worst = Decimal(0)
    for backend in chain:
        price = snap.price(backend)
        if price is not None:
            worst = max(worst, price.cost(prompt_tokens, max_out))
    return worst


async def _authenticate(rt: Runtime, authorization: str | None) -> Principal:
    return await rt.auth.authenticate(authorization)


def _prompt_tokens(rt: Runtime, backend: BackendConfig, body: dict[str, Any]) -> int:
    if "messages" in body:
        return rt.caller.count_message_tokens(backend, body["messages"])
    raw = body.get("prompt") or body.get("input") or ""
    return rt.caller.count_text_tokens(
        backend, raw if isinstance(raw, str) else " ".join(map(str, raw))
    )


class AnswerCheck:
    """A policy's escalation validators over an answer; keeps the last results, which become
    the task's validator outcome."""

    def __init__(self, specs: Any) -> None:
        self.specs = specs
        self.last: list[Any] = []

    def __call__(self, text: str) -> str | None:
        self.last = run_validators(self.specs, text)
        failed = [r for r in self.last if not r.ok]
        return "; ".join(f"{r.validator}: {r.reason}" for r in failed)[:500] or None


def _validator(policy: Policy | None) -> AnswerCheck | None:
    """The escalation check of a policy: None when it declares no validators."""
    if policy is None or policy.escalation is None:
        return None
    return AnswerCheck(policy.escalation.validators)


async def _serve(
    request: Request,
    rt: Runtime,
    principal: Principal,
    endpoint: str,
    body: dict[str, Any],
    *,
    streamable: bool,
) -> Response:
    snap = rt.snapshot  # this request's config, to its end (a reload does not change it)
    route = snap.resolve(body["model"])
    stream = bool(body.get("stream")) and streamable
    ctx = RequestContext(
        principal=principal,
        endpoint=endpoint,
        policy=route.policy,
        streamed=stream,
        snap=snap,
        request_id=request.state.request_id,
        task_ref=_task_ref(request, body),
    )
    budgeted = principal.key_budget_usd is not None or principal.tenant_budget_usd is not None
    # the token estimate feeds the policy facts and the budget reservation; a request pinned to
    # one backend with no budget needs neither, so it skips the tokenizer on its hot path
    prompt_tokens = 0
    if route.policy is not None or budgeted:
        first_backend = route.chain[0] if route.chain else snap.config.backends[0]
        prompt_tokens = _prompt_tokens(rt, first_backend, body)
    if route.policy is None:
        routed = Routed(None, snap.callable_chain(route))
    else:
        routed = await Router(rt, snap).route(
            route.policy,
            principal,
            dict(request.headers),
            body,
            request_id=ctx.request_id,
            prompt_tokens=prompt_tokens,
        )
        ctx.policy, ctx.decision = routed.policy, routed.record
    chain = routed.chain
    policy = snap.config.policies.get(routed.policy) if routed.policy else None
    extra_headers = routed.headers()
    dispatcher = Dispatcher(rt)
    reservation = Reservation()
    if budgeted:
        # an upper bound of what this request may cost: every answer (n, list prompts) at the
        # priciest backend in reach, once per escalation tier that may also be paid for
        answers = int(body.get("n") or 1)
        if isinstance(body.get("prompt"), list):
            answers *= max(1, len(body["prompt"]))
        out_cap = body.get("max_tokens") or body.get("max_completion_tokens")
        if out_cap is None:
            out_cap = (
                max((b.max_output_tokens or 0 for b in chain), default=0)
                or snap.config.server.reserve_output_tokens
            )
        tiers = 1 + (policy.escalation.max_escalations if policy and policy.escalation else 0)
        worst = _worst_case(snap, chain + routed.escalation, prompt_tokens, int(out_cap) * answers)
        reservation = await rt.budgets.reserve(principal, worst * tiers)
    dispatcher.start_task(ctx)
    caller = rt.caller

    if not stream:
        accept = _validator(policy) if endpoint == "chat" else None
        op = {
            "chat": caller.chat,
            "completions": caller.completion,
            "embeddings": caller.embedding,
        }[endpoint]
        try:
            backend, resp, rejection = await dispatcher.call(ctx, chain, body, op, accept)
            limit = policy.escalation.max_escalations if policy and policy.escalation else 0
            for tier in routed.escalation[:limit]:
                if rejection is None:
                    break
                # the answer failed the policy's validators: retry on the next tier (its cost
                # counts toward the task); if that tier fails, the answer already paid for is
                # returned, marked as failing validation
                try:
                    backend, resp, rejection = await dispatcher.call(ctx, [tier], body, op, accept)
                except (UpstreamError, NoBackendAvailable):
                    break
        finally:
            await rt.budgets.settle(reservation, ctx.total_cost)
        headers = {**extra_headers, **_headers(ctx, backend, cost=True)}
        if accept is not None and accept.last:
            from gateway.http.feedback import schedule_outcome, validator_outcome  # (import cycle)

            schedule_outcome(
                rt.engine,
                validator_outcome(principal.tenant_id, ctx.task_id, ctx.request_id, accept.last),
            )
        judge.consider(rt, ctx, body, resp, ok=rejection is None)  # off the request path
        if accept is not None:
            headers["x-tollgate-validation"] = "passed" if rejection is None else "failed"
            headers["x-tollgate-escalations"] = str(ctx.rejections)
        # the upstream's own bytes when the answer is unchanged (fast path): no re-serialising
        return Response(json_bytes(resp), media_type="application/json", headers=headers)

    stream_op = caller.chat_stream if endpoint == "chat" else caller.completion_stream
    try:
        clock, first, upstream = await dispatcher.open_stream(ctx, chain, body, stream_op)
    except BaseException:
        await rt.budgets.settle(reservation, ctx.total_cost)
        raise
    options = body.get("stream_options") or {}
    forward_usage = bool(isinstance(options, dict) and options.get("include_usage"))

    async def finish() -> None:
        await rt.budgets.settle(reservation, ctx.total_cost)

    gen = relay(
        dispatcher, ctx, clock, body, first, upstream, forward_usage=forward_usage, on_finish=finish
    )
    return SSEResponse(gen, headers={**extra_headers, **_headers(ctx, clock.backend, cost=False)})


@router.post("/v1/chat/completions", tags=["openai"])
async def chat_completions(
    request: Request,
    payload: ChatCompletionRequest,
    authorization: str | None = Header(default=None),
) -> Response:
    rt = runtime_of(request)
    principal = await _authenticate(rt, authorization)
    body = payload.model_dump(exclude_unset=True)
    return await _serve(request, rt, principal, "chat", body, streamable=True)


@router.post("/v1/completions", tags=["openai"])
async def completions(
    request: Request,
    payload: CompletionRequest,
    authorization: str | None = Header(default=None),
) -> Response:
    rt = runtime_of(request)
    principal = await _authenticate(rt, authorization)
    body = payload.model_dump(exclude_unset=True)
    return await _serve(request, rt, principal, "completions", body, streamable=True)


@router.post("/v1/embeddings", tags=["openai"])
async def embeddings(
    request: Request,
    payload: EmbeddingRequest,
    authorization: str | None = Header(default=None),
) -> Response:
    rt = runtime_of(request)
    principal = await _authenticate(rt, authorization)
    body = payload.model_dump(exclude_unset=True)
    return await _serve(request, rt, principal, "embeddings", body, streamable=False)


@router.get("/v1/models", tags=["openai"])
async def list_models(
    request: Request, authorization: str | None = Header(default=None)
) -> dict[str, Any]:
    rt = runtime_of(request)
    await _authenticate(rt, authorization)
    snap = rt.snapshot
    cfg = snap.config
    data: list[dict[str, Any]] = []
    for backend in cfg.backends:
        price = snap.price(backend)
        reason = unavailable_reason(backend)
        data.append(
            {
                "id": backend.name,
                "object": "model",
                "created": 0,
                "owned_by": "tollgate",
                "tollgate": {
                    "kind": "backend",
                    "model": backend.model,
                    "available": reason is None,
                    "unavailable_reason": reason,
                    "input_cost_per_token": str(price.input_per_token) if price else None,
                    "output_cost_per_token": str(price.output_per_token) if price else None,
                    "price_source": price.source if price else None,
                    "capabilities": sorted(backend.capabilities),
                    "tags": sorted(backend.tags),
                    "context_window": backend.context_window,
                },
            }
        )
    for name, policy in cfg.policies.items():
        data.append(
            {
                "id": POLICY_PREFIX + name,
                "object": "model",
                "created": 0,
                "owned_by": "tollgate",
                "tollgate": {
                    "kind": "policy",
                    "candidates": list(policy.candidates),
                    "objective": policy.objective.kind,
                    "version": policy.version,
                    "description": policy.description,
                },
            }
        )
    if cfg.policies:
        data.append(
            {
                "id": POLICY_PREFIX + AUTO_POLICY,
                "object": "model",
                "created": 0,
                "owned_by": "tollgate",
                "tollgate": {"kind": "policy", "selected_by": "routing rules"},
            }
        )
    for alias, target in cfg.aliases.items():
        data.append(
            {
                "id": alias,
                "object": "model",
                "created": 0,
                "owned_by": "tollgate",
                "tollgate": {"kind": "alias", "target": target},
            }
        )
    return {"object": "list", "data": data}


@router.get("/v1/requests/{request_id}", tags=["tollgate"])
async def get_request(
    request: Request, request_id: str, authorization: str | None = Header(default=None)
) -> dict[str, Any]:
    """Every recorded attempt of one of the caller's requests (tenant-scoped)."""
    rt = runtime_of(request)
    principal = await _authenticate(rt, authorization)
    await rt.writer.flush()
    stmt = (
        select(requests_table)
        .where(requests_table.c.request_id == request_id)
        .where(requests_table.c.tenant_id == principal.tenant_id)
        .order_by(requests_table.c.attempt)
    )
    async with rt.engine.connect() as conn:
        rows = (await conn.execute(stmt)).mappings().all()
    if not rows:
        raise NotFound(f"no request {request_id!r} for this tenant", param="request_id")
    attempts = []
    total = Decimal(0)
    for row in rows:
        item = {k: v for k, v in row.items() if k not in ("tenant_id", "decision")}
        for k in ("created_at", "finished_at"):
            if item.get(k) is not None:
                item[k] = item[k].isoformat()
        if row["cost_usd"] is not None:
            total += Decimal(str(row["cost_usd"]))
            item["cost_usd"] = format_usd(Decimal(str(row["cost_usd"])))
        attempts.append(item)
    return {"request_id": request_id, "cost_usd": format_usd(total), "attempts": attempts}
