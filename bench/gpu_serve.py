"""Serve a random-weight OLMoE-1B-7B-shaped Mixture-of-Experts behind an OpenAI-compatible API.

Runs on the GPU machine, which has PyTorch and transformers but no model hub: the weights are
random (honest for throughput and cost, meaningless for answers), the architecture and sizes
are OLMoE-1B-7B-0924's (16 layers, hidden 2048, 64 experts of width 1024, 8 active: about 6.9B
parameters, 1.3B active), in bf16. The tokenizer comes from ``bench/gpu_prepare.py``.

It is also the launcher of ``transformers serve --continuous-batching``: cuDNN's scaled-dot-
product attention is switched off first (on varied prompt lengths it about halves throughput).

    python3 bench/gpu_serve.py --model-dir /tmp/olmoe --tokenizer .gpu/tokenizer --port 8000
    python3 bench/gpu_serve.py --tiny ...    # a two-layer model, for a CPU smoke test
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path


def build(model_dir: Path, tokenizer: Path, tiny: bool) -> None:
    import torch
    from transformers import OlmoeConfig, OlmoeForCausalLM

    if (model_dir / "config.json").exists():
        return
    t0 = time.perf_counter()
    # OLMoE-1B-7B-0924's published config (OlmoeConfig's defaults differ: intermediate 2048)
    kw: dict[str, object] = dict(
        hidden_size=2048,
        intermediate_size=1024,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=16,
        num_experts=64,
        num_experts_per_tok=8,
        vocab_size=50304,
        max_position_embeddings=4096,
    )
    if tiny:
        kw.update(
            hidden_size=64,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            num_experts=4,
            num_experts_per_tok=2,
        )
    config = OlmoeConfig(**kw, torch_dtype="bfloat16")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = OlmoeForCausalLM(config).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(model_dir)
    for item in tokenizer.iterdir():
        shutil.copy(item, model_dir / item.name)
    took = time.perf_counter() - t0
    print(f"built {model_dir}: {params / 1e9:.2f}B parameters (random) in {took:.0f} s", flush=True)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/olmoe"))
    parser.add_argument("--tokenizer", type=Path, default=Path(".gpu/tokenizer"))
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--build-only", action="store_true")
    args, serve_args = parser.parse_known_args()
    build(args.model_dir, args.tokenizer, args.tiny)
    if args.build_only:
        return
    import torch

    torch.backends.cuda.enable_cudnn_sdp(False)
    try:
        from transformers.cli.transformers import main as transformers_main
    except ImportError:  # transformers 4.x
        from transformers.commands.transformers_cli import main as transformers_main

    sys.argv = ["transformers", "serve", *serve_args]
    transformers_main()


if __name__ == "__main__":
    main()
