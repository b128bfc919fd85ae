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
    """Ready when shared state is reachable and at least one backend can be called.

    A down SQL store does not make the gateway unready: attempt rows are spooled to disk and
    replayed, so traffic keeps flowing; the store's state is reported as ``degraded``.
    """
    rt = runtime_of(request)
    store_ok = await rt.store_ok()
    redis_ok = await rt.state.ping()
    backends: dict[str, Any] = {}
    for backend in rt.config.backends:
        reason = unavailable_reason(backend)
        circuit_closed = await rt.state.breaker_allows(backend.name) if redis_ok else None
        backends[backend.name] = {
            "available": reason is None,
            "reason": reason,
            "circuit": "closed"
            if circuit_closed
            else ("open" if circuit_closed is False else "unknown"),
        }
    any_backend = any(b["available"] for b in backends.values())
    ready = redis_ok and any_backend
    body = {
        "status": "ready" if ready else "not_ready",
        "store": {
            "ok": store_ok,
            "state": "ok" if store_ok else "degraded (spooling to disk)",
            "pending_rows": rt.writer.pending,
            "spool_files": len(rt.writer.spool_files()),
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
    return Response(rt.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
