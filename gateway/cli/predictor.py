"""The ``tollgate predictor`` command group: train, evaluate, score.

This module owns the command-line surface of the predictors package. The gateway's CLI mounts
``app`` with ``app.add_typer(gateway.cli.predictor.app, name="predictor")``; on its own it runs as
``python -m gateway.cli.predictor ...``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="predictor",
    help="Train, evaluate and run the complexity / P(success) predictor.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="artifact directory to write")],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="data directory (default: $TOLLGATE_DATA_DIR or ../shared/data)"
        ),
    ] = None,
    datasets: Annotated[
        str, typer.Option("--datasets", help="comma-separated: routerbench,mmlu-pro,alpacaeval")
    ] = "routerbench,mmlu-pro",
    seed: Annotated[int, typer.Option(help="training seed")] = 0,
    from_store: Annotated[
        bool,
        typer.Option(
            "--from-store",
            help="learn from the gateway's logged requests and outcomes (the store of --config "
            "or $TOLLGATE_DATABASE_URL), starting from --base; prints how calibration and the "
            "policy's cost per successful task would change before you deploy",
        ),
    ] = False,
    base: Annotated[
        Path | None,
        typer.Option("--base", help="--from-store: artifact to start from (default: the config's)"),
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="--from-store: gateway config file")
    ] = None,
    with_shared_data: Annotated[
        bool,
        typer.Option(
            "--with-shared-data",
            help="--from-store: refit the whole model on the shared datasets plus the store "
            "(default: fine-tune the base artifact's backend profiles on the store)",
        ),
    ] = False,
    min_labels: Annotated[
        int, typer.Option(help="--from-store: labels a backend needs to get its own profile")
    ] = 100,
    limit: Annotated[
        int | None, typer.Option("--limit", help="--from-store: only the last N logged requests")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="--from-store: print the report as JSON")
    ] = False,
    embedder: Annotated[
        str,
        typer.Option(
            "--embedder",
            help="static (the token-table distillation of MiniLM the shipped default artifact "
            "uses: about a tenth of the cost per decision) or minilm (the MiniLM encoder); "
            "docs/predictor.md",
        ),
    ] = "static",
) -> None:
    """Train on recorded outcomes and write a versioned artifact."""
    if from_store:
        from gateway.cli.learning import train_from_store

        train_from_store(
            out,
            config=config,
            base=base,
            data_dir=data,
            with_shared_data=with_shared_data,
            min_labels=min_labels,
            limit=limit,
            seed=seed,
            as_json=as_json,
        )
        return
    from gateway.settings import cache_root_from_env, data_dir_from_env
    from predictors.embedding import Embedder, EmbedderConfig
    from predictors.outcome_model import TrainConfig
    from predictors.static_embedding import StaticEmbedder
    from predictors.training import train as run_train

    if embedder not in ("minilm", "static"):
        raise typer.BadParameter("--embedder is minilm or static")

    names = [d.strip() for d in datasets.split(",") if d.strip()]
    meta = run_train(
        out,
        names,
        data_dir=data_dir_from_env(data),
        cfg=TrainConfig(seed=seed),
        embedder=(
            StaticEmbedder(cache_dir=cache_root_from_env())
            if embedder == "static"
            else Embedder(EmbedderConfig(), cache_dir=cache_root_from_env())
        ),
    )
    m = meta["metrics_holdout"]
    typer.echo(
        f"wrote {out} version={meta['version']} profiles={len(meta['profiles'])} "
        f"holdout brier={m['brier']} ece={m['ece']} mean_auc={m['mean_auc']}"
    )


@app.command()
def evaluate(
    artifact: Annotated[
        Path | None, typer.Option("--artifact", help="artifact directory (default: shipped one)")
    ] = None,
    data: Annotated[Path | None, typer.Option("--data", help="data directory")] = None,
    seed: Annotated[int, typer.Option(help="split seed for the held-out evaluation")] = 0,
    as_is: Annotated[
        bool,
        typer.Option(
            "--as-is",
            help="score the artifact itself on its datasets (in-sample if it was trained on "
            "them) instead of refitting its recipe on 70%% and testing on 30%%",
        ),
    ] = False,
) -> None:
    """Report calibration (Brier, ECE, reliability table) and AUC of an artifact's recipe."""
    import numpy as np

    from gateway.settings import cache_root_from_env, data_dir_from_env
    from predictors.datasets import read_dataset
    from predictors.embedding_cache import embed_cached
    from predictors.outcome_model import TrainConfig
    from predictors.service import load_artifact
    from predictors.training import calibration_report, holdout_report, join_tables

    pred = load_artifact(artifact)
    names = [d["name"] for d in pred.meta["training_data"]["datasets"]]
    tables = [read_dataset(n, data_dir_from_env(data)) for n in names]
    keys, prompts, y = join_tables(tables)
    profiles = [m for t in tables for m in t.models]
    x = embed_cached(pred.embedder, prompts, cache_dir=cache_root_from_env())
    if as_is:
        cols = [pred.model.profiles.index(p) for p in profiles]
        report = calibration_report(y, pred.model.predict_proba(x)[:, cols], profiles)
        report["split"] = "in-sample: the artifact as shipped, on its own training data"
    else:
        cfg = TrainConfig(**pred.meta["model"]["train_config"])
        report = holdout_report(x, y, keys, profiles, cfg, seed=seed)
    typer.echo(f"artifact {pred.version}; {report['split']}")
    typer.echo(
        f"brier={report['brier']} log_loss={report['log_loss']} ece={report['ece']} "
        f"mean_auc={report['mean_auc']}"
    )
    typer.echo("reliability (bin, n, mean predicted, observed):")
    for b in report["reliability"]:
        typer.echo(f"  {b['bin']}  {b['n']:>7}  {b['mean_p']!s:>7}  {b['observed']!s:>7}")
    for t in tables:
        sub = [p for p in t.models if p in report["per_profile"]]
        mean_brier = np.mean([report["per_profile"][p]["brier"] for p in sub])
        mean_auc = np.nanmean([report["per_profile"][p]["auc"] for p in sub])
        typer.echo(f"{t.name}: mean per-profile brier={mean_brier:.4f} auc={mean_auc:.4f}")


@app.command()
def score(
    input: Annotated[Path, typer.Option("--input", help="JSONL: {'id': ..., 'prompt': ...}")],
    output: Annotated[Path, typer.Option("--output", help="JSONL to write ('-' for stdout)")],
    artifact: Annotated[
        Path | None, typer.Option("--artifact", help="artifact directory (default: shipped one)")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="prompts per model call")] = 64,
) -> None:
    """Score a batch of prompts: complexity and P(success) per profile, one line per input."""
    from predictors.service import load_artifact

    pred = load_artifact(artifact)
    rows = []
    for n, line in enumerate(input.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            rows.append((obj["id"], str(obj["prompt"])))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise typer.BadParameter(f"{input}:{n}: expected {{'id', 'prompt'}}: {e}") from e
    out_lines = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        for (rid, _), p in zip(chunk, pred.predict_batch([r[1] for r in chunk]), strict=True):
            out_lines.append(
                json.dumps(
                    {
                        "id": rid,
                        "complexity": round(p.complexity, 6),
                        "p_success": {k: round(v, 6) for k, v in p.p_success.items()},
                    }
                )
            )
    text = "\n".join(out_lines) + ("\n" if out_lines else "")
    if str(output) == "-":
        sys.stdout.write(text)
    else:
        output.write_text(text)
        typer.echo(f"scored {len(out_lines)} prompts with {pred.version} -> {output}", err=True)


if __name__ == "__main__":
    app()
