"""The ``tollgate`` command line: serve, config check, db upgrade, keys, and the predictor tools."""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gateway.cli import budgets as cli_budgets
from gateway.cli import calibrate, demo, fake_upstream, importer, tenants
from gateway.cli import report as cli_report
from gateway.cli.options import ConfigOpt, load_config_or_exit, store_url_for, with_keystore
from gateway.cli.policy import app as policy_app
from gateway.cli.policy import route_app

app = typer.Typer(
    name="tollgate",
    help="Tollgate: a cost-aware, OpenAI-compatible LLM gateway.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Validate configuration files.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the SQL store's schema.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke virtual API keys.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(tenants.app, name="tenants")
app.add_typer(cli_budgets.app, name="budgets")
app.add_typer(cli_report.app, name="report")
app.add_typer(demo.app, name="demo")
app.add_typer(policy_app, name="policy")
app.add_typer(route_app, name="route")
app.add_typer(importer.app, name="import")
app.command("fake-upstream")(fake_upstream.fake_upstream)
app.command("calibrate")(calibrate.calibrate)

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _mount_predictor() -> None:
    try:
        from gateway.cli.predictor import app as predictor_app
    except ImportError:  # the predictors package is optional at build time of this CLI
        return
    app.add_typer(
        predictor_app, name="predictor", help="Train, evaluate and run the complexity predictor."
    )


_mount_predictor()


def _settings(config: str | None, host: str | None = None, port: int | None = None) -> Any:
    from gateway.config import ConfigError, load_settings

    try:
        return load_settings(config, host=host, port=port)
    except ConfigError as exc:
        for issue in exc.issues:
            err.print(f"[red]error[/red] {issue}", highlight=False, markup=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[
        str | None, typer.Option(help="bind address (default from config: 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="port (default from config: 4000)")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="worker processes sharing the port; more than 1 needs the shared state in "
            "Redis (TOLLGATE_REDIS_URL)",
        ),
    ] = 1,
) -> None:
    """Run the gateway (uvicorn, uvloop + httptools); --workers N runs N processes."""
    import uvicorn

    from gateway.app import UnsafeBind, check_bind, create_app

    settings = _settings(config, host, port)
    run: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": log_level,
        "access_log": False,
        "timeout_graceful_shutdown": 30,
        "loop": "uvloop",
        "http": "httptools",
    }
    try:
        if workers == 1:
            application = create_app(settings)
        else:
            check_bind(settings)
    except UnsafeBind as exc:
        err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(2) from None
    if workers == 1:
        uvicorn.run(application, **run)
        return
    if settings.redis_url is None:
        err.print(
            f"[red]error[/red] --workers {workers} needs the shared state in Redis (set "
            "TOLLGATE_REDIS_URL or redis.url): with in-process state every worker would keep "
            "its own budgets and circuit breakers"
        )
        raise typer.Exit(2)
    if settings.database_url.startswith("sqlite"):
        err.print(
            f"[yellow]warning[/yellow] {workers} workers write to one SQLite file and contend "
            "for it; use PostgreSQL (TOLLGATE_DATABASE_URL) for several workers"
        )
    err.print(
        f"{workers} workers: /metrics shows the counters of the worker that answers the "
        "scrape; SIGHUP restarts the workers one by one (each reloads the config)",
        highlight=False,
    )
    _prepare_store(settings)  # once, here, not racing in every worker
    from gateway.settings import export_worker_env

    export_worker_env(settings.config_path, settings.host, settings.port)
    # a worker imports litellm before it is ready: past uvicorn's 5 s it would be killed and
    # restarted forever on a busy host
    uvicorn.run(
        "gateway.app:create_app_from_env",
        factory=True,
        workers=workers,
        timeout_worker_healthcheck=120,
        **run,
    )


def _prepare_store(settings: Any) -> None:
    """Migrate the store and create the anonymous tenant before workers start in parallel."""
    from gateway.store.database import create_engine
    from gateway.store.keys import KeyStore
    from gateway.store.migrate import upgrade_database

    if settings.config.store.auto_migrate:
        upgrade_database(settings.database_url)
    tenant = settings.config.server.anonymous_tenant
    if tenant:

        async def ensure() -> None:
            engine = create_engine(settings.database_url)
            try:
                await KeyStore(engine).ensure_tenant(tenant)
            finally:
                await engine.dispose()

        asyncio.run(ensure())


