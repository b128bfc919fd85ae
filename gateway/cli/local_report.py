"""``tollgate report local``: the local tier's account (``gateway.analytics.local_tier``) —
self-hosted spend next to API spend, GPU utilisation, and savings against API prices."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

err = Console(stderr=True, soft_wrap=True, highlight=False)


def local(
    since: Annotated[str, typer.Option(help="window start: 7d, 12h, today, an ISO date")] = "7d",
    until: Annotated[str | None, typer.Option(help="window end (default: now)")] = None,
    reference: Annotated[
        str | None, typer.Option(help="API backend to price the local tokens at")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="config file (default: config.yaml)")
    ] = None,
) -> None:
    """The local tier: self-hosted spend, GPU cost and utilisation, savings vs API prices."""
    from gateway.analytics.local_tier import local_tier
    from gateway.analytics.prices import resolve_prices
    from gateway.analytics.reports import store_report
    from gateway.analytics.reports.query import parse_when
    from gateway.cli.options import load_config_or_exit, store_url

    _, cfg = load_config_or_exit(config)
    url = store_url(cfg)
    if not any(b.self_hosted for b in cfg.backends):
        err.print("[red]error[/red] the config has no self-hosted backend (self_hosted: ...)")
        raise typer.Exit(2)
    if reference is not None and cfg.backend(reference) is None:
        err.print(f"[red]error[/red] unknown reference backend {reference!r}")
        raise typer.Exit(2)
    try:
        start = parse_when(since)
        end = parse_when(until) or datetime.now(UTC)
    except ValueError as exc:
        err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(2) from None
    assert start is not None
    rep = asyncio.run(
        store_report(url, cfg, "spend", group_by="backend", since=since, until=end.isoformat())
    )
    account = local_tier(rep, cfg, resolve_prices(cfg), start, end, reference)
    data = account.as_dict()
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table(title=f"local tier, {data['hours']:.1f} h ({data['start']} → {data['end']})")
    for col in ("backend", "in tokens", "out tokens", "spend", "GPU cost", "utilisation",
                f"at {data['reference'] or 'API'} prices", "saved"):  # fmt: skip
        table.add_column(col, justify="left" if col == "backend" else "right")
    for b in data["backends"]:
        util = "-" if b["utilisation"] is None else f"{b['utilisation']:.1%}"
        table.add_row(
            b["backend"], str(b["prompt_tokens"]), str(b["completion_tokens"]),
            f"${b['spend_usd']}", f"${b['gpu_cost_usd']}", util,
            "-" if b["at_api_prices_usd"] is None else f"${b['at_api_prices_usd']}",
            "-" if b["saved_usd"] is None else f"${b['saved_usd']}",
        )  # fmt: skip
    console = Console(soft_wrap=True, highlight=False)
    console.print(table)
    console.print(
        f"API spend over the window: ${data['api_spend_usd']}; local tier: spend "
        f"${data['local_spend_usd']} of ${data['gpu_cost_usd']} paid for its GPUs; saved "
        f"${data['saved_usd']} against {data['reference'] or 'API'} prices (GPU cost counted "
        "whole: it is paid whether or not the GPUs are busy)"
    )
