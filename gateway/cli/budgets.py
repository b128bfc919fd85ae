"""``tollgate budgets``: set, list and delete the budget limits stored in the database (per
tenant, policy, tag or key; lifetime, daily or monthly). Every replica picks a change up
within ``budgets.db_cache_s``; limits written in the config file's ``budgets:`` section are
listed too (source ``config``) but are changed by editing the file."""

from __future__ import annotations

import asyncio
from decimal import Decimal, InvalidOperation
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gateway.cli.options import ConfigOpt, optional_config, store_url, store_url_for, with_store

app = typer.Typer(
    help="Set, list and delete budgets per tenant, policy, tag or key (total, daily, monthly).",
    no_args_is_help=True,
)
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

ScopeOpt = Annotated[str, typer.Option(help="tenant | policy | tag | key")]
NameOpt = Annotated[str, typer.Option(help="the tenant's name, the policy, the tag or the key id")]


@app.command("set")
def budgets_set(
    scope: ScopeOpt,
    name: NameOpt,
    max_usd: Annotated[str, typer.Option("--max-usd", help="the limit, USD")],
    window: Annotated[str, typer.Option(help="total | day | month")] = "total",
    config: ConfigOpt = None,
) -> None:
    """Create or replace the budget of (scope, name, window)."""
    from pydantic import ValidationError

    from gateway.config.budgets import BudgetLimit
    from gateway.store import budgets as store

    try:
        limit = BudgetLimit(scope=scope, name=name, window=window, max_usd=Decimal(max_usd))  # type: ignore[arg-type]
    except (ValidationError, InvalidOperation) as exc:
        detail = (
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            if isinstance(exc, ValidationError)
            else f"--max-usd must be a number, got {max_usd!r}"
        )
        err.print(f"[red]error[/red] {detail}")
        raise typer.Exit(2) from None
    created = asyncio.run(with_store(store_url_for(config), lambda e: store.put_limit(e, limit)))
    verb = "created" if created else "updated"
    out.print(f"{verb} {limit.window} budget ${limit.max_usd} for {limit.scope} {limit.name}")


@app.command("list")
def budgets_list(config: ConfigOpt = None) -> None:
    """The budgets stored in the database, and those of the config file."""
    from gateway.store import budgets as store

    cfg = optional_config(config)
    stored = asyncio.run(with_store(store_url(cfg), store.list_limits))
    configured = list(cfg.budgets.limits) if cfg is not None else []
    table = Table()
    for col in ("scope", "name", "window", "max USD", "source"):
        table.add_column(col)
    for source, limits in (("db", stored), ("config", configured)):
        for limit in limits:
            table.add_row(limit.scope, limit.name, limit.window, str(limit.max_usd), source)
    out.print(table)
    if cfg is not None:
        out.print(f"windows are calendar periods in {cfg.budgets.timezone}")


@app.command("delete")
def budgets_delete(
    scope: ScopeOpt,
    name: NameOpt,
    window: Annotated[
        str | None, typer.Option(help="total | day | month (default: every window)")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Delete the stored budget(s) of (scope, name)."""
    from gateway.config.budgets import WINDOWS
    from gateway.store import budgets as store

    if window is not None and window not in WINDOWS:
        err.print(f"[red]error[/red] --window must be one of {', '.join(WINDOWS)}")
        raise typer.Exit(2)
    n = asyncio.run(
        with_store(store_url_for(config), lambda e: store.delete_limits(e, scope, name, window))
    )
    if not n:
        err.print(f"[red]error[/red] no stored budget for {scope} {name}")
        raise typer.Exit(1)
    out.print(f"deleted {n} budget(s) of {scope} {name}")
