"""The shipped config's routing policies, as shipped, on RouterBench queries they never saw.

This module owns ``python bench/routing_shipped.py``. ``bench/routing.py`` sweeps each
objective over its knob on every model of a dataset; an operator who runs ``make serve`` gets
one point of one of those curves: the policy in ``config.yaml`` (its objective and knob), over
its candidates' predictor profiles (each backend's ``profile:``). This benchmark replays that
point: the policy is read from the config with the product's own loader, and each held-out
query's decision is made by ``policies.decide_sweep`` with the shipped predictor recipe
(refitted on each split's 70 %, as in ``bench/routing.py``) and the answer-length ratios the
gateway passes. Backends are priced with the dataset's recorded per-token prices of their
profile models (``bench.routing_data.fit_prices``), so the cost axis is RouterBench's recorded
cost; the shortfall and bar rules depend on the candidates' cost order only.

Per policy it prints the mean cost and quality of what was served, and the quality gained over
three baselines at the same cost: the Zero router over the same candidates (the hull of their
single models: random mixes), and kNN-40 and the MLP routing the same candidates by
``P - lambda * cost`` (their hulls over lambda), with paired bootstrap intervals over queries;
and each backend's share.
Run: ``python bench/routing_shipped.py`` (about a minute with cached embeddings);
``--policy NAME`` for another policy of the config, ``--first-seed`` / ``--seeds`` for the splits.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/routing_shipped.py` works too
    sys.path.insert(0, str(REPO))

from bench import routing_replay  # noqa: E402
from bench.routing_data import read  # noqa: E402
from bench.routing_predict import predictions  # noqa: E402
from gateway.config import BackendConfig  # noqa: E402
from gateway.config.loader import load_config  # noqa: E402
from policies.schema import Policy  # noqa: E402
from predictors.artifact import read_artifact  # noqa: E402
from predictors.embedding_cache import embed_cached  # noqa: E402
from predictors.outcome_model import TrainConfig  # noqa: E402
from predictors.routing_eval import hull, quality_at  # noqa: E402
from predictors.service import (  # noqa: E402
    embedder_config_from_dict,
    make_embedder,
    resolve_artifact,
)

LAMBDAS = np.concatenate([[0.0], np.geomspace(1e-3, 30.0, 39)])


def shipped_policy(config: Path, name: str) -> tuple[Policy, list[BackendConfig], list[str]]:
    """The policy ``name`` of ``config`` (as the gateway loads it), its candidates' backends,
    and each candidate's predictor profile."""
    cfg = load_config(config)
    policy = cfg.policies[name]
    by_name = {b.name: b for b in cfg.backends}
    backends = [by_name[c] for c in policy.candidates]
    return policy, backends, [b.profile or b.name for b in backends]


def _gain(y: np.ndarray, c: np.ndarray, choice: np.ndarray, base: list[np.ndarray]) -> float:
    """Quality of ``choice`` minus a baseline's hull at the same mean cost (``base``: the
    baseline's choices per knob; one per single model for the Zero router)."""
    idx = np.arange(len(y))
    cost, quality = c[idx, choice].mean(), y[idx, choice].mean()
    bc = np.array([c[idx, b].mean() for b in base])
    bq = np.array([y[idx, b].mean() for b in base])
    hc, hq = hull(bc, bq)
    return float(quality - quality_at(hc, hq, cost))


