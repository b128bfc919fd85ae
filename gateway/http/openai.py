"""The OpenAI-compatible API: chat completions, completions, embeddings, models, and a
tenant-scoped view of a request's recorded attempts. Thin handlers: authenticate, hand the
validated body to the request pipeline (``gateway.serve.pipeline``), send what it returns.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response

from gateway.auth import Principal
from gateway.backends.upstream import json_bytes
from gateway.config import AUTO_POLICY
from gateway.errors import NotFound
from gateway.http.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from gateway.http.sse import SSEResponse
from gateway.pricing import format_usd
from gateway.runtime import Runtime
from gateway.serve import access
from gateway.serve.pipeline import Pipeline, Stream
from gateway.snapshot import POLICY_PREFIX, unavailable_reason
from gateway.store import queries

router = APIRouter()


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime


def pipeline_of(request: Request) -> Pipeline:
    return request.app.state.pipeline


async def _authenticate(rt: Runtime, authorization: str | None) -> Principal:
    return await rt.auth.authenticate(authorization)


async def _serve(
    request: Request,
    rt: Runtime,
    principal: Principal,
    endpoint: str,
    body: dict[str, Any],
    *,
    streamable: bool,
) -> Response:
    """Serve ``body`` through the pipeline and answer over HTTP: JSON, or SSE (the other API
    edges — Anthropic Messages, Responses — call this too and re-frame the answer)."""
    result = await pipeline_of(request).serve(
        principal,
        endpoint,
        body,
        dict(request.headers),
        request.state.request_id,
        streamable=streamable,
    )
    if isinstance(result, Stream):
        return SSEResponse(result.chunks, headers=result.headers)
    # the upstream's own bytes when the answer is unchanged (fast path): no re-serialising
    return Response(json_bytes(result.body), media_type="application/json", headers=result.headers)


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
    principal = await _authenticate(rt, authorization)
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
    data = [m for m in data if access.listed(principal, cfg, m["id"])]  # only what it may use
    return {"object": "list", "data": data}


@router.get("/v1/requests/{request_id}", tags=["tollgate"])
async def get_request(
    request: Request, request_id: str, authorization: str | None = Header(default=None)
) -> dict[str, Any]:
    """Every recorded attempt of one of the caller's requests (tenant-scoped)."""
    rt = runtime_of(request)
    principal = await _authenticate(rt, authorization)
    await rt.writer.flush()
    rows = await queries.peer_visible(  # answered by another replica a moment ago: wait
        lambda: queries.request_attempts(rt.engine, principal.tenant_id, request_id)
    )
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
        if row.get("cache_saved_usd") is not None:  # a response-cache hit: what it saved
            item["cache_saved_usd"] = format_usd(Decimal(str(row["cache_saved_usd"])))
        attempts.append(item)
    return {"request_id": request_id, "cost_usd": format_usd(total), "attempts": attempts}
