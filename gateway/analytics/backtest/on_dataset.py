"""``tollgate policy backtest --on <dataset>``: the whole use case short of printing.

Loads the dataset, maps the config's backends to its models, optionally refits the predictor
on its recorded training split and keeps only the held-out queries, samples, predicts, replays
both policy sets (``dataset.replay_dataset``) and writes down what the reader must know to
trust the numbers (the notes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.analytics.backtest.candidate import CandidatePolicies
from gateway.analytics.backtest.cascade import cascade_score
from gateway.analytics.backtest.dataset import dataset_queries, map_backends, replay_dataset
from gateway.analytics.backtest.dataset_source import load_dataset, sample_ids
from gateway.analytics.backtest.results import BacktestError, BacktestResult
from gateway.analytics.facts import backend_facts
from gateway.analytics.predictions import config_predictor, predict_prompts
from gateway.analytics.prices import resolve_prices
from gateway.config import Config

if TYPE_CHECKING:
    from predictors.datasets import OutcomeTable
    from predictors.service import Predictor


def _quiet(message: str) -> None:
    return None


def backtest_on_dataset(
    cfg: Config,
    candidate: CandidatePolicies,
    spec: str,
    *,
    config_label: str = "the config",
    limit: int | None = None,
    seed: int = 0,
    overrides: Mapping[str, str] | None = None,
    data_dir: str | Path | None = None,
    holdout: bool = False,
    cache_dir: str | Path | None = None,
    progress: Callable[[str], None] = _quiet,
) -> BacktestResult:
    """Replay dataset ``spec`` (see ``load_dataset``) under the config's and the candidate's
    policy sets. ``overrides`` maps backend -> dataset model (over ``backend.profile``);
    ``cache_dir`` is the embedding cache's root; ``progress`` hears about the slow steps.
    Raises :class:`BacktestError`."""
    from predictors.fitting import holdout_predictor, trained_on

    current = cfg.policy_set
    if current is None:
        raise BacktestError(f"{config_label} defines no policies to compare against")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - {b.name for b in cfg.backends})
    if unknown:
        raise BacktestError(f"--map names unknown backend(s): {', '.join(unknown)}")
    try:
        table = load_dataset(spec, data_dir)
    except (ValueError, FileNotFoundError) as exc:
        raise BacktestError(str(exc)) from None
    mapping, missing = map_backends(cfg, table.models, overrides)
    if not mapping:
        raise BacktestError(
            f"no backend of {config_label} maps to a model of {table.name}: set "
            "backends[].profile to a dataset model id, or use --map BACKEND=MODEL"
        )
    predictor = config_predictor(cfg)
    verdict_from = predictor  # the cascade's verdict: the artifact's, even when refitted
    notes = ["mapped: " + ", ".join(f"{b} = {m}" for b, m in mapping.items())]
    in_sample: bool | None = None
    if predictor is not None:
        in_sample = table.name in trained_on(predictor.meta)
    if holdout and predictor is not None and in_sample:
        try:
            progress("refitting the predictor on its recorded training split …")
            held = holdout_predictor(predictor, data_dir, cache_dir)
        except (ValueError, FileNotFoundError) as exc:
            raise BacktestError(f"--holdout: {exc}") from None
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
    notes += _method_notes(table)
    meta: dict[str, Any] = {"dataset": table.name, "queries": len(table), "mapping": mapping}
    predictions = _predictions(predictor, table, in_sample, notes, meta, progress, cache_dir)
    facts = backend_facts(
        cfg,
        resolve_prices(cfg),
        healthy={b.name: b.name in mapping for b in cfg.backends},
        profiles=mapping,
    )
    # before the call: how cascades are scored is one of the notes
    score = cascade_score(table, mapping, verdict_from, data_dir, notes, current, candidate)
    return replay_dataset(
        dataset_queries(table, mapping, predictions),
        facts,
        current,
        candidate.policy_set,
        source=table.name,
        notes=[*candidate.notes, *notes],
        in_sample=in_sample,
        meta=meta,
        score=score,
    )


def _method_notes(table: OutcomeTable) -> list[str]:
    if table.name == "mmlu-pro":
        cost = (
            "cost: the dataset's convention, input tokens = ceil(chars(question + options) / 4), "
            "output tokens = ceil(gen_chars / 4), priced with mmlu-pro/prices.csv"
        )
    else:
        cost = f"cost: the recorded per-query USD cost (<model>|total_cost) of {table.name}"
    return [
        cost,
        "decisions use prompt tokens = ceil(chars / 4) and the config's prices; each query is "
        "scored on the chosen backend's one recorded answer (fallbacks, retries and escalation "
        "are not simulated)",
    ]


def _predictions(
    predictor: Predictor | None,
    table: OutcomeTable,
    in_sample: bool | None,
    notes: list[str],
    meta: dict[str, Any],
    progress: Callable[[str], None],
    cache_dir: str | Path | None,
) -> list[Any]:
    if predictor is None:
        notes.append("predictor disabled in the config: every decision is predictor_fallback")
        return [None] * len(table)
    meta["predictor"] = predictor.version
    if in_sample:
        notes.append(
            f"IN-SAMPLE: predictor {predictor.version} was trained on all of {table.name} "
            "(its artifact records no held-out split of the shipped weights), so its "
            "P(success) on these queries is optimistic: treat the success numbers as an "
            "upper bound for predictor-driven policies (--holdout: out-of-sample numbers)"
        )
    progress(f"predicting {len(table)} prompts (embedding cache) …")
    return list(predict_prompts(predictor, list(table.prompts), cache_dir))
