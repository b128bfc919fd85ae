"""Predictor latency: one decision (embedding included) per query, on this CPU.

Prints p50 / p99 in ms for single-query decisions over distinct real prompts (MMLU-Pro
questions and RouterBench few-shot prompts) for several embedder settings (runtime, numerics,
token budget; two threads). Each setting runs in a process of its own, as the gateway does
(two runtimes' thread pools in one process fight over the cores and would distort both), in
alternating rounds so background load on a shared CPU hits them alike. Then the served
path (``gateway.serve.predictor_client``: cache hit, and 32 concurrent calls to its worker
process). Only the
shipped setting (ONNX int8, 48 tokens) matches the shipped artifact's vector space; the
others are timed with the same head so the cost of the *embedding* choice is visible.
Run: ``python bench/predictor_latency.py [--n 300] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.serve.predictor_client import PredictorClient
from predictors.datasets import read_mmlu_pro, read_routerbench
from predictors.embedding import Embedder, EmbedderConfig
from predictors.service import load_artifact


def _prompts(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    mmlu = list(read_mmlu_pro().prompts)
    rb = list(read_routerbench().prompts)
    pick = [mmlu[i] for i in rng.choice(len(mmlu), n // 2, replace=False)]
    pick += [rb[i] for i in rng.choice(len(rb), n - n // 2, replace=False)]
    rng.shuffle(pick)
    return pick


SETTINGS = {
    "torch fp32, 64 tokens": EmbedderConfig(64, 24, False, runtime="torch"),
    "torch int8 dynamic, 64 tokens": EmbedderConfig(64, 24, True, runtime="torch"),
    "onnx fp32, 64 tokens": EmbedderConfig(64, 24, False, runtime="onnx"),
    "onnx int8 per-channel, 128 tokens": EmbedderConfig(128, 48, True, runtime="onnx"),
    "onnx int8 per-channel, 64 tokens": EmbedderConfig(64, 24, True, runtime="onnx"),
    "onnx int8 per-channel, 48 tokens": EmbedderConfig(48, 18, True, runtime="onnx"),
}


def _child(label: str, n: int) -> None:
    """Time one setting in this process; print one JSON line of per-query milliseconds."""
    prompts = _prompts(n)
    base = load_artifact()
    emb = Embedder(SETTINGS[label], threads=2)
    # the same head scores every setting, so settings differ only by the embedding's cost
    for p in prompts[:10]:
        base.predict_embeddings(emb.encode([p]))
    total, embed = [], []
    for p in prompts:
        t0 = time.perf_counter()
        x = emb.encode([p])
        t1 = time.perf_counter()
        base.predict_embeddings(x)
        total.append((time.perf_counter() - t0) * 1e3)
        embed.append((t1 - t0) * 1e3)
    print(json.dumps({"total": total, "embed": embed}))


def _run_child(label: str, n: int) -> dict[str, list[float]]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", label, "--n", str(n)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shipped-only", action="store_true", help="time only the shipped setting")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.n)
        return
    prompts = _prompts(args.n)
    base = load_artifact()
    shipped = base.embedder_config
    labels = [k for k, cfg in SETTINGS.items() if not args.shipped_only or cfg == shipped]
    print(
        f"CPU: {os.cpu_count()} cores; {len(prompts)} distinct prompts; {args.rounds} rounds, "
        f"each setting in its own process (as in the gateway: one runtime's thread pools), "
        f"settings alternating so background load hits them alike; load average before: "
        f"{os.getloadavg()[0]:.2f}"
    )
    times: dict[str, dict[str, list[float]]] = {k: {"total": [], "embed": []} for k in labels}
    for _ in range(args.rounds):
        for label in labels:
            got = _run_child(label, args.n)
            for part in ("total", "embed"):
                times[label][part] += got[part]
    print(
        f"{'setting':40s} {'decision p50':>12s} {'p99':>7s} {'embedding p50':>14s} {'p99':>7s}"
        "  goal p50<=5 p99<=15"
    )
    for label in labels:
        t, e = times[label]["total"], times[label]["embed"]
        p50, p99 = float(np.percentile(t, 50)), float(np.percentile(t, 99))
        ok = "yes" if p50 <= 5 and p99 <= 15 else "no"
        name = label + (" (shipped)" if SETTINGS[label] == shipped else "")
        print(
            f"{name:40s} {p50:>12.2f} {p99:>7.2f} {np.percentile(e, 50):>14.2f} "
            f"{np.percentile(e, 99):>7.2f}  {ok}",
            flush=True,
        )

    async def served() -> None:
        svc = PredictorClient()
        await svc.start()
        ts = []
        for p in prompts[:50]:
            await svc.predict(p, 5.0)
        for p in prompts[:50]:  # now cached
            t0 = time.perf_counter()
            await svc.predict(p, 5.0)
            ts.append((time.perf_counter() - t0) * 1e3)
        print(
            f"{'service, cache hit':44s} {1:>7d} {np.percentile(ts, 50):>8.3f} "
            f"{np.percentile(ts, 99):>8.3f}"
        )
        lat = []
        for start in range(50, len(prompts) - 32, 32):
            chunk = prompts[start : start + 32]
            t0 = time.perf_counter()
            res = await asyncio.gather(*(svc.predict(p, 5.0) for p in chunk))
            lat.append((time.perf_counter() - t0) * 1e3)
            assert all(r is not None for r in res)
        print(
            f"{'service, 32 concurrent distinct queries':44s} {1:>7d} "
            f"{np.percentile(lat, 50):>8.2f} {np.percentile(lat, 99):>8.2f}  "
            f"(all 32 answered by one worker process; "
            f"{32 / np.percentile(lat, 50) * 1e3:.0f} decisions/s)"
        )
        await svc.close()

    asyncio.run(served())
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
