"""``tollgate policy backtest`` and ``tollgate route explain``: try policies before rollout.

``policy backtest`` replays a dataset from ``../shared/data`` or the requests logged in the
store under the config's policy set and a candidate policy file, and prints spend, success
rate, cost per successful task and backend mix for both, and the difference. ``route
explain`` shows the decision the config's policies would take for one prompt, with the shipped
predictor. This module parses the options and prints; the work is
``gateway.analytics.backtest`` (``backtest_on_dataset``, ``backtest_on_store``) and
``gateway.analytics.explain``.

Heavy imports (pandas, torch, litellm, SQLAlchemy's engine) happen inside the commands, so
mounting these apps keeps ``tollgate --help`` fast.
"""

from __future__ import annotations

import asyncio
import json
import sys
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gateway.cli.options import ConfigOpt, load_config_or_exit, print_issues, store_url

if TYPE_CHECKING:
    from gateway.analytics.backtest import BacktestResult, Summary

app = typer.Typer(help="Backtest routing policies before rolling them out.", no_args_is_help=True)
route_app = typer.Typer(help="Explain routing decisions.", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]


# -- policy backtest --------------------------------------------------------------------------
def _parse_map(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        backend, sep, model = item.partition("=")
        if not sep or not backend or not model:
            err.print(f"[red]error[/red] --map expects BACKEND=DATASET_MODEL, got {item!r}")
            raise typer.Exit(2)
        out[backend.strip()] = model.strip()
    return out


def _usd(value: Decimal | None) -> str:
    if value is None:
        return "-"
    return f"{value:.6f}" if abs(value) >= Decimal("0.001") else f"{value:.8f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _signed(value: str | float | None, pct: float | None, kind: str) -> tuple[str, str]:
    if value is None:
        return "-", "-"
    if kind == "usd":
        d = Decimal(str(value))
        text = ("+" if d >= 0 else "-") + _usd(abs(d))
    elif kind == "rate":
        text = f"{float(value) * 100:+.1f} pts"
    else:
        text = f"{float(value):+.1f}"
    return text, "-" if pct is None else f"{pct:+.1f}%"


def _title(result: BacktestResult) -> str:
    where = result.source
    if result.meta.get("store"):
        where = f"store {result.meta['store']}"
    return f"policy backtest on {where}: {result.current.summary.requests} requests"


def render(result: BacktestResult, out: Any = None) -> None:
    """The comparison table, the backend mix, and the notes."""
    from gateway.analytics.backtest import ESTIMATED_TEXT

    console = Console(file=out or sys.stdout, soft_wrap=True, width=max(110, Console().width))
    a: Summary = result.current.summary
    b: Summary = result.candidate.summary
    star = "*" if b.estimated else ""
    d = result.diff()
    for note in result.notes:
        if note.startswith("IN-SAMPLE"):
            console.print(f"warning: {note}", style="bold yellow", highlight=False)
    table = Table(title=_title(result))
    table.add_column("")
    table.add_column(result.current.label, justify="right")
    table.add_column(f"candidate{star}", justify="right")
    table.add_column("difference", justify="right")
    table.add_column("difference %", justify="right")
    table.add_row("requests", str(a.requests), str(b.requests), "", "")
    table.add_row(
        "spend $",
        _usd(a.spend_usd),
        _usd(b.spend_usd) + star,
        *_signed(d["spend_usd"]["abs"], d["spend_usd"]["pct"], "usd"),
    )
    table.add_row(
        "succeeded",
        _num(a.succeeded),
        _num(b.succeeded) + star,
        *_signed(d["succeeded"]["abs"], d["succeeded"]["pct"], "n"),
    )
    table.add_row("failed", _num(a.failed), _num(b.failed) + star, "", "")
    table.add_row("unknown outcome", str(a.unknown), str(b.unknown), "", "")
    table.add_row(
        "success rate",
        _pct(a.success_rate),
        _pct(b.success_rate) + star,
        *_signed(d["success_rate"]["abs"], d["success_rate"]["pct"], "rate"),
    )
    table.add_row(
        "$ / successful task",
        _usd(a.cost_per_success),
        _usd(b.cost_per_success) + star,
        *_signed(
            d["cost_per_successful_task_usd"]["abs"],
            d["cost_per_successful_task_usd"]["pct"],
            "usd",
        ),
    )
    table.add_row(
        "no backend (refused)", str(a.requests - a.served), str(b.requests - b.served), "", ""
    )
    if a.unpriced or b.unpriced:
        table.add_row("unpriced (cost unknown)", str(a.unpriced), str(b.unpriced), "", "")
    table.add_row("estimated rows", str(a.estimated), str(b.estimated), "", "")
    console.print(table)

    mix = Table(title=f"backend mix ({result.changed} of {a.requests} choices changed)")
    mix.add_column("backend")
    mix.add_column(result.current.label, justify="right")
    mix.add_column("candidate", justify="right")
    mix.add_column("difference", justify="right")
    sa, sb = a.mix_share(), b.mix_share()
    for name in sorted(set(sa) | set(sb), key=lambda n: (-max(sa.get(n, 0), sb.get(n, 0)), n)):
        x, y = sa.get(name, 0.0), sb.get(name, 0.0)
        mix.add_row(name, _pct(x), _pct(y), f"{(y - x) * 100:+.1f} pts")
    console.print(mix)
    versions = f"current policy set {result.current.version or '(as logged)'}, candidate " + str(
        result.candidate.version
    )
    console.print(versions, style="dim", highlight=False)
    if b.estimated:
        console.print(
            f"* {b.estimated} of {b.requests} candidate rows are {ESTIMATED_TEXT}", highlight=False
        )
    for note in result.notes:
        if not note.startswith("IN-SAMPLE"):
            console.print(f"- {note}", style="dim", highlight=False)
    console.print(
        "success rate = succeeded ÷ known outcomes; $ / successful task = all spend ÷ succeeded",
        style="dim",
    )


@app.command("backtest")
def backtest(
    policy: Annotated[
        str, typer.Option("--policy", "-p", help="candidate policy file (policies/routing YAML)")
    ],
    on: Annotated[
        str,
        typer.Option(
            "--on",
            help="routerbench | routerbench:<file> | mmlu-pro | a data dir or "
            "routerbench/<file>.csv | store",
        ),
    ],
    config: ConfigOpt = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", "-n", min=1, help="dataset: a seeded sample of N queries; store: last N"
        ),
    ] = None,
    json_out: JsonOpt = False,
    rows: Annotated[bool, typer.Option("--rows", help="--json: add every replayed row")] = False,
    seed: Annotated[int, typer.Option(help="seed of the --limit sample")] = 0,
    map_: Annotated[
        list[str] | None,
        typer.Option("--map", help="BACKEND=DATASET_MODEL, overrides backends[].profile"),
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="default: $TOLLGATE_DATA_DIR or ../shared/data")
    ] = None,
    holdout: Annotated[
        bool,
        typer.Option(
            "--holdout",
            help="dataset: refit the predictor on its recorded training split and replay only "
            "the held-out queries (out-of-sample)",
        ),
    ] = False,
) -> None:
    """Replay a dataset or the logged traffic under the current and a candidate policy set."""
    from gateway.analytics.backtest import (
        BacktestError,
        backtest_on_dataset,
        backtest_on_store,
        load_candidate,
    )
    from gateway.config import ConfigError
    from gateway.settings import cache_root_from_env, data_dir_from_env

    cfg_path, cfg = load_config_or_exit(config)
    if cfg.policy_set is None:
        err.print(f"[red]error[/red] {cfg_path} defines no policies to compare against")
        raise typer.Exit(2)
    try:
        candidate = load_candidate(policy, cfg)
    except ConfigError as exc:
        print_issues(exc, policy)
        raise typer.Exit(1) from None
    if on == "store" and (map_ or holdout):
        err.print("[red]error[/red] --map and --holdout only apply to dataset replays")
        raise typer.Exit(2)
    overrides = _parse_map(map_)
    try:
        if on == "store":
            result = asyncio.run(backtest_on_store(cfg, candidate, store_url(cfg), limit))
        else:
            result = backtest_on_dataset(
                cfg,
                candidate,
                on,
                config_label=cfg_path,
                limit=limit,
                seed=seed,
                overrides=overrides,
                data_dir=data_dir_from_env(data_dir),
                holdout=holdout,
                cache_dir=cache_root_from_env(),
                progress=lambda message: err.print(message, style="dim"),
            )
    except BacktestError as exc:
        err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(2) from None
    if json_out:
        sys.stdout.write(json.dumps(result.to_dict(rows=rows), indent=2) + "\n")
    else:
        render(result)


# -- route explain -----------------------------------------------------------------------------
@route_app.command("explain")
def explain(
    prompt: Annotated[str, typer.Argument(help="the user message to route")],
    policy: Annotated[
        str | None,
        typer.Option("--policy", "-p", help="a policy name (default: the routing rules choose)"),
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="tenant name, for tenant rules")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1)] = None,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """The decision for one prompt with the shipped predictor and the config's backends.

    Backends count as healthy when their credentials are set (or they are local); circuits
    closed, p95 latency unknown; prompt tokens = ceil(chars / 4).
    """
    from gateway.analytics.explain import explain_route
    from policies import render_table

    cfg_path, cfg = load_config_or_exit(config)
    try:
        decision = explain_route(cfg, prompt, policy=policy, tenant=tenant, max_tokens=max_tokens)
    except ValueError as exc:
        err.print(f"[red]error[/red] {cfg_path}: {exc}")
        raise typer.Exit(2) from None
    if json_out:
        sys.stdout.write(json.dumps(decision.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(render_table(decision) + "\n")
