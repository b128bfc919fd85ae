"""``tollgate predictor train --from-store``: the command around ``gateway.analytics.learning``.

This module owns the command's I/O: finding the config, the store and the base artifact,
running the recipe, printing the before-deploy report (rich tables or JSON) and writing the
candidate artifact. It never deploys: the operator points ``predictor.artifact`` at the new
directory and reloads when the report says so.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from gateway.cli.options import load_config_or_exit, store_url

if TYPE_CHECKING:
    from gateway.analytics.learning import LearningReport

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def _usd(value: Any) -> str:
    return "—" if value is None else f"${float(value):.6f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def render(report: LearningReport, artifact: str, version: str) -> None:
    out.print(
        f"[bold]Learned from the store[/bold] ({report.recipe}): {report.train_rows} logged "
        f"requests to fit, {report.test_rows} held out (split by task)"
    )
    labels = ", ".join(f"{b} {n}" for b, n in report.labels_per_backend.items()) or "none"
    out.print(f"labels per backend: {labels}")
    out.print(f"backends with a learned profile: {', '.join(report.learned) or 'none'}")
    if report.skipped:
        out.print(
            "skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(report.skipped.items()))
        )
    if report.calibration:
        t = Table(title="Calibration on held-out logged requests (observed labels)")
        for col in ("predictor", "pairs", "Brier", "log loss", "ECE", "AUC"):
            t.add_column(col, justify="left" if col == "predictor" else "right")
        for side, c in report.calibration.items():
            t.add_row(
                side,
                str(c.pairs),
                f"{c.brier:.4f}",
                f"{c.log_loss:.4f}",
                f"{c.ece:.4f}",
                f"{c.auc:.4f}",
            )
        out.print(t)
    if report.replay:
        t = Table(title="The policy replayed on the held-out requests")
        for col in ("routing", "requests", "spend", "success", "$/successful task", "estimated"):
            t.add_column(col, justify="left" if col == "routing" else "right")
        names = {
            "logged": "what happened",
            "current": "policy + current predictor",
            "candidate": "policy + candidate",
        }
        for side, s in report.replay.items():
            t.add_row(
                names.get(side, side),
                str(s.requests),
                _usd(s.spend_usd),
                _pct(s.success_rate),
                _usd(s.cost_per_success),
                str(s.estimated),
            )
        out.print(t)
    for note in report.notes:
        out.print(f"note: {note}")
    out.print(f"[bold]verdict[/bold]: {report.verdict()}")
    out.print(
        f"wrote {artifact} version={version}\n"
        f"to deploy: set predictor.artifact: {artifact} in the config, then "
        "`tollgate config check` and reload (SIGHUP or POST /admin/reload)"
    )


def train_from_store(
    artifact_dir: Path,
    *,
    config: str | None,
    base: Path | None,
    data_dir: Path | None,
    with_shared_data: bool,
    min_labels: int,
    limit: int | None,
    seed: int,
    as_json: bool,
) -> None:
    from gateway.analytics.backtest import check_store_exists
    from gateway.analytics.learning import learn, load_store_data, write_candidate
    from gateway.settings import cache_root_from_env, data_dir_from_env
    from gateway.store.database import create_engine, redact_url, to_async_url
    from predictors.service import load_artifact

    _, cfg = load_config_or_exit(config)
    url = store_url(cfg)
    try:
        check_store_exists(url)
    except ValueError as exc:
        err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(2) from None
    current = load_artifact(base if base is not None else cfg.predictor.artifact)
    fingerprint = current.embedder_config.fingerprint()

    async def load() -> Any:
        engine = create_engine(url)
        try:
            return await load_store_data(engine, fingerprint, limit)
        finally:
            await engine.dispose()

    data = asyncio.run(load())
    try:
        candidate, report = learn(
            cfg,
            current,
            data,
            with_shared_data=with_shared_data,
            data_dir=data_dir_from_env(data_dir),
            min_labels=min_labels,
            seed=seed,
            cache_dir=cache_root_from_env(),
        )
    except ValueError as exc:
        err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from None
    store = redact_url(to_async_url(url))
    meta = write_candidate(artifact_dir, candidate, report, store)
    if as_json:
        doc = {"artifact": str(artifact_dir), "version": meta["version"], **report.to_dict()}
        out.print_json(json.dumps(doc, default=str))
        return
    render(report, str(artifact_dir), meta["version"])
