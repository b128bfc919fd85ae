"""``tollgate policy backtest`` and ``tollgate route explain``: try policies before rollout.

``policy backtest`` replays a dataset from ``../shared/data`` or the requests logged in the
store under the config's policy set and a candidate policy file, and prints spend, success
rate, cost per successful task and backend mix for both, and the difference
(``gateway.analytics.backtest`` does the work). ``route explain`` shows the decision the config's
policies would take for one prompt, with the shipped predictor.

Heavy imports (pandas, torch, litellm, SQLAlchemy's engine) happen inside the commands, so
mounting these apps keeps ``tollgate --help`` fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from gateway.analytics.backtest import BacktestResult, Summary
    from gateway.config import Config
    from predictors.service import Predictor

app = typer.Typer(help="Backtest routing policies before rolling them out.", no_args_is_help=True)
route_app = typer.Typer(help="Explain routing decisions.", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="config file (default: $TOLLGATE_CONFIG or config.yaml)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]


def _config(path: str | None) -> tuple[str, Config]:
    from gateway.config import ConfigError, load_config
    from gateway.settings import DEFAULT_CONFIG

    path = path or os.environ.get("TOLLGATE_CONFIG") or DEFAULT_CONFIG
    try:
        return path, load_config(path)
    except ConfigError as exc:
        _issues(exc, path)
        raise typer.Exit(2) from None


def _issues(exc: Any, path: str) -> None:
    for issue in exc.issues:
        err.print(f"[red]error[/red] {issue}", highlight=False)
    err.print(f"{len(exc.issues)} error(s) in {path}")


def _predictor(cfg: Config) -> Predictor | None:
    if not cfg.predictor.enabled:
        return None
    from predictors.service import load_artifact

    return load_artifact(cfg.predictor.artifact)


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


def _dataset_backtest(
    cfg: Config,
    cfg_path: str,
    candidate: Any,
    on: str,
    *,
    limit: int | None,
    seed: int,
    overrides: dict[str, str],
    data_dir: str | None,
    holdout: bool,
) -> BacktestResult:
    from gateway.analytics.backtest import (
        backend_facts,
        dataset_queries,
        load_dataset,
        map_backends,
        predict_prompts,
        replay_dataset,
        resolve_prices,
        sample_ids,
    )
    from predictors.fitting import holdout_predictor, trained_on

    unknown = sorted(set(overrides) - {b.name for b in cfg.backends})
    if unknown:
        err.print(f"[red]error[/red] --map names unknown backend(s): {', '.join(unknown)}")
        raise typer.Exit(2)
    try:
        table = load_dataset(on, data_dir)
    except (ValueError, FileNotFoundError) as exc:
        err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(2) from None
    mapping, missing = map_backends(cfg, table.models, overrides)
    if not mapping:
        err.print(
            f"[red]error[/red] no backend of {cfg_path} maps to a model of {table.name}: set "
            "backends[].profile to a dataset model id, or use --map BACKEND=MODEL"
        )
        raise typer.Exit(2)
    predictor = _predictor(cfg)
    notes = [
        "mapped: " + ", ".join(f"{b} = {m}" for b, m in mapping.items()),
    ]
    in_sample: bool | None = None
    if predictor is not None:
        in_sample = table.name in trained_on(predictor.meta)
    if holdout and predictor is not None and in_sample:
        try:
            err.print("refitting the predictor on its recorded training split …", style="dim")
            held = holdout_predictor(predictor, data_dir)
        except (ValueError, FileNotFoundError) as exc:
            err.print(f"[red]error[/red] --holdout: {exc}")
            raise typer.Exit(2) from None
        before = len(table)
        table = table.subset([i for i in table.ids if f"{table.name}:{i}" in held.test_keys])
        predictor, in_sample = held.predictor, False
        notes.append(
            f"held-out: predictor refitted on the 70 % training part of its recorded split "
            f"(seed {held.seed}, {held.train_rows} rows, its artifact's train config); replayed "
            f"on the {len(table)} of {before} {table.name} queries it never saw"
        )
    elif holdout:
        notes.append(
            "--holdout: the predictor was not trained on this dataset; nothing to hold out"
        )
    total = len(table)
    table = table.subset(sample_ids(table.ids, limit, seed))
    if missing:
        notes.append("unavailable for the replay (removed as unhealthy): " + ", ".join(missing))
    if len(table) < total:
        notes.append(f"--limit: a seeded sample (seed {seed}) of {len(table)} of {total} queries")
    if table.name == "mmlu-pro":
        notes.append(
            "cost: the dataset's convention, input tokens = ceil(chars(question + options) / 4), "
            "output tokens = ceil(gen_chars / 4), priced with mmlu-pro/prices.csv"
        )
    else:
        notes.append(f"cost: the recorded per-query USD cost (<model>|total_cost) of {table.name}")
    notes.append(
        "decisions use prompt tokens = ceil(chars / 4) and the config's prices; each query is "
        "scored on the chosen backend's one recorded answer (fallbacks, retries and escalation "
        "are not simulated)"
    )
    meta: dict[str, Any] = {"dataset": table.name, "queries": len(table), "mapping": mapping}
    if predictor is None:
        predictions: list[Any] = [None] * len(table)
        notes.append("predictor disabled in the config: every decision is predictor_fallback")
    else:
        meta["predictor"] = predictor.version
        if in_sample:
            notes.append(
                f"IN-SAMPLE: predictor {predictor.version} was trained on all of {table.name} "
                "(its artifact records no held-out split of the shipped weights), so its "
                "P(success) on these queries is optimistic: treat the success numbers as an "
                "upper bound for predictor-driven policies (--holdout: out-of-sample numbers)"
            )
        err.print(f"predicting {len(table)} prompts (embedding cache) …", style="dim")
        predictions = list(predict_prompts(predictor, list(table.prompts)))
    facts = backend_facts(
        cfg,
        resolve_prices(cfg),
        healthy={b.name: b.name in mapping for b in cfg.backends},
        profiles=mapping,
    )
    queries = dataset_queries(table, mapping, predictions)
    current = cfg.policy_set
    assert current is not None
    return replay_dataset(
        queries,
        facts,
        current,
        candidate.policy_set,
        source=table.name,
        notes=[*candidate.notes, *notes],
        in_sample=in_sample,
        meta=meta,
    )


def _check_store(url: str) -> None:
    """A SQLite store must exist already: reading it must not create an empty one."""
    from sqlalchemy.engine import make_url

    from gateway.store.database import redact_url, to_async_url

    parsed = make_url(to_async_url(url))
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not os.path.exists(parsed.database):
            raise ValueError(
                f"no store at {redact_url(to_async_url(url))}: the file does not exist"
            )


async def _store_backtest_async(
    cfg: Config, candidate: Any, url: str, limit: int | None
) -> BacktestResult:
    from gateway.analytics.backtest import (
        backend_facts,
        load_logged_requests,
        replay_store,
        resolve_prices,
    )
    from gateway.store.database import create_engine, redact_url, to_async_url

    engine = create_engine(url)
    try:
        load = await load_logged_requests(engine, limit)
    finally:
        await engine.dispose()
    notes = []
    if load.skipped_no_decision:
        notes.append(
            f"{load.skipped_no_decision} request(s) skipped: no policy decision (a pinned backend)"
        )
    if load.skipped_no_prediction:
        notes.append(
            f"{load.skipped_no_prediction} request(s) skipped: no stored prediction "
            "(predictor timed out or disabled)"
        )
    if not load.outcomes_table:
        notes.append("the store has no outcomes table: every outcome is unknown")
    notes += [
        "current = what happened: recorded cost of every attempt; success from the outcomes "
        "table (unknown when absent, never counted as a success)",
        f"candidate rows on a backend that was not called are {_ESTIMATED_TEXT}",
        "routing rules on headers, prompt text, tools or JSON mode cannot be re-evaluated "
        "(the store keeps none of them): they are taken to match when the logged request "
        "matched a rule of the same name",
        "backend health: as the logged decision saw it (unhealthy / open circuit); p95 unknown",
    ]
    facts = backend_facts(cfg, resolve_prices(cfg))
    return replay_store(
        load.requests,
        facts,
        candidate.policy_set,
        current_rules=cfg.policy_set,
        source="store",
        notes=[*candidate.notes, *notes],
        meta={"store": redact_url(to_async_url(url)), "requests": len(load.requests)},
    )


_ESTIMATED_TEXT = (
    "estimated (predictor): cost = the recorded prompt and completion tokens x that "
    "backend's price, success = the stored predicted P(success)"
)


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
            f"* {b.estimated} of {b.requests} candidate rows are {_ESTIMATED_TEXT}", highlight=False
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
    from gateway.analytics.backtest import load_candidate
    from gateway.config import ConfigError

    cfg_path, cfg = _config(config)
    if cfg.policy_set is None:
        err.print(f"[red]error[/red] {cfg_path} defines no policies to compare against")
        raise typer.Exit(2)
    try:
        candidate = load_candidate(policy, cfg)
    except ConfigError as exc:
        _issues(exc, policy)
        raise typer.Exit(1) from None
    if on == "store":
        if map_ or holdout:
            err.print("[red]error[/red] --map and --holdout only apply to dataset replays")
            raise typer.Exit(2)
        from gateway.settings import DEFAULT_DATABASE_URL

        url = os.environ.get("TOLLGATE_DATABASE_URL") or cfg.store.url or DEFAULT_DATABASE_URL
        try:
            _check_store(url)
            result = asyncio.run(_store_backtest_async(cfg, candidate, url, limit))
        except ValueError as exc:
            err.print(f"[red]error[/red] {exc}")
            raise typer.Exit(2) from None
    else:
        result = _dataset_backtest(
            cfg,
            cfg_path,
            candidate,
            on,
            limit=limit,
            seed=seed,
            overrides=_parse_map(map_),
            data_dir=data_dir,
            holdout=holdout,
        )
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
    from gateway.analytics.backtest import (
        backend_facts,
        credentials_ok,
        estimate_tokens,
        resolve_prices,
    )
    from policies import PredictionFacts, RequestFacts, decide, render_table, select

    cfg_path, cfg = _config(config)
    policy_set = cfg.policy_set
    if policy_set is None:
        err.print(f"[red]error[/red] {cfg_path} defines no policies")
        raise typer.Exit(2)
    if policy is not None and policy not in policy_set.policies:
        err.print(
            f"[red]error[/red] unknown policy {policy!r}; policies: "
            + ", ".join(sorted(policy_set.policies))
        )
        raise typer.Exit(2)
    request = RequestFacts(
        tenant=tenant,
        prompt_text=prompt,
        est_prompt_tokens=estimate_tokens(prompt),
        max_tokens=max_tokens,
    )
    if policy is None:
        name, rule = select(policy_set, request)
    else:
        name, rule = policy, "model"
    prediction = None
    predictor = _predictor(cfg)
    if predictor is not None:
        (p,) = predictor.predict_batch([prompt])
        prediction = PredictionFacts(
            p_success=dict(p.p_success),
            predictor_version=predictor.version,
            complexity=float(p.complexity),
        )
    facts = backend_facts(
        cfg,
        resolve_prices(cfg),
        healthy={b.name: credentials_ok(b) for b in cfg.backends},
    )
    decision = decide(policy_set.policies[name], name, request, facts, prediction, rule=rule)
    if json_out:
        sys.stdout.write(json.dumps(decision.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(render_table(decision) + "\n")
