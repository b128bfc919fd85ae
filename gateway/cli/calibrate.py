"""``tollgate calibrate BACKEND``: measure a self-hosted backend, store the calibration, print it.

The measurement is ``gateway.analytics.calibrate``, the operating point and the price
``gateway.analytics.calibration_stats``; storing is ``gateway.store.calibrations`` (the
running gateways pick a new version up within ``gateway.capacity.CALIBRATION_REFRESH_S``).
Progress goes to stderr, so ``--json`` prints one JSON object alone on stdout.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

err = Console(stderr=True, soft_wrap=True, highlight=False)
out = Console(soft_wrap=True, highlight=False)


def calibrate(
    backend: Annotated[str, typer.Argument(help="a configured backend with self_hosted set")],
    config: Annotated[
        str | None,
        typer.Option(
            "--config", "-c", help="config file (default: $TOLLGATE_CONFIG or config.yaml)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    slo_p95_ms: Annotated[
        float, typer.Option(help="latency SLO: p95 of whole-request latency, ms")
    ] = 20_000.0,
    max_concurrency: Annotated[int, typer.Option(help="highest concurrency tried")] = 64,
    requests_per_worker: Annotated[int, typer.Option(help="requests per worker per point")] = 3,
    min_requests: Annotated[int, typer.Option(help="fewest requests per point")] = 8,
    max_seconds_per_point: Annotated[
        float, typer.Option(help="no new request starts after this in a point")
    ] = 120.0,
    prompts: Annotated[
        Path | None, typer.Option(help='JSON lines {"prompt": ..., "max_tokens": ...}')
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="shared data (RouterBench); default ../shared/data")
    ] = None,
    store: Annotated[bool, typer.Option(help="store the calibration (--no-store: dry run)")] = True,
) -> None:
    """Drive a self-hosted backend at rising concurrency; store its price and capacity."""
    from gateway.analytics.calibrate import calibrate as run_calibration
    from gateway.analytics.calibrate import served_model_name
    from gateway.analytics.calibration_stats import Point, table
    from gateway.analytics.prompt_mix import default_mix, read_mix
    from gateway.config import ConfigError, load_settings

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        for issue in exc.issues:
            err.print(f"[red]error[/red] {issue}")
        raise typer.Exit(2) from None
    cfg = settings.config
    target = cfg.backend(backend)
    if target is None:
        names = ", ".join(b.name for b in cfg.backends)
        err.print(f"[red]error[/red] unknown backend {backend!r}; backends: {names}")
        raise typer.Exit(2)
    sh = target.self_hosted
    if sh is None or not target.api_base:
        err.print(
            f"[red]error[/red] {backend} is not self-hosted: calibrate measures a server of "
            "yours; give it an api_base and self_hosted: {engine, gpu_hour_usd}"
        )
        raise typer.Exit(2)
    if prompts is not None:
        mix, mix_name = read_mix(prompts), f"{prompts.name}"
    else:
        from gateway.settings import data_dir_from_env
        from predictors.datasets import default_data_dir

        mix, mix_name = default_mix(data_dir_from_env(data_dir) or default_data_dir())

    def progress(p: Point) -> None:
        err.print(
            f"concurrency {p.concurrency:>4}: {p.output_tokens_per_second:8.1f} out tok/s, "
            f"{p.input_tokens_per_second:8.1f} in tok/s, p95 latency "
            f"{p.latency_p95_ms or 0:8.0f} ms, {p.errors} errors"
        )

    err.print(f"calibrating {backend} ({target.model} at {target.api_base}), mix: {mix_name}")
    try:
        result = asyncio.run(
            run_calibration(
                api_base=target.api_base,
                model=served_model_name(target.model),
                backend=backend,
                engine=sh.engine,
                gpu_hour_usd=float(sh.gpu_hour_usd),
                gpus=sh.gpus,
                mix=mix,
                mix_name=mix_name,
                slo_p95_ms=slo_p95_ms,
                max_concurrency=max_concurrency,
                requests_per_worker=requests_per_worker,
                min_requests=min_requests,
                max_seconds_per_point=max_seconds_per_point,
                api_key=target.api_key.value() if target.api_key else None,
                progress=progress,
            )
        )
    except (RuntimeError, ValueError) as exc:
        err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from None
    record: dict[str, Any] = result.to_dict()
    if store:
        record["version"] = asyncio.run(_store(settings.database_url, record))
        err.print(f"stored as {backend} calibration v{record['version']}")
    if as_json:
        print(json.dumps(record, default=str))
    else:
        result.version = record.get("version")
        out.print(table(result))


async def _store(database_url: str, record: dict[str, Any]) -> int:
    from gateway.store.calibrations import save_calibration
    from gateway.store.database import create_engine
    from gateway.store.migrate import upgrade_database

    await asyncio.to_thread(upgrade_database, database_url)
    engine = create_engine(database_url)
    try:
        return await save_calibration(engine, record)
    finally:
        await engine.dispose()
