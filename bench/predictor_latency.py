"""Predictor latency: one decision (embedding included) per query, on this CPU.

Prints p50 / p99 in ms for single-query decisions over distinct real prompts (MMLU-Pro
questions and RouterBench few-shot prompts) for several embedder settings (runtime, numerics,
token budget; two threads), taking turns prompt by prompt so background load hits them all
alike, then the served path (``PredictorService``: cache hit, and 32 concurrent calls
micro-batched). Only the shipped setting (ONNX int8, 64 tokens) matches the shipped artifact's
vector space; the others are timed with the same head so the cost of the *embedding* choice
is visible. Run: ``python bench/predictor_latency.py [--n 300]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from predictors.datasets import read_mmlu_pro, read_routerbench
from predictors.embedding import Embedder, EmbedderConfig
from predictors.service import PredictorService, load_artifact


def _prompts(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    mmlu = list(read_mmlu_pro().prompts)
    rb = list(read_routerbench().prompts)
    pick = [mmlu[i] for i in rng.choice(len(mmlu), n // 2, replace=False)]
    pick += [rb[i] for i in rng.choice(len(rb), n - n // 2, replace=False)]
    rng.shuffle(pick)
    return pick


def _time_interleaved(
    fns: dict[str, Callable[[list[str]], object]], prompts: list[str]
) -> dict[str, tuple[float, float]]:
    """p50/p99 ms per setting; settings take turns on every prompt, so on a shared CPU each
    sees the same background load (a setting timed alone after another would not)."""
    for p in prompts[:10]:
        for fn in fns.values():
            fn([p])
    times: dict[str, list[float]] = {k: [] for k in fns}
    for p in prompts:
        for label, fn in fns.items():
            t0 = time.perf_counter()
            fn([p])
            times[label].append((time.perf_counter() - t0) * 1e3)
    return {k: (float(np.percentile(v, 50)), float(np.percentile(v, 99))) for k, v in times.items()}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--shipped-only", action="store_true", help="time only the shipped setting")
    args = ap.parse_args()
    prompts = _prompts(args.n)
    base = load_artifact()
    shipped = base.embedder_config
    print(
        f"CPU: {os.cpu_count()} cores, torch {torch.__version__}; {len(prompts)} distinct prompts;"
        f" load average before: {os.getloadavg()[0]:.2f} (shared CPU: settings are interleaved)"
    )
    settings = [
        ("torch fp32, 128 tokens", EmbedderConfig(128, 48, False, runtime="torch")),
        ("torch fp32, 64 tokens", EmbedderConfig(64, 24, False, runtime="torch")),
        ("torch int8 dynamic, 64 tokens", EmbedderConfig(64, 24, True, runtime="torch")),
        ("onnx fp32, 64 tokens", EmbedderConfig(64, 24, False, runtime="onnx")),
        ("onnx int8 per-channel, 128 tokens", EmbedderConfig(128, 48, True, runtime="onnx")),
        ("onnx int8 per-channel, 64 tokens", EmbedderConfig(64, 24, True, runtime="onnx")),
    ]
    settings = [
        (label + (" (shipped)" if cfg == shipped else ""), cfg)
        for label, cfg in settings
        if not args.shipped_only or cfg == shipped
    ]
    torch.set_num_threads(2)
    fns: dict[str, Callable[[list[str]], object]] = {}
    for label, cfg in settings:
        emb = Embedder(cfg, threads=2)

        def fn(batch: list[str], emb: Embedder = emb) -> object:
            return base.predict_embeddings(emb.encode(batch))

        fns[label] = fn
    # the same head scores every setting, so the rows differ only by the embedding's cost
    print(
        f"{'setting (one decision, embedding included)':46s} {'p50 ms':>8s} {'p99 ms':>8s}"
        "  goal p50<=5 p99<=15"
    )
    for label, (p50, p99) in _time_interleaved(fns, prompts).items():
        ok = "yes" if p50 <= 5 and p99 <= 15 else "no"
        print(f"{label:46s} {p50:>8.2f} {p99:>8.2f}  {ok}", flush=True)

    async def served() -> None:
        svc = PredictorService(base, max_batch=32, max_wait_ms=2.0)
        svc.warmup()
        await svc.start()
        ts = []
        for p in prompts[:50]:
            await svc.predict(p, 1.0)
        for p in prompts[:50]:  # now cached
            t0 = time.perf_counter()
            await svc.predict(p, 1.0)
            ts.append((time.perf_counter() - t0) * 1e3)
        print(
            f"{'service, cache hit':44s} {2:>7d} {np.percentile(ts, 50):>8.3f} "
            f"{np.percentile(ts, 99):>8.3f}"
        )
        lat = []
        for start in range(50, len(prompts) - 32, 32):
            chunk = prompts[start : start + 32]
            t0 = time.perf_counter()
            res = await asyncio.gather(*(svc.predict(p, 1.0) for p in chunk))
            lat.append((time.perf_counter() - t0) * 1e3)
            assert all(r is not None for r in res)
        mean_batch = svc.stats.batched_prompts / max(svc.stats.batches, 1)
        print(
            f"{'service, 32 concurrent distinct queries':44s} {2:>7d} "
            f"{np.percentile(lat, 50):>8.2f} {np.percentile(lat, 99):>8.2f}  "
            f"(all 32 answered; mean micro-batch {mean_batch:.1f}; "
            f"{32 / np.percentile(lat, 50) * 1e3:.0f} decisions/s)"
        )
        await svc.close()

    asyncio.run(served())
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
