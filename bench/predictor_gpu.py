"""Predictor throughput on a GPU: decisions/s for batches of 1..1024 prompts in one call.

Runs on the device machine (no internet, no ../shared/data): it reads a float16 copy of
all-MiniLM-L6-v2 and a JSONL of real prompts from ``.device/`` (made by ``--prepare`` here),
embeds in float16 on CUDA (the shipped artifact's head+tail token budget) and applies the shipped
artifact's head. Times one batched ``predict`` call per batch size (tokenisation included) and
the GPU part alone. Note: the shipped head was trained on int8-CPU vectors; fp16 vectors are
close (see the printed cosine) but this run measures speed, not routing quality.

Prepare here:  ``python bench/predictor_gpu.py --prepare``
Run there:     ``python3 bench/predictor_gpu.py``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEVICE_DIR = ROOT / ".device"
MODEL_DIR = DEVICE_DIR / "minilm-fp16"
PROMPTS = DEVICE_DIR / "prompts.jsonl"


def prepare() -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    from predictors.datasets import read_mmlu_pro, read_routerbench
    from predictors.embedding import bundled_model_dir

    src = bundled_model_dir()
    if MODEL_DIR.exists():
        shutil.rmtree(MODEL_DIR)
    shutil.copytree(src, MODEL_DIR, ignore=shutil.ignore_patterns("model.safetensors"))
    tensors = load_file(str(src / "model.safetensors"))
    save_file(
        {k: v.half().contiguous() for k, v in tensors.items()},
        str(MODEL_DIR / "model.safetensors"),
        metadata={"format": "pt"},
    )
    prompts = list(read_mmlu_pro().prompts[:512]) + list(read_routerbench().prompts[:512])
    PROMPTS.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    print(f"wrote {MODEL_DIR} and {len(prompts)} prompts to {PROMPTS}")


def run() -> None:
    import torch

    from predictors.embedding import Embedder, EmbedderConfig
    from predictors.service import load_artifact

    prompts = [json.loads(x)["prompt"] for x in PROMPTS.read_text().splitlines()]
    pred = load_artifact(embedder=None)
    tokens, head = pred.embedder_config.max_tokens, pred.embedder_config.head_tokens
    emb = Embedder(
        EmbedderConfig(tokens, head, quantize_int8=False, float16=True, runtime="torch"),
        model_dir=MODEL_DIR,
        device="cuda",
    )
    print(f"GPU: {torch.cuda.get_device_name()} torch {torch.__version__}")
    ref = Embedder(EmbedderConfig(tokens, head, False, runtime="torch"), model_dir=MODEL_DIR)
    a, b = emb.encode(prompts[:64]), ref.encode(prompts[:64])
    print(f"cosine(fp16 GPU, fp32 CPU) mean {float((a * b).sum(1).mean()):.4f}")
    print(
        f"{'batch':>6s} {'call ms (p50)':>14s} {'decisions/s':>12s} {'GPU-only ms':>12s} "
        f"{'GPU-only decisions/s':>21s}"
    )
    for bs in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]:
        batch = (prompts * (bs // len(prompts) + 1))[:bs]
        for _ in range(3):
            pred.predict_embeddings(emb.encode(batch, batch_size=bs))
        torch.cuda.synchronize()
        times = []
        for _ in range(20 if bs <= 256 else 8):
            t0 = time.perf_counter()
            pred.predict_embeddings(emb.encode(batch, batch_size=bs))
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        # GPU part alone: pre-tokenised, padded batch through the model
        ids = emb._ids(batch)
        width = max(len(x) for x in ids)
        ids_t = torch.tensor([x + [0] * (width - len(x)) for x in ids], device="cuda")
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device="cuda")
        with torch.inference_mode():
            for _ in range(3):
                emb.model(input_ids=ids_t, attention_mask=mask)
            torch.cuda.synchronize()
            g = []
            for _ in range(20):
                t0 = time.perf_counter()
                emb.model(input_ids=ids_t, attention_mask=mask)
                torch.cuda.synchronize()
                g.append(time.perf_counter() - t0)
        t, gt = statistics.median(times), statistics.median(g)
        print(
            f"{bs:>6d} {t * 1e3:>14.2f} {bs / t:>12.0f} {gt * 1e3:>12.2f} {bs / gt:>21.0f}",
            flush=True,
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepare", action="store_true")
    if ap.parse_args().prepare:
        prepare()
    else:
        run()