@config_app.command("check")
def config_check(
    file: Annotated[
        str | None, typer.Argument(help="config file (default: $TOLLGATE_CONFIG or config.yaml)")
    ] = None,
) -> None:
    """Validate a config file; print every error with its YAML path and line."""
    path, cfg = load_config_or_exit(file, code=1)
    from gateway.analytics.prices import resolve_prices

    prices = resolve_prices(cfg)  # catalog prices: litellm's bundled cost map
    table = Table(title=f"{path}: OK", show_lines=False)
    for col in ("backend", "model", "credentials", "price per 1M tokens"):
        table.add_column(col)
    for b in cfg.backends:
        if b.api_key is None:
            cred = "none needed" if b.is_local else "none"
        else:
            cred = f"${b.api_key.env} " + (
                "set" if b.api_key.value() else "[yellow]NOT SET[/yellow]"
            )
        resolved = prices[b.name]
        if resolved is None:
            price = "[yellow]UNPRICED[/yellow] (not in litellm's cost map: set prices)"
        else:
            per_m = [
                f"${float(v * 1_000_000):.4g}"
                for v in (resolved.input_per_token, resolved.output_per_token)
            ]
            price = f"{resolved.source}: {per_m[0]} in / {per_m[1]} out"
        table.add_row(b.name, b.model, cred, price)
    out.print(table)
    out.print(
        f"policies: {', '.join(cfg.policies) or 'none'}; "
        f"aliases: {', '.join(cfg.aliases) or 'none'}"
    )
    if cfg.policy_set is not None:
        from rich.markup import escape

        from policies.availability import fallback_warnings

        available = {b.name: b.missing_credentials() for b in cfg.backends}
        for line in fallback_warnings(cfg.policy_set, available):
            err.print(f"[yellow]warning[/yellow] {escape(line)}", highlight=False)


@db_app.command("upgrade")
def db_upgrade(
    config: ConfigOpt = None,
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
) -> None:
    """Create or migrate the schema at TOLLGATE_DATABASE_URL (or the config's store.url)."""
    from gateway.store.database import redact_url, to_async_url
    from gateway.store.migrate import current_revision, upgrade_database

    url = store_url_for(config)
    upgrade_database(url, revision)
    out.print(
        f"database {redact_url(to_async_url(url))} "
        f"at revision {current_revision(to_async_url(url))}"
    )


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="tenant the key belongs to (created if new)")],
    name: Annotated[str | None, typer.Option(help="a label for the key")] = None,
    max_budget_usd: Annotated[
        str | None, typer.Option(help="spend limit for this key, USD")
    ] = None,
    budget_window: Annotated[
        str, typer.Option(help="the budget's window: total (lifetime), day or month")
    ] = "total",
    rpm: tenants.RpmOpt = None,
    tpm: tenants.TpmOpt = None,
    allow_backend: tenants.BackendsOpt = None,
    allow_policy: tenants.PoliciesOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create a key; it is printed once, as the last line of output."""
    from gateway.config.budgets import WINDOWS

    if budget_window not in WINDOWS:
        err.print(
            f"[red]error[/red] --budget-window must be total, day or month, not {budget_window!r}"
        )
        raise typer.Exit(2)
    budget = None
    if max_budget_usd is not None:
        try:
            budget = Decimal(max_budget_usd)
        except InvalidOperation:
            err.print(f"[red]error[/red] --max-budget-usd must be a number, got {max_budget_usd!r}")
            raise typer.Exit(2) from None
        if budget < 0:
            err.print("[red]error[/red] --max-budget-usd must be >= 0")
            raise typer.Exit(2)
    url, limits = tenants.limits_from_options(config, rpm, tpm, allow_backend, allow_policy)
    raw, record = _run(
        with_keystore(
            url,
            lambda ks: ks.create_key(
                tenant,
                name=name,
                max_budget_usd=budget,
                budget_window=budget_window,
                limits=limits,
            ),
        )
    )
    described = tenants.describe(limits)
    err.print(
        f"created key {record.id} for tenant {record.tenant_name!r}"
        + (f" with budget ${budget} ({budget_window})" if budget is not None else "")
        + (f", {described}" if described else "")
        + " — store it now, it is not shown again:"
    )
    sys.stdout.write(raw + "\n")


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="only this tenant's keys")] = None,
    config: ConfigOpt = None,
) -> None:
    """List keys (prefixes only; keys themselves are never stored)."""
    records = _run(with_keystore(store_url_for(config), lambda ks: ks.list(tenant)))
    table = Table()
    for col in ("id", "tenant", "name", "prefix", "budget USD", "limits", "created", "revoked"):
        table.add_column(col, no_wrap=col in ("id", "prefix"))  # what `keys revoke` takes
    for r in records:
        table.add_row(
            r.id,
            r.tenant_name,
            r.name or "",
            r.prefix + "…",
            f"{r.max_budget_usd} ({r.budget_window})" if r.max_budget_usd is not None else "",
            tenants.describe(r.limits),
            r.created_at.isoformat(timespec="seconds"),
            r.revoked_at.isoformat(timespec="seconds") if r.revoked_at else "",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="key id or its display prefix")],
    config: ConfigOpt = None,
) -> None:
    """Revoke a key (takes effect on every replica within the key-cache TTL)."""
    record = _run(with_keystore(store_url_for(config), lambda ks: ks.revoke(key)))
    if record is None:
        err.print(f"[red]error[/red] no key with id or prefix {key!r} (or the prefix is ambiguous)")
        raise typer.Exit(1)
    out.print(f"revoked {record.id} ({record.prefix}…) of tenant {record.tenant_name}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
