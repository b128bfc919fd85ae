"""Prompt mixes for calibrating a model server: what a realistic load looks like.

From the shared data when it is there (``../shared/data``): RouterBench's tasks, each asking
for as many tokens as gpt-3.5's recorded answer had (short answers), interleaved with
AlpacaEval's open-ended instructions, each asking for as many tokens as Mixtral-8x7B's recorded
answer had (long answers). Else a built-in mix of everyday requests; or a JSON-lines file.
Standard library only (it travels to the GPU machine with ``gateway.analytics.calibrate``).
"""

from __future__ import annotations

import ast
import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

BUILTIN_MIX: tuple[tuple[str, int], ...] = (
    ("What is the capital of Australia? Answer in one word.", 8),
    ("Translate to French: 'The meeting moved to Thursday afternoon.'", 24),
    ("Write a haiku about a lighthouse in winter.", 32),
    ("Give three tips for writing a good commit message.", 96),
    ("Explain the difference between a process and a thread to a new programmer.", 192),
    ("Summarise the causes of the French Revolution in five bullet points.", 160),
    (
        "Write a Python function that returns the n-th Fibonacci number iteratively, with a "
        "docstring and two doctests.",
        192,
    ),
    ("A train leaves at 14:05 and arrives at 17:50. How long is the journey? Show your work.", 64),
    ("Which is larger, 9.11 or 9.9? Explain briefly.", 48),
    ("Draft a polite email declining a meeting invitation because of a schedule conflict.", 128),
    ("List the planets of the solar system in order from the Sun.", 48),
    ("What does HTTP status 429 mean, and how should a client react to it?", 128),
    (
        "Write a SQL query that returns the ten customers with the highest total order value "
        "from tables customers(id, name) and orders(id, customer_id, amount).",
        96,
    ),
    ("Explain what a Mixture-of-Experts language model is and why it is cheap to serve.", 256),
    (
        "Rewrite this sentence in plain English: 'Pursuant to the aforementioned stipulations, "
        "remuneration shall be disbursed upon completion.'",
        40,
    ),
    ("Give a short recipe for a vegetarian chili.", 224),
)


@dataclass(frozen=True)
class Prompt:
    text: str
    max_tokens: int


def builtin_mix() -> list[Prompt]:
    return [Prompt(text, tokens) for text, tokens in BUILTIN_MIX]


def routerbench_mix(data_dir: Path, limit: int = 400, seed: int = 7) -> list[Prompt]:
    """Prompts of RouterBench's three sets; each asks for as many tokens as gpt-3.5's recorded
    answer had (chars / 4, between 16 and 512)."""
    prompts: list[Prompt] = []
    for path in sorted((data_dir / "routerbench").glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                raw = row.get("prompt") or ""
                try:
                    parts = ast.literal_eval(raw)
                    text = "\n".join(map(str, parts)) if isinstance(parts, list) else str(parts)
                except (ValueError, SyntaxError):
                    text = raw
                answer = row.get("gpt-3.5-turbo-1106|model_response") or ""
                tokens = max(16, min(512, len(answer) // 4))
                if text.strip():
                    prompts.append(Prompt(text.strip(), tokens))
    random.Random(seed).shuffle(prompts)
    return prompts[:limit]


def alpacaeval_mix(data_dir: Path, limit: int = 400, seed: int = 7) -> list[Prompt]:
    """AlpacaEval's open-ended instructions; each asks for as many tokens as Mixtral-8x7B's
    recorded answer had (chars / 4, between 16 and 1024)."""
    path = data_dir / "alpacaeval" / "model_outputs" / "Mixtral-8x7B-Instruct-v0.1.json"
    if not path.exists():
        return []
    rows = json.loads(path.read_text(encoding="utf-8"))
    prompts = [
        Prompt(str(r["instruction"]).strip(), max(16, min(1024, len(str(r["output"])) // 4)))
        for r in rows
        if str(r.get("instruction", "")).strip()
    ]
    random.Random(seed).shuffle(prompts)
    return prompts[:limit]


def read_mix(path: Path) -> list[Prompt]:
    """A JSON-lines prompt file: ``{"prompt": "...", "max_tokens": 128}`` per line."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            out.append(Prompt(str(item["prompt"]), int(item.get("max_tokens", 128))))
    return out


def default_mix(data_dir: Path | None, limit: int = 400) -> tuple[list[Prompt], str]:
    """From the shared data when present: RouterBench's tasks (short answers) interleaved with
    AlpacaEval's open-ended instructions (long answers), half each; else the built-in mix."""
    if data_dir is not None and (data_dir / "routerbench").is_dir():
        bench = routerbench_mix(data_dir, limit // 2)
        chat = alpacaeval_mix(data_dir, limit // 2)
        mix = [p for pair in zip(bench, chat, strict=False) for p in pair]
        mix += bench[len(chat) :] if len(bench) > len(chat) else chat[len(bench) :]
        if mix:
            names = "routerbench+alpacaeval" if chat else "routerbench"
            return mix, f"{names} ({len(mix)} prompts)"
    return builtin_mix(), f"built-in ({len(BUILTIN_MIX)} prompts)"
