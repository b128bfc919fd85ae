"""Reports over HTTP: ``GET /v1/spend`` (JSON reports), ``GET /v1/dashboard/data`` (everything
the dashboard shows, in one call) and ``GET /dashboard`` (the static page that draws it).

Scope: a tenant key sees its own tenant; the admin key sees every tenant, or one with
``?tenant=NAME``. The page itself carries no data and needs no key to load: it asks for a key
(kept in the browser's session storage, or passed in the URL fragment ``#key=…``, which is never
sent to the server) and calls the data endpoint with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import HTMLResponse

from gateway.analytics.local_tier import local_tier
from gateway.analytics.reports import GROUP_BYS, ReportQuery, parse_when, recent_failures, report
from gateway.analytics.reports.predictor_use import predictor_use
from gateway.errors import InvalidRequest, NotFound
from gateway.http.feedback import settle_writes
from gateway.http.openai import runtime_of
from gateway.runtime import Runtime
from gateway.snapshot import Snapshot
from gateway.store import queries

router = APIRouter()


@dataclass(frozen=True)
class Scope:
    tenant_id: str | None  # None: all tenants
    tenant_name: str | None
    admin: bool


async def resolve_scope(rt: Runtime, authorization: str | None, tenant: str | None) -> Scope:
    if rt.auth.is_admin(authorization):
        if tenant is None:
            return Scope(None, None, True)
        tid = await queries.tenant_id_by_name(rt.engine, tenant)
        if tid is None:
            raise NotFound(f"no tenant {tenant!r}", param="tenant")
        return Scope(tid, tenant, True)
    principal = await rt.auth.authenticate(authorization)
    if tenant is not None and tenant != principal.tenant_name:
        raise InvalidRequest("a tenant key can only report on its own tenant", param="tenant")
    return Scope(principal.tenant_id, principal.tenant_name, False)


def _when(text: str | None, param: str) -> datetime | None:
    """A report bound from a query parameter; anything unreadable is a 400 naming it."""
    try:
        return parse_when(text)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(f"{param}: {exc}", param=param) from None


def build_query(
    snap: Snapshot, scope: Scope, group_by: str, start: str | None, end: str | None
) -> ReportQuery:
    if group_by not in GROUP_BYS:
        raise InvalidRequest(
            f"group_by must be one of {', '.join(GROUP_BYS)}, not {group_by!r}", param="group_by"
        )
    since, until = _when(start, "start"), _when(end, "end")
    tags: dict[str, list[str]] = {}
    for backend in snap.config.backends:
        for tag in backend.tags:
            tags.setdefault(tag, []).append(backend.name)
    return ReportQuery(
        group_by=group_by,  # type: ignore[arg-type]
        start=since,
        end=until,
        tenant_id=scope.tenant_id,
        tags={t: tuple(b) for t, b in tags.items()},
    )


def _check_baseline(snap: Snapshot, baseline: str | None) -> None:
    if baseline is not None and snap.config.backend(baseline) is None:
        raise InvalidRequest(f"unknown baseline backend {baseline!r}", param="baseline")


@router.get("/v1/spend", tags=["tollgate"])
async def get_spend(
    request: Request,
    kind: str = Query("spend", description="spend (attempts) or tasks (whole tasks)"),
    group_by: str = Query("backend", description=" | ".join(GROUP_BYS)),
    start: str | None = Query(None, description="ISO time or an age such as 7d"),
    end: str | None = Query(None, description="ISO time or an age; exclusive"),
    baseline: str | None = Query(None, description="backend to price savings against"),
    tenant: str | None = Query(None, description="admin key only: one tenant"),
    authorization: str | None = Header(default=None),
) -> dict[str, Any]:
    """Spend or task report for the caller's tenant (the admin key: every tenant)."""
    rt = runtime_of(request)
    snap = rt.snapshot
    scope = await resolve_scope(rt, authorization, tenant)
    if kind not in ("spend", "tasks"):
        raise InvalidRequest("kind must be spend or tasks", param="kind")
    _check_baseline(snap, baseline)
    q = build_query(snap, scope, group_by, start, end)
    await settle_writes(rt.writer)
    rep = await report(rt.engine, kind, q, prices=dict(snap.prices), baseline=baseline)  # type: ignore[arg-type]
    out = {**rep.as_dict(), "tenant": scope.tenant_name}
    if kind == "spend" and group_by == "backend":
        account = local_account(snap, scope, rep, q)
        if account is not None:
            out["local_tier"] = account
    return out


def local_account(snap: Snapshot, scope: Scope, rep: Any, q: ReportQuery) -> dict[str, Any] | None:
    """The local tier's account (``gateway.analytics.local_tier``: self-hosted spend beside API
    spend, GPU cost and utilisation, what its tokens would have cost at API prices) for the
    admin over a window with a start; None when it does not apply (a tenant's view: the GPUs
    are everyone's; no start: GPU hours are undefined; no self-hosted backend)."""
    if not scope.admin or scope.tenant_id is not None or q.start is None:
        return None
    if not any(b.self_hosted for b in snap.config.backends):
        return None
    end = q.end or datetime.now(UTC)
    return local_tier(rep, snap.config, dict(snap.prices), q.start, end).as_dict()


@router.get("/v1/dashboard/data", tags=["tollgate"])
async def dashboard_data(
    request: Request,
    start: str | None = Query(None),
    end: str | None = Query(None),
    baseline: str | None = Query(None),
    tenant: str | None = Query(None),
    authorization: str | None = Header(default=None),
) -> dict[str, Any]:
    """Every figure the dashboard draws, from the same report functions as ``/v1/spend``."""
    rt = runtime_of(request)
    snap = rt.snapshot
    scope = await resolve_scope(rt, authorization, tenant)
    _check_baseline(snap, baseline)
    await settle_writes(rt.writer)
    prices = dict(snap.prices)

    async def run(kind: str, group_by: str) -> dict[str, Any]:
        q = build_query(snap, scope, group_by, start, end)
        rep = await report(rt.engine, kind, q, prices=prices, baseline=baseline)  # type: ignore[arg-type]
        return rep.as_dict()

    by_policy = await run("tasks", "policy")
    backend_q = build_query(snap, scope, "backend", start, end)
    backend_rep = await report(rt.engine, "spend", backend_q, prices=prices, baseline=baseline)
    return {
        "object": "tollgate.dashboard",
        "scope": {"tenant": scope.tenant_name, "admin": scope.admin},
        "by_day": await run("spend", "day"),
        "by_backend": backend_rep.as_dict(),
        "by_policy": by_policy,
        "top_spenders": await run("spend", "key" if scope.tenant_id else "tenant"),
        "savings": by_policy["savings"],
        "total": by_policy["total"],
        "recent_failures": await recent_failures(rt.engine, scope.tenant_id),
        "local_tier": local_account(snap, scope, backend_rep, backend_q),
        "predictor": await predictor_use(
            rt.engine, scope.tenant_id, _when(start, "start"), _when(end, "end")
        ),
    }


@router.get("/dashboard", include_in_schema=False)
async def dashboard_page() -> HTMLResponse:
    page = resources.files("gateway.http").joinpath("dashboard_static/index.html")
    return HTMLResponse(page.read_text("utf-8"), headers={"cache-control": "no-store"})
