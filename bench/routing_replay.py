"""Replaying the shipped objectives through the product's decision code on held-out queries.

This module owns the routing benchmark's "what the product would do": every dataset model is
a backend (``policies.BackendFacts``: per-token prices, the model's mean output length on the
training rows as its typical output); each held-out query becomes ``RequestFacts`` (the
prompt's token estimate) and ``PredictionFacts`` (a predictor's P(success) per model); each
objective, swept over its knob, is a list of ``policies.Policy`` and
``policies.decide_sweep`` (the engine behind ``decide``, which the gateway calls) chooses.
The choice is scored with the recorded outcome and recorded cost of that model.

The objectives get the predictor's answer-length ratios as the gateway passes them
(``PredictionFacts.output_ratio``), so the engine's expected cost of a model follows the query.
The baselines (kNN, MLP) route with the cost-penalised argmax ``P - lambda * cost`` over the
engine's expected costs without them (``policies.constraints.expected_cost`` of each model's
typical output: the published routers predict quality only); the benchmark also prints kNN
with the ratios, to show how much of a difference is the length model.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from bench.routing_data import ReplayTable, fit_prices, typical_output
from policies import BackendFacts, PredictionFacts, RequestFacts, decide_sweep
from policies.constraints import expected_cost
from policies.schema import Policy


@dataclass(frozen=True)
class Sweep:
    """One objective swept over one knob: a row of the benchmark's table."""

    name: str
    knob: str
    values: list[float]
    policies: list[Policy]


def backend_facts(table: ReplayTable, train: np.ndarray) -> dict[str, BackendFacts]:
    p_in, p_out = fit_prices(table, train)
    typical = typical_output(table, train)
    return {
        m: BackendFacts(
            name=m,
            input_cost_per_token=Decimal(f"{p_in[j]:.6g}"),
            output_cost_per_token=Decimal(f"{p_out[j]:.6g}"),
            typical_output_tokens=int(typical[j]),
        )
        for j, m in enumerate(table.models)
    }


def requests(table: ReplayTable, rows: np.ndarray) -> list[RequestFacts]:
    return [RequestFacts(est_prompt_tokens=int(table.prompt_tokens[i])) for i in rows]


def expected_costs(
    table: ReplayTable,
    backends: dict[str, BackendFacts],
    reqs: list[RequestFacts],
    ratio: np.ndarray | None = None,
) -> np.ndarray:
    """(n, m) the engine's expected cost of each model for each request (USD, float);
    ``ratio`` (n, m): the predictor's answer-length ratios (NaN: none), else the backends'
    typical outputs."""
    out = np.zeros((len(reqs), len(table.models)))
    for j, m in enumerate(table.models):
        for i, r in enumerate(reqs):
            q = None if ratio is None or np.isnan(ratio[i, j]) else float(ratio[i, j])
            out[i, j] = float(expected_cost(backends[m], r, q) or 0)
    return out


def prediction(table: ReplayTable, p: np.ndarray, ratio: np.ndarray | None) -> PredictionFacts:
    """One held-out query's predictor output as the engine reads it (``p``, ``ratio``: its
    rows)."""
    ratios = {}
    if ratio is not None:
        ratios = {m: float(r) for m, r in zip(table.models, ratio.tolist(), strict=True) if r == r}
    return PredictionFacts(
        dict(zip(table.models, p.tolist(), strict=True)), "bench", output_ratio=ratios
    )


def _policy(models: list[str], objective: dict[str, Any]) -> Policy:
    return Policy.model_validate(
        {"candidates": models, "objective": objective, "predictor_fallback": "cheapest"}
    )


def sweeps(models: list[str], est: np.ndarray) -> list[Sweep]:
    """Each shipped objective over its knob (and, for comparison, the knob it had before)."""
    shortfalls = [0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.12]
    shortfalls += [0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0]
    bars = [round(v, 2) for v in np.linspace(0.0, 1.0, 21)]
    spread = float(est.mean(axis=0).max())
    values = [0.0] + [float(v) for v in spread * np.geomspace(0.02, 2000.0, 23)]
    caps = [float(v) for v in np.geomspace(est.min(), est.max(), 24)]
    usd = [f"{v:.8g}" for v in values]
    capd = [f"{v:.8g}" for v in caps]
    most = "most_capable"
    return [
        Sweep(
            "cheapest_adequate",
            "max_shortfall",
            shortfalls,
            [
                _policy(models, {"kind": "cheapest_adequate", "max_shortfall": d})
                for d in shortfalls
            ],
        ),
        Sweep(
            "min_cost_per_success",
            "success_value_usd",
            values,
            [
                _policy(models, {"kind": "min_cost_per_success", "success_value_usd": v})
                for v in usd
            ],
        ),
        Sweep(
            "max_quality_within",
            "cost_cap_usd",
            caps,
            [
                _policy(
                    models,
                    {"kind": "max_quality_within", "cost_cap_usd": c, "on_no_adequate": "cheapest"},
                )
                for c in capd
            ],
        ),
        Sweep(
            "cheapest_adequate (min_success only)",
            "min_success",
            bars,
            [
                _policy(
                    models, {"kind": "cheapest_adequate", "min_success": b, "on_no_adequate": most}
                )
                for b in bars
            ],
        ),
        Sweep(
            "min_cost_per_success (ratio, min_success)",
            "min_success",
            bars,
            [
                _policy(
                    models,
                    {"kind": "min_cost_per_success", "min_success": b, "on_no_adequate": most},
                )
                for b in bars
            ],
        ),
    ]


def replay(
    table: ReplayTable,
    backends: dict[str, BackendFacts],
    reqs: list[RequestFacts],
    p: np.ndarray,
    groups: list[Sweep],
    ratio: np.ndarray | None = None,
    columns: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """``{sweep name: (knob values, n) chosen model index (-1: no backend)}``; ``ratio``: the
    predictor's answer-length ratios of the queries (n, m), as the gateway passes them;
    ``columns``: the index each backend name stands for (default: the dataset's models, the
    backends being named after them)."""
    col = columns if columns is not None else {m: j for j, m in enumerate(table.models)}
    flat = [pol for g in groups for pol in g.policies]
    choices = np.full((len(flat), len(reqs)), -1, dtype=int)
    for i, r in enumerate(reqs):
        pred = prediction(table, p[i], ratio[i] if ratio is not None else None)
        for k, d in enumerate(decide_sweep(flat, "bench", r, backends, pred, rule="bench")):
            if d.backend is not None:
                choices[k, i] = col[d.backend]
    out: dict[str, np.ndarray] = {}
    start = 0
    for g in groups:
        out[g.name] = choices[start : start + len(g.policies)]
        start += len(g.policies)
    return out


def penalised(p: np.ndarray, est: np.ndarray, lambdas: np.ndarray) -> np.ndarray:
    """(len(lambdas), n): per query ``argmax_b P_b - lambda * est_b / max(est)``."""
    scale = float(est.max()) or 1.0
    return np.stack([np.argmax(p - lam * est / scale, axis=1) for lam in lambdas])
