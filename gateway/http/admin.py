"""The admin API (virtual keys and their limits, tenants' limits, budgets, config reloads),
guarded by the admin key from ``TOLLGATE_ADMIN_KEY``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import JSONResponse

from gateway.config.budgets import WINDOWS, BudgetLimit
from gateway.errors import InvalidRequest, NotFound
from gateway.http.openai import runtime_of
from gateway.http.schemas import CreateKeyRequest, LimitsFields, TenantLimitsRequest
from gateway.serve.access import unknown_names
from gateway.store import budgets as budget_store
from gateway.store.keys import Limits


def _limits(request: Request, payload: LimitsFields) -> Limits:
    """The payload's limits; 400 naming the field when a backend or policy is unknown."""
    problems = unknown_names(
        runtime_of(request).config, payload.allowed_backends, payload.allowed_policies
    )
    if problems:
        field, message = problems[0]
        raise InvalidRequest(message, param=field)
    return Limits.of(payload.rpm, payload.tpm, payload.allowed_backends, payload.allowed_policies)


router = APIRouter(prefix="/admin", tags=["admin"])
TENANT = Path(min_length=1, max_length=128, description="tenant name")


@router.post("/keys", status_code=201)
async def create_key(
    request: Request, payload: CreateKeyRequest, authorization: str | None = Header(default=None)
) -> JSONResponse:
    rt = runtime_of(request)
    rt.auth.require_admin(authorization)
    budget = Decimal(str(payload.max_budget_usd)) if payload.max_budget_usd is not None else None
    raw, record = await rt.keys.create_key(
        payload.tenant,
        name=payload.name,
        max_budget_usd=budget,
        budget_window=payload.budget_window,
        limits=_limits(request, payload),
    )
    return JSONResponse({"key": raw, **record.public()}, status_code=201)


@router.put("/tenants/{tenant}/limits")
async def set_tenant_limits(
    request: Request,
    payload: TenantLimitsRequest,
    tenant: str = TENANT,
    authorization: str | None = Header(default=None),
) -> dict[str, Any]:
    """Replace a tenant's rate limits and model access (the tenant is created if new); every
    replica applies them within the key-cache TTL."""
    rt = runtime_of(request)
    rt.auth.require_admin(authorization)
    limits = _limits(request, payload)
    await rt.keys.set_tenant_limits(tenant, limits)
    return {"tenant": tenant, **limits.public()}


@router.get("/tenants/{tenant}/limits")
async def get_tenant_limits(
    request: Request, tenant: str = TENANT, authorization: str | None = Header(default=None)
) -> dict[str, Any]:
    rt = runtime_of(request)
    rt.auth.require_admin(authorization)
    limits = await rt.keys.tenant_limits(tenant)
    if limits is None:
        raise NotFound(f"no tenant {tenant!r}")
    return {"tenant": tenant, **limits.public()}


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


@router.get("/budgets")
async def list_budgets(
    request: Request, authorization: str | None = Header(default=None)
) -> dict[str, Any]:
    """Every budget limit — stored (``source: db``, set here or with ``tollgate budgets``) and
    from the config file (``source: config``) — with its current period's spend."""
    rt = runtime_of(request)
    rt.auth.require_admin(authorization)
    cfg = rt.config.budgets
    rows = []
    for source, limits in (
        ("db", await budget_store.list_limits(rt.engine)),
        ("config", cfg.limits),
    ):
        for limit in limits:
            row = {**limit.model_dump(mode="json"), "source": source}
            row.update(await rt.budgets.usage(limit, cfg))
            rows.append(row)
    return {"object": "list", "timezone": cfg.timezone, "data": rows}


@router.put("/budgets")
async def put_budget(
    request: Request, payload: BudgetLimit, authorization: str | None = Header(default=None)
) -> JSONResponse:
    """Create (201) or replace (200) the stored limit of (scope, name, window)."""
    rt = runtime_of(request)
    rt.auth.require_admin(authorization)
    created = await budget_store.put_limit(rt.engine, payload)
    rt.budgets.forget_stored()  # this replica at once; the others within budgets.db_cache_s
    return JSONResponse(
        {**payload.model_dump(mode="json"), "source": "db"}, status_code=201 if created else 200
    )


@router.delete("/budgets/{scope}/{name:path}")
async def delete_budget(
    request: Request,
    scope: str,
    name: str,
    window: str | None = None,
    authorization: str | None = Header(default=None),
) -> dict[str, Any]:
    """Delete the stored limit of (scope, name, window), or of every window without one."""
    rt = runtime_of(request)
    rt.auth.require_admin(authorization)
    if window is not None and window not in WINDOWS:
        raise InvalidRequest(f"window must be one of {', '.join(WINDOWS)}", param="window")
    deleted = await budget_store.delete_limits(rt.engine, scope, name, window)
    if not deleted:
        which = f" ({window})" if window else ""
        raise NotFound(f"no stored budget for {scope} {name!r}{which}")
    rt.budgets.forget_stored()
    return {"deleted": deleted, "scope": scope, "name": name, "window": window}
