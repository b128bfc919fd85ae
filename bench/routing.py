"""Routing benchmark: does the predictor send queries to cheaper backends that still succeed?

For RouterBench (real per-query USD cost) and MMLU-Pro (README token convention x prices.csv),
on 5 seeded 70/30 splits by query (training only ever sees the 70 %), every router's cost knob
is swept and scored on the 30 % with the recorded outcomes and costs:

* ours: the shipped recipe (factor model + Platt, ``predictors.outcome_model``), routed by a
  cost-penalised argmax (and, as a second row, the policy rule "cheapest backend with
  P ≥ threshold");
* kNN (k = 10, 40, cosine) and an MLP on the same embeddings, routed by the same rule;
* the Zero router (random mixes on the convex hull of the single models), every single model,
  always-cheapest, always-best (by training accuracy), and the oracle (cheapest correct model).

Intervals are paired bootstrap 95 % (the same resampled test queries for every router, metrics
averaged over the seeds). Run: ``python bench/routing.py`` (plots go to ``bench/out/``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from predictors.calibration import brier_score, expected_calibration_error, roc_auc
from predictors.datasets import OutcomeTable, read_dataset, split_ids
from predictors.embedding import Embedder
from predictors.embedding_cache import embed_cached
from predictors.outcome_model import TrainConfig, fit_outcome_model
from predictors.routing_eval import (
    aiq,
    cost_to_reach,
    hull,
    quality_at,
    route_penalised,
    route_threshold,
)

OUT = Path(__file__).resolve().parent / "out"
LAMBDAS = np.concatenate([[0.0], np.geomspace(1e-3, 30.0, 39)])  # 40 knob settings
THRESHOLDS = np.linspace(0.0, 1.0, 41)
GOAL_COST_PCT = 35.0
GOAL_GAP = 20.0


@dataclass
class Curve:
    """Per knob setting, the per-test-query correctness and cost of the routed backend."""

    correct: np.ndarray  # (knobs, n_test)
    cost: np.ndarray  # (knobs, n_test)


def _knn(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, k: int) -> np.ndarray:
    sims = xte @ xtr.T  # embeddings are unit norm: cosine similarity
    nn = np.argpartition(-sims, kth=k - 1, axis=1)[:, :k]
    return np.asarray(ytr[nn].mean(axis=1))


def _mlp(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=(256,),
        alpha=1e-3,
        early_stopping=True,
        max_iter=200,
        random_state=seed,
    )
    clf.fit(xtr, ytr.astype(int))
    return np.asarray(clf.predict_proba(xte))


def _curve(choices: list[np.ndarray], y: np.ndarray, c: np.ndarray) -> Curve:
    rows = np.arange(y.shape[0])
    return Curve(
        correct=np.stack([y[rows, ch] for ch in choices]),
        cost=np.stack([c[rows, ch] for ch in choices]),
    )


def run_seed(
    table: OutcomeTable, x: np.ndarray, seed: int
) -> tuple[dict[str, Curve], dict[str, dict[str, float]], int, str]:
    ids = table.ids
    tr, te = split_ids(ids, seed)
    pos = {k: i for i, k in enumerate(ids)}
    itr = np.array([pos[k] for k in tr])
    ite = np.array([pos[k] for k in te])
    y = table.outcome.to_numpy(dtype=float)
    c = table.cost.to_numpy(dtype=float)
    ytr, yte, cte = y[itr], y[ite], c[ite]
    est_cost = c[itr].mean(axis=0)  # what a router can know: mean cost per backend on train
    best = int(np.argmax(ytr.mean(axis=0)))
    m = y.shape[1]
    probs = {
        "ours": fit_outcome_model(x[itr], ytr, table.models, TrainConfig(seed=seed)).predict_proba(
            x[ite]
        ),
        "kNN-10": _knn(x[itr], ytr, x[ite], 10),
        "kNN-40": _knn(x[itr], ytr, x[ite], 40),
        "MLP": _mlp(x[itr], ytr, x[ite], seed),
    }
    quality = {}
    for name, p in probs.items():
        quality[name] = {
            "brier": brier_score(yte, p),
            "ece": expected_calibration_error(yte, p),
            "auc": float(np.nanmean([roc_auc(yte[:, j], p[:, j]) for j in range(m)])),
        }
    curves: dict[str, Curve] = {}
    for name, p in probs.items():
        curves[name] = _curve([route_penalised(p, est_cost, lam) for lam in LAMBDAS], yte, cte)
    curves["ours (min-P threshold)"] = _curve(
        [route_threshold(probs["ours"], est_cost, t) for t in THRESHOLDS], yte, cte
    )
    for j, model in enumerate(table.models):
        curves[f"single:{model}"] = _curve([np.full(len(ite), j)], yte, cte)
    # oracle: cheapest correct model; if none is correct, the cheapest model
    masked = np.where(yte >= 0.5, cte, np.inf)
    oracle = np.argmin(masked, axis=1)
    none = ~np.isfinite(masked).any(axis=1)
    oracle[none] = np.argmin(cte[none], axis=1)
    curves["oracle"] = _curve([oracle], yte, cte)
    return curves, quality, best, table.models[best]


def _metrics(
    curves: dict[str, Curve], w: np.ndarray, singles: list[str], best: int
) -> dict[str, dict[str, float]]:
    """Metrics of every router on one (re)weighting ``w`` of the test queries."""
    pts = {k: (v.cost @ w, v.correct @ w) for k, v in curves.items()}
    single_c = np.array([pts[f"single:{s}"][0][0] for s in singles])
    single_q = np.array([pts[f"single:{s}"][1][0] for s in singles])
    c_best, q_best = single_c[best], single_q[best]
    c_max = float(single_c.max())
    q_oracle = float(pts["oracle"][1][0])
    zero = hull(single_c, single_q)
    out: dict[str, dict[str, float]] = {}
    hulls = {k: hull(*v) for k, v in pts.items()}
    hulls["Zero router"] = zero
    hulls["always-cheapest"] = hull(
        single_c[[int(np.argmin(single_c))]], single_q[[int(np.argmin(single_c))]]
    )
    hulls["always-best"] = hull(single_c[[best]], single_q[[best]])
    for k, (hc, hq) in hulls.items():
        qe = quality_at(hc, hq, c_best)
        out[k] = {
            "aiq": aiq(hc, hq, c_max),
            "cost_pct": 100.0 * cost_to_reach(hc, hq, q_best) / c_best,
            "acc10": quality_at(hc, hq, 0.10 * c_best),
            "acc25": quality_at(hc, hq, 0.25 * c_best),
            "gap": 100.0 * ((qe if not np.isnan(qe) else 0.0) - q_best) / (q_oracle - q_best),
            "cost": float(hc[0]) if len(hc) == 1 else float("nan"),
            "acc": float(hq[-1]),
        }
    return out


def _fmt(mean: float, lo: float, hi: float, digits: int = 3, pct: bool = False) -> str:
    if np.isinf(mean) or np.isnan(mean):
        return "not reached" if pct else "—"
    f = f"{{:.{digits}f}}"

    def one(v: float) -> str:
        return "n/r" if np.isinf(v) else f.format(v)

    return f"{f.format(mean)} [{one(lo)}, {one(hi)}]"


def benchmark(name: str, seeds: int, boot: int) -> list[str]:
    t0 = time.time()
    table = read_dataset(name).complete()
    x = embed_cached(Embedder(), list(table.prompts))
    runs = []
    for seed in range(seeds):
        runs.append(run_seed(table, x, seed))
    singles = table.models
    # point estimates: full test sets; intervals: paired bootstrap of the test queries
    rng = np.random.default_rng(12345)
    full = []
    for curves, _, best, _ in runs:
        n = next(iter(curves.values())).correct.shape[1]
        full.append(_metrics(curves, np.full(n, 1.0 / n), singles, best))
    routers = list(full[0])
    keys = ["aiq", "cost_pct", "acc10", "acc25", "gap"]
    reps = np.zeros((boot, len(routers), len(keys)))
    for b in range(boot):
        acc = np.zeros((len(routers), len(keys)))
        for curves, _, best, _ in runs:
            n = next(iter(curves.values())).correct.shape[1]
            w = rng.multinomial(n, np.full(n, 1.0 / n)) / n
            met = _metrics(curves, w, singles, best)
            acc += np.array([[met[r][k] for k in keys] for r in routers])
        reps[b] = acc / len(runs)
    point = np.array([[np.mean([f[r][k] for f in full]) for k in keys] for r in routers])
    # "lower"/"higher": no interpolation, so a bound that is "never reached" (inf) stays inf
    lo = np.nanpercentile(reps, 2.5, axis=0, method="lower")
    hi = np.nanpercentile(reps, 97.5, axis=0, method="higher")
    best_name = runs[0][3]
    lines = [
        "",
        f"== {name}: {len(table)} queries with outcomes for all {len(singles)} models; "
        f"{seeds} seeded 70/30 splits; {boot} paired bootstrap resamples; "
        f"best single model (by train accuracy): {best_name} ==",
    ]
    if name == "mmlu-pro":
        lines.append(
            "cost convention: input tokens = ceil(chars(question+options)/4), output tokens = "
            "ceil(gen_chars/4), priced with prices.csv"
        )
    else:
        lines.append("cost: recorded per-query USD (<model>|total_cost)")
    header = (
        f"{'router':40s} {'AIQ [95% CI]':>24s} {'cost to match best (% of its cost)':>34s} "
        f"{'acc @10% cost':>22s} {'acc @25% cost':>22s} {'gap closed % at equal cost':>28s}"
    )
    lines += [header, "-" * len(header)]
    order = [
        "oracle",
        "ours",
        "ours (min-P threshold)",
        "kNN-10",
        "kNN-40",
        "MLP",
        "Zero router",
        "always-best",
        "always-cheapest",
    ]
    order += sorted(
        [r for r in routers if r.startswith("single:")], key=lambda r: -point[routers.index(r), 0]
    )
    for r in order:
        i = routers.index(r)
        cells = [
            _fmt(point[i, 0], lo[i, 0], hi[i, 0], 4),
            _fmt(point[i, 1], lo[i, 1], hi[i, 1], 1, pct=True),
            _fmt(point[i, 2], lo[i, 2], hi[i, 2], 3),
            _fmt(point[i, 3], lo[i, 3], hi[i, 3], 3),
            _fmt(point[i, 4], lo[i, 4], hi[i, 4], 1),
        ]
        if r.startswith("single:") or r in ("oracle", "always-best", "always-cheapest"):
            cells[1] = cells[1] if r != "oracle" else "—"
            cells[4] = "—" if r != "always-best" else cells[4]
        lines.append(
            f"{r:40s} {cells[0]:>24s} {cells[1]:>34s} {cells[2]:>22s} {cells[3]:>22s} "
            f"{cells[4]:>28s}"
        )
    # paired differences on AIQ
    lines.append("")
    ours = routers.index("ours")
    for base in ("kNN-10", "kNN-40", "MLP", "Zero router"):
        j = routers.index(base)
        d = reps[:, ours, 0] - reps[:, j, 0]
        dp = point[ours, 0] - point[j, 0]
        lo_d, hi_d = np.percentile(d, [2.5, 97.5])
        if lo_d > 0:
            verdict = "MET"
        elif dp > 0:
            verdict = "met on the mean, CI includes 0"
        else:
            verdict = "NOT MET" + (" (CI includes 0)" if hi_d > 0 else "")
        lines.append(
            f"goal AIQ(ours) > AIQ({base}): diff {dp:+.4f} [{lo_d:+.4f}, {hi_d:+.4f}] -> {verdict}"
        )
    cp, cp_lo, cp_hi = point[ours, 1], lo[ours, 1], hi[ours, 1]
    verdict = "MET" if cp <= GOAL_COST_PCT else "NOT MET"
    lines.append(
        f"goal match best single accuracy at <= {GOAL_COST_PCT:.0f}% of its cost: "
        f"{_fmt(cp, cp_lo, cp_hi, 1, pct=True)}% -> {verdict}"
    )
    g = point[ours, 4]
    verdict = "MET" if g >= GOAL_GAP else "NOT MET"
    lines.append(
        f"goal close >= {GOAL_GAP:.0f}% of best-single-to-oracle gap at equal cost: "
        f"{_fmt(g, lo[ours, 4], hi[ours, 4], 1)}% -> {verdict}"
    )
    lines.append("")
    lines.append("predictor quality on the test splits (mean over seeds): Brier / ECE / mean AUC")
    for r in ("ours", "kNN-10", "kNN-40", "MLP"):
        q = [run[1][r] for run in runs]
        lines.append(
            f"  {r:8s} brier={np.mean([v['brier'] for v in q]):.4f} "
            f"ece={np.mean([v['ece'] for v in q]):.4f} auc={np.mean([v['auc'] for v in q]):.4f}"
        )
    lines.append(f"({time.time() - t0:.0f} s)")
    _plot(name, runs[0][0], singles, runs[0][2])
    return lines


def _plot(name: str, curves: dict[str, Curve], singles: list[str], best: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(parents=True, exist_ok=True)
    n = next(iter(curves.values())).correct.shape[1]
    w = np.full(n, 1.0 / n)
    fig, ax = plt.subplots(figsize=(9, 6))
    sc = np.array([curves[f"single:{s}"].cost @ w for s in singles]).ravel()
    sq = np.array([curves[f"single:{s}"].correct @ w for s in singles]).ravel()
    ax.scatter(sc, sq, c="grey", s=18, label="single models")
    for s, cc, qq in zip(singles, sc, sq, strict=True):
        ax.annotate(s.split("/")[-1], (cc, qq), fontsize=6, color="grey")
    zc, zq = hull(sc, sq)
    ax.plot(np.append(zc, sc.max()), np.append(zq, zq[-1]), "k--", label="Zero router")
    for r, style in (
        ("ours", "r-"),
        ("ours (min-P threshold)", "m-"),
        ("kNN-10", "b:"),
        ("kNN-40", "c:"),
        ("MLP", "g-."),
    ):
        c, q = curves[r].cost @ w, curves[r].correct @ w
        hc, hq = hull(c, q)
        ax.plot(c, q, style[0] + ".", ms=3, alpha=0.5)
        ax.plot(np.append(hc, sc.max()), np.append(hq, hq[-1]), style, label=r)
    oc, oq = curves["oracle"].cost @ w, curves["oracle"].correct @ w
    ax.scatter(oc, oq, marker="*", s=120, c="gold", edgecolors="k", label="oracle")
    ax.axvline(sc[best] * 0.35, color="orange", lw=0.8, ls=":", label="35% of best's cost")
    ax.set_xscale("log")
    ax.set_xlabel("mean cost per query (USD, log)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{name}: cost-accuracy on the 30% test split (seed 0)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(OUT / f"routing_{name}.png", dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="routerbench,mmlu-pro")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--boot", type=int, default=200)
    args = ap.parse_args()
    for name in args.datasets.split(","):
        print("\n".join(benchmark(name.strip(), args.seeds, args.boot)), flush=True)
    print(f"\nplots: {OUT}/routing_<dataset>.png")


if __name__ == "__main__":
    main()
