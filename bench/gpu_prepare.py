"""Prepare what the GPU calibration carries to the device machine (run here, not there).

The device machine has PyTorch and transformers but no model hub, so the served model is a
random-weight OLMoE-1B-7B-shaped Mixture-of-Experts (built there by ``bench/gpu_serve.py``).
It still needs a tokenizer with realistic token counts: this trains a byte-level BPE of
OLMoE's vocabulary size on the shared datasets' prompts and answers, with a ChatML template.
It also writes the calibration prompt mix (``tollgate calibrate``'s default: RouterBench and
AlpacaEval) as JSON lines, since ``../shared/data`` does not travel.

    .venv/bin/python bench/gpu_prepare.py --out .gpu     # .gpu/ is git-ignored (info/exclude)
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.analytics.prompt_mix import default_mix  # noqa: E402

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
VOCAB = 50280  # OLMoE-1B-7B's tokenizer (GPT-NeoX) size; the model's embedding has 50304 rows


def corpus(data: Path) -> Iterator[str]:
    csv.field_size_limit(1 << 24)
    for path in sorted((data / "routerbench").glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                yield row.get("prompt") or ""
                for key, value in row.items():
                    if key.endswith("|model_response") and value:
                        yield value
    questions = data / "mmlu-pro" / "questions.csv"
    if questions.exists():
        with questions.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                yield (row.get("question") or "") + "\n" + (row.get("options") or "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu")
    parser.add_argument("--prompts", type=int, default=800)
    args = parser.parse_args()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    args.out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(args.data), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(args.out / "tokenizer")
    mix, name = default_mix(args.data, limit=args.prompts)
    with (args.out / "prompts.jsonl").open("w", encoding="utf-8") as fh:
        for p in mix:
            fh.write(json.dumps({"prompt": p.text, "max_tokens": p.max_tokens}) + "\n")
    print(f"tokenizer: {tok.get_vocab_size()} tokens -> {args.out / 'tokenizer'}")
    print(f"prompt mix: {name} -> {args.out / 'prompts.jsonl'}")


if __name__ == "__main__":
    main()
