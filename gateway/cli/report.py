"""``tollgate report spend|tasks|refresh``: the reports of ``gateway.analytics.reports`` read
straight from the store (``store_report``), printed as a rich table, CSV or JSON."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gateway.cli.local_report import local as local_report
from gateway.cli.options import ConfigOpt, optional_config, store_url

if TYPE_CHECKING:
    from gateway.analytics.reports import Report

app = typer.Typer(help="Spend and cost-per-successful-task reports.", no_args_is_help=True)
app.command("local")(local_report)  # the local tier: GPU cost, utilisation, savings
err = Console(stderr=True, soft_wrap=True)

#: ``gateway.analytics.reports.GROUP_BYS``, spelled out so that ``--help`` loads no SQL
GROUP_CHOICES = ("backend", "policy", "tenant", "key", "tag", "day")
GroupOpt = Annotated[str, typer.Option("--group-by", "-g", help=" | ".join(GROUP_CHOICES))]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="start: ISO date/time or an age (7d, 12h)")
]
UntilOpt = Annotated[str | None, typer.Option("--until", help="end (exclusive), same forms")]
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="only this tenant (by name)")]
BaselineOpt = Annotated[
    str | None,
    typer.Option("--baseline", help="backend to price savings on (default: most expensive)"),
]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table | csv | json")]
WideOpt = Annotated[bool, typer.Option("--wide", help="table: every column")]

COLUMNS = (
    ("label", "group"),
    ("requests", "requests"),
    ("attempts", "attempts"),
    ("prompt_tokens", "in tok"),
    ("completion_tokens", "out tok"),
    ("spend_usd", "spend $"),
    ("tasks", "tasks"),
    ("succeeded", "ok"),
    ("failed", "failed"),
    ("unknown", "unknown"),
    ("success_rate", "success"),
    ("cost_per_successful_task_usd", "$/ok task"),
    ("p50_latency_ms", "p50 ms"),
    ("p95_latency_ms", "p95 ms"),
    ("error_rate", "errors"),
    ("fallback_rate", "fallback"),
    ("baseline_cost_usd", "baseline $"),
)

#: the table format's default columns (``--wide``, CSV and JSON have them all)
COMPACT = tuple(
    c
    for c in COLUMNS
    if c[0]
    not in ("attempts", "prompt_tokens", "completion_tokens", "p50_latency_ms", "baseline_cost_usd")
)


def _load(config: str | None) -> tuple[str, Any]:
    """(database URL, config or None): the config file is optional here."""
    cfg = optional_config(config)
    return store_url(cfg), cfg


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.0f}"
    return str(value)


def render(rep: Report, fmt: str, out: Any = None, *, wide: bool = False) -> None:
    out = out or sys.stdout
    data = rep.as_dict()
    if fmt == "json":
        out.write(json.dumps(data, indent=2) + "\n")
        return
    rows = [*data["rows"], {**data["total"], "label": "TOTAL"}]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["group", *(key for key, _ in COLUMNS[1:])])
        for row in rows:
            writer.writerow(["" if row[k] is None else row[k] for k, _ in COLUMNS])
        out.write(buf.getvalue())
        return
    title = f"{rep.kind} by {rep.query.group_by}"
    if rep.query.start or rep.query.end:
        title += f" ({data['start'] or '…'} → {data['end'] or 'now'})"
    columns = COLUMNS if wide else COMPACT
    table = Table(title=title)
    for _, header in columns:
        table.add_column(header, justify="left" if header == "group" else "right")
    for i, row in enumerate(rows):
        table.add_row(*(_cell(row[k]) for k, _ in columns), end_section=i == len(rows) - 2)
    console = Console(file=out, soft_wrap=True, width=200 if wide else max(120, Console().width))
    console.print(table)
    s = data["savings"]
    if s:
        console.print(
            f"savings vs always [bold]{s['baseline']}[/bold]: spent ${s['actual_spend_usd']} "
            f"instead of ${s['baseline_cost_usd']} (saved ${s['saved_usd']}"
            + (f", {s['saved_fraction']:.1%}" if s["saved_fraction"] is not None else "")
            + f"); success rate {_pct(s['actual_success_rate'])} vs "
            f"{_pct(s['baseline_success_rate'])} on {s['baseline']} "
            f"({s['baseline_tasks_with_known_outcome']} of its tasks with a known outcome)",
            highlight=False,
        )
    j = data.get("judge")
    if j and j["verdicts"]:
        console.print(
            f"judge (evaluation overhead, not in the spend above): {j['verdicts']} verdicts "
            f"({j['passed']} pass, {j['failed']} fail) cost ${j['spend_usd']}"
            + (f" + {j['unpriced_verdicts']} unpriced" if j["unpriced_verdicts"] else ""),
            highlight=False,
        )
    c = data.get("cache")
    if c and c["hits"]:
        console.print(
            f"response cache: {c['hits']} hits of {c['requests']} requests "
            f"({_pct(c['hit_rate'])}) served at $0, saving ${c['saved_usd']}"
            + (f" + {c['unpriced_hits']} unpriced" if c["unpriced_hits"] else ""),
            highlight=False,
        )
    console.print(
        "tasks with no outcome are 'unknown', never successes; $/ok task = all spend ÷ "
        "succeeded tasks (docs/reports.md)",
        style="dim",
    )


def _pct(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1%}"


def _run(kind: str, **kw: Any) -> None:
    group_by, fmt, wide = kw.pop("group_by"), kw.pop("fmt"), kw.pop("wide")
    if group_by not in GROUP_CHOICES:
        err.print(f"[red]error[/red] --group-by must be one of {', '.join(GROUP_CHOICES)}")
        raise typer.Exit(2)
    if fmt not in ("table", "csv", "json"):
        err.print("[red]error[/red] --format must be table, csv or json")
        raise typer.Exit(2)
    url, cfg = _load(kw.pop("config"))
    if kw["baseline"] is not None and (cfg is None or cfg.backend(kw["baseline"]) is None):
        err.print(f"[red]error[/red] unknown baseline backend {kw['baseline']!r}")
        raise typer.Exit(2)
    from gateway.analytics.reports import UnknownTenant, store_report

    try:
        rep = asyncio.run(store_report(url, cfg, kind, group_by=group_by, **kw))  # type: ignore[arg-type]
    except UnknownTenant as exc:
        err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from None
    except ValueError as exc:
        err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(2) from None
    render(rep, fmt, wide=wide)


@app.command("spend")
def spend(
    group_by: GroupOpt = "backend",
    since: SinceOpt = None,
    until: UntilOpt = None,
    tenant: TenantOpt = None,
    baseline: BaselineOpt = None,
    fmt: FormatOpt = "table",
    wide: WideOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Spend by attempt: requests, tokens, spend, success, $/successful task, latency, errors."""
    _run(
        "spend",
        group_by=group_by,
        since=since,
        until=until,
        tenant=tenant,
        baseline=baseline,
        fmt=fmt,
        wide=wide,
        config=config,
    )


@app.command("tasks")
def tasks(
    group_by: GroupOpt = "policy",
    since: SinceOpt = None,
    until: UntilOpt = None,
    tenant: TenantOpt = None,
    baseline: BaselineOpt = None,
    fmt: FormatOpt = "table",
    wide: WideOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Whole tasks, grouped by their final attempt: cost per successful task, success rate."""
    _run(
        "tasks",
        group_by=group_by,
        since=since,
        until=until,
        tenant=tenant,
        baseline=baseline,
        fmt=fmt,
        wide=wide,
        config=config,
    )


@app.command("refresh")
def refresh(
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="re-summarise every closed day (after a spool replay)")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Bring the daily report roll-ups up to date (reports also do this before they run)."""
    from gateway.analytics.reports import refresh_store

    url, _ = _load(config)
    days = asyncio.run(refresh_store(url, rebuild=rebuild))
    err.print(f"summarised {len(days)} day(s)" + (f": {days[0]} … {days[-1]}" if days else ""))