def run(args: argparse.Namespace) -> list[str]:
    root = os.environ.get("TOLLGATE_CACHE_DIR")
    cache = Path(root) if root else None
    policy, configured, profiles = shipped_policy(Path(args.config), args.policy)
    candidates = [b.name for b in configured]
    table = read("routerbench")
    missing = [p for p in profiles if p not in table.models]
    if missing:
        raise SystemExit(f"profiles not in RouterBench: {missing}")
    cols = [table.models.index(p) for p in profiles]
    _, meta = read_artifact(resolve_artifact(None))
    emb = make_embedder(embedder_config_from_dict(meta["embedder"]), threads=1, cache_dir=root)
    x = embed_cached(emb, table.prompts, cache_dir=root)
    rng = np.random.default_rng(12345)
    rows: list[tuple[float, float, float, float, float, np.ndarray]] = []
    boots: list[np.ndarray] = []
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for seed in seeds:
        pr = predictions(table, x, emb.fingerprint, seed, TrainConfig(seed=seed), cache=cache)
        train, test = pr["train"], pr["test"]
        y, c = table.outcome[test][:, cols], table.cost[test][:, cols]
        facts = routing_replay.backend_facts(table, train)
        backends = {  # the data's prices, the config's capabilities, tags and context
            b.name: replace(
                facts[prof],
                name=b.name,
                predictor_profile=prof,
                capabilities=frozenset(b.capabilities),
                tags=frozenset(b.tags),
                context_window=b.context_window,
            )
            for b, prof in zip(configured, profiles, strict=True)
        }
        reqs = routing_replay.requests(table, test)
        shipped = routing_replay.Sweep(args.policy, "as shipped", [0.0], [policy])
        position = {name: i for i, name in enumerate(candidates)}
        replayed = routing_replay.replay(
            table, backends, reqs, pr["ours"], [shipped], pr["ours_ratio"], position
        )
        choice = replayed[args.policy][0]
        if (choice < 0).any():
            raise SystemExit(f"policy {args.policy!r} chose no backend for some queries")
        est = routing_replay.expected_costs(table, facts, reqs)[:, cols]
        knn = list(routing_replay.penalised(pr["kNN-40"][:, cols], est, LAMBDAS))
        mlp = list(routing_replay.penalised(pr["MLP"][:, cols], est, LAMBDAS))
        zero = [np.full(len(test), j) for j in range(len(cols))]
        share = np.bincount(choice, minlength=len(cols)) / len(choice)
        idx = np.arange(len(test))
        rows.append(
            (
                float(c[idx, choice].mean()),
                float(y[idx, choice].mean()),
                _gain(y, c, choice, zero),
                _gain(y, c, choice, knn),
                _gain(y, c, choice, mlp),
                share,
            )
        )
        reps = []
        for _ in range(args.boot):
            w = rng.integers(0, len(test), len(test))
            reps.append(
                (
                    _gain(y[w], c[w], choice[w], [z[w] for z in zero]),
                    _gain(y[w], c[w], choice[w], [k[w] for k in knn]),
                    _gain(y[w], c[w], choice[w], [m[w] for m in mlp]),
                )
            )
        boots.append(np.array(reps))
    mean = np.mean([r[:5] for r in rows], axis=0)
    spread = np.mean(boots, axis=0)  # (boot, 3): the mean over splits of each resample
    lo, hi = np.percentile(spread, 2.5, axis=0), np.percentile(spread, 97.5, axis=0)
    shares = np.mean([r[5] for r in rows], axis=0)
    objective = policy.objective.model_dump(exclude_none=True)
    out = [
        f"== policy {args.policy!r} of {args.config}: {objective}",
        "candidates (profile): "
        + ", ".join(f"{a} ({b})" for a, b in zip(candidates, profiles, strict=True)),
        f"RouterBench, {len(rows)} seeded 70/30 splits (seeds {seeds.start}-{seeds.stop - 1}), "
        f"held-out rows; {args.boot} bootstrap resamples per split",
        f"mean cost per query ${mean[0]:.6f}, quality {mean[1]:.4f}",
        f"vs Zero router over the same candidates, at the same cost: {mean[2]:+.4f} "
        f"[{lo[0]:+.4f}, {hi[0]:+.4f}]",
        f"vs kNN-40 over the same candidates (P - lambda * cost), at the same cost: "
        f"{mean[3]:+.4f} [{lo[1]:+.4f}, {hi[1]:+.4f}]",
        f"vs the MLP over the same candidates (P - lambda * cost), at the same cost: "
        f"{mean[4]:+.4f} [{lo[2]:+.4f}, {hi[2]:+.4f}]",
        "share served: "
        + ", ".join(f"{a} {s:.2f}" for a, s in zip(candidates, shares, strict=True)),
    ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    ap.add_argument("--policy", default="default")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--boot", type=int, default=200)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    print("\n".join(run(args)), flush=True)


if __name__ == "__main__":
    main()
