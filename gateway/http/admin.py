"""The admin API (virtual keys), guarded by the admin key from ``TOLLGATE_ADMIN_KEY``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from gateway.errors import NotFound
from gateway.http.openai import runtime_of
from gateway.http.schemas import CreateKeyRequest

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/keys", status_code=201)
async def create_key(
    request: Request, payload: CreateKeyRequest, authorization: str | None = Header(default=None)
) -> JSONResponse:
    rt = runtime_of(request)
    rt.auth.require_admin(authorization)
    budget = Decimal(str(payload.max_budget_usd)) if payload.max_budget_usd is not None else None
    raw, record = await rt.keys.create_key(payload.tenant, name=payload.name, max_budget_usd=budget)
    return JSONResponse({"key": raw, **record.public()}, status_code=201)


@router.get("/keys")
async def list_keys(
    request: Request, tenant: str | None = None, authorization: str | None = Header(default=None)
) -> dict[str, Any]:
    rt = runtime_of(request)
    rt.auth.require_admin(authorization)
    return {"object": "list", "data": [k.public() for k in await rt.keys.list(tenant)]}


@router.delete("/keys/{key_id}")
async def revoke_key(
    request: Request, key_id: str, authorization: str | None = Header(default=None)
) -> dict[str, Any]:
    rt = runtime_of(request)
    rt.auth.require_admin(authorization)
    record = await rt.keys.revoke(key_id)
    if record is None:
        raise NotFound(f"no key with id or prefix {key_id!r} (or the prefix is ambiguous)")
    rt.auth.forget(record.id)
    return record.public()


@router.post("/reload")
async def reload_config(
    request: Request, authorization: str | None = Header(default=None)
) -> JSONResponse:
    """Re-read the config files now; 422 with every error if they are invalid (nothing changes)."""
    rt = runtime_of(request)
    rt.auth.require_admin(authorization)
    result = await request.app.state.reloader.reload("admin API")
    return JSONResponse(result.to_dict(), status_code=200 if result.ok else 422)
