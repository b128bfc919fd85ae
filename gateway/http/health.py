"""Liveness, readiness (store, Redis, backends) and the Prometheus endpoint."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway.http.openai import runtime_of
from gateway.snapshot import unavailable_reason

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Whether *this replica* can serve traffic now, and what of it.

    Ready (200) while at least one backend can be called and every answer served can be
    recorded (the store is up, or its spool has room). A dependency blip alone does not make a
    replica unready: with the SQL store down rows spool to disk (``degraded``); with Redis down
    unbudgeted requests keep flowing and budgeted ones either ride on local limits
    (``redis.on_failure: open``) or get 503 with ``retry-after`` (``closed``) — ``serves`` says
    which. So one Redis or database blip does not make a load balancer pull every replica.
    """
    rt = runtime_of(request)
    store_ok = await rt.store_ok()
    redis_ok = await rt.state.ping()
    backends: dict[str, Any] = {}
    for backend in rt.config.backends:
        reason = unavailable_reason(backend)
        circuit_closed = await rt.allowed(backend.name) if redis_ok else None
        backends[backend.name] = {
            "available": reason is None,
            "reason": reason,
            "circuit": "closed"
            if circuit_closed
            else ("open" if circuit_closed is False else "unknown"),
        }
    any_backend = any(b["available"] and b["circuit"] != "open" for b in backends.values())
    can_record = store_ok or not rt.writer.spool_full
    if redis_ok:
        budgeted = "yes"
    elif rt.state.kind == "redis+local":
        budgeted = "yes, on this replica's local share of the budgets (Redis unreachable)"
    else:
        budgeted = "no: 503 with retry-after until Redis is back (redis.on_failure: closed)"
    ready = any_backend and can_record
    body = {
        "status": "ready" if ready else "not_ready",
        "serves": {
            "requests": ready,
            "budgeted_requests": ready and budgeted.startswith("yes"),
            "budgeted_detail": budgeted,
        },
        "store": {
            "ok": store_ok,
            "state": "ok"
            if store_ok
            else ("degraded (spooling to disk)" if can_record else "down and the spool is full"),
            "pending_rows": rt.writer.pending,
            "spool_files": len(rt.writer.spool_files()),
            "spool_bytes": rt.writer.spool_bytes,
        },
        "shared_state": {"kind": rt.state.kind, "ok": redis_ok},
        "backends": backends,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    rt = runtime_of(request)
    rt.metrics.store_pending.set(rt.writer.pending)
    rt.metrics.store_spooled.set(len(rt.writer.spool_files()))
    rt.metrics.store_spool_bytes.set(rt.writer.spool_bytes)
    rt.metrics.store_spool_full.set(1 if rt.writer.spool_full else 0)
    return Response(rt.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
