"""A report read straight from a store, as ``tollgate report`` asks for it: the schema brought up
to date (when it is behind: ``gateway.store.schema_version``), the tenant found by name, tags and
prices taken from the config (when there is one), self-hosted ones from their stored calibration."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.analytics.reports.assemble import report
from gateway.analytics.reports.query import GroupBy, ReportKind, ReportQuery, parse_when
from gateway.analytics.reports.results import Report
from gateway.analytics.reports.rollups import refresh_rollups

if TYPE_CHECKING:
    from gateway.config import Config


class UnknownTenant(ValueError):
    """The report names a tenant the store does not know."""


async def store_report(
    url: str,
    cfg: Config | None,
    kind: ReportKind,
    *,
    group_by: GroupBy,
    since: str | None = None,
    until: str | None = None,
    tenant: str | None = None,
    baseline: str | None = None,
) -> Report:
    """Build a report from the store at ``url``. Raises ValueError for an unreadable time and
    :class:`UnknownTenant`."""
    from sqlalchemy import select

    from gateway.analytics.prices import calibrated_prices
    from gateway.store.database import create_engine
    from gateway.store.models import tenants
    from gateway.store.schema_version import ensure_current

    start, end = parse_when(since), parse_when(until)
    engine = create_engine(url)
    try:
        await ensure_current(engine, url)
        tenant_id = None
        if tenant is not None:
            async with engine.connect() as conn:
                tenant_id = (
                    await conn.execute(select(tenants.c.id).where(tenants.c.name == tenant))
                ).scalar()
            if tenant_id is None:
                raise UnknownTenant(f"no tenant {tenant!r}")
        tags: dict[str, list[str]] = {}
        for b in cfg.backends if cfg else []:
            for tag in b.tags:
                tags.setdefault(tag, []).append(b.name)
        q = ReportQuery(
            group_by=group_by,
            start=start,
            end=end,
            tenant_id=tenant_id,
            tags={t: tuple(v) for t, v in tags.items()},
        )
        prices = await calibrated_prices(engine, cfg) if cfg is not None else {}
        return await report(engine, kind, q, prices=prices, baseline=baseline)
    finally:
        await engine.dispose()


async def refresh_store(url: str, *, rebuild: bool = False) -> list[str]:
    """Bring the store's schema and daily roll-ups up to date; returns the days summarised."""
    from gateway.store.database import create_engine
    from gateway.store.schema_version import ensure_current

    engine = create_engine(url)
    try:
        await ensure_current(engine, url)
        return await refresh_rollups(engine, rebuild=rebuild)
    finally:
        await engine.dispose()
