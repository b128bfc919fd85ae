"""The routing benchmark's inputs: recorded outcomes, costs, token counts and answers per dataset.

This module owns turning ``../shared/data`` into one :class:`ReplayTable` per dataset, with what
a replay needs beyond :class:`predictors.datasets.OutcomeTable`: the prompt's token estimate
(the datasets' ``ceil(chars / 4)`` convention), each model's recorded output tokens (for the
backend's typical output length), each model's closed-form answer (for the cascade's agreement
check) and answer length, and each model's per-token prices:

* RouterBench: the recorded ``<model>|total_cost`` is the cost; per-token prices are not in
  the data, so they are fitted (non-negative least squares of the recorded cost on prompt and
  answer tokens) on the *training* rows of each split (:func:`fit_prices`);
* MMLU-Pro: the README convention (``prices.csv``, input tokens = ``ceil(chars(question +
  options) / 4)``, output tokens = ``ceil(gen_chars / 4)``); answers = the recorded ``pred``;
* AlpacaEval 2.0: quality = the judge's P(answer beats gpt-4-1106-preview); the data has no
  cost, so the models with recorded answers are priced at their public list prices
  (:data:`ALPACA_PRICES`, USD per 1M tokens, an assumption stated in the output) x
  ``ceil(chars / 4)`` tokens of instruction and answer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from predictors.answers import mmlu_pro_answers, routerbench_answers
from predictors.datasets import (
    default_data_dir,
    read_alpacaeval,
    read_mmlu_pro,
    read_prices,
    read_routerbench,
)

#: USD per 1M input / output tokens (list prices when the answers were recorded). Only models
#: whose answers AlpacaEval publishes (so their output length, hence cost, is known) are used.
ALPACA_PRICES = {
    "gpt4_1106_preview": (10.0, 30.0),
    "claude-2.1": (8.0, 24.0),
    "gpt-3.5-turbo-1106": (1.0, 2.0),
    "claude-instant-1.2": (0.8, 2.4),
    "Qwen-14B-Chat": (0.3, 0.3),
    "gemma-7b-it": (0.2, 0.2),
    "gemma-2b-it": (0.1, 0.1),
    "phi-2": (0.1, 0.1),
}


def tokens(chars: np.ndarray) -> np.ndarray:
    """The datasets' token convention: ``ceil(chars / 4)``."""
    return np.ceil(np.asarray(chars, dtype=float) / 4.0)


@dataclass(frozen=True)
class ReplayTable:
    """Per query (rows) and model (columns): outcome, recorded cost, tokens and answers."""

    name: str
    ids: list[str]
    prompts: list[str]
    groups: np.ndarray  # (n,) sub-dataset / category
    models: list[str]
    outcome: np.ndarray  # (n, m) 0/1 correctness or a quality score in [0, 1]
    cost: np.ndarray  # (n, m) USD
    prompt_tokens: np.ndarray  # (n,)
    output_tokens: np.ndarray  # (n, m)
    answers: np.ndarray  # (n, m) str: the closed-form answer ("" none / not closed-form)
    answer_chars: np.ndarray  # (n, m)
    #: (m,) USD per input / output token, or None when they are fitted per split.
    prices: tuple[np.ndarray, np.ndarray] | None
    cost_note: str
    binary: bool

    def __len__(self) -> int:
        return len(self.ids)


def routerbench(data_dir: Path | None = None) -> ReplayTable:
    t = read_routerbench(data_dir).complete()
    ans = routerbench_answers(t.ids, t.models, data_dir)
    prompt_chars = t.prompts.str.len().to_numpy(dtype=float)
    return ReplayTable(
        name="routerbench",
        ids=t.ids,
        prompts=list(t.prompts),
        groups=t.groups.to_numpy(dtype=str),
        models=t.models,
        outcome=t.outcome.to_numpy(dtype=float),
        cost=t.cost.to_numpy(dtype=float),
        prompt_tokens=tokens(prompt_chars),
        output_tokens=tokens(ans.chars),
        answers=ans.choice,
        answer_chars=ans.chars,
        prices=None,
        cost_note="cost: recorded per-query USD (<model>|total_cost); per-token prices for the "
        "policies' expected cost fitted (NNLS on ceil(chars/4) prompt and answer tokens) on each "
        "split's training rows",
        binary=True,
    )


def mmlu_pro(data_dir: Path | None = None) -> ReplayTable:
    t = read_mmlu_pro(data_dir).complete()
    root = (data_dir or default_data_dir()) / "mmlu-pro"
    questions = pd.read_csv(root / "questions.csv").set_index("question_id")
    questions.index = questions.index.astype(str)
    q = questions.loc[t.ids]
    in_chars = q["question"].astype(str).str.len() + q["options"].astype(str).str.len()
    ans = mmlu_pro_answers(t.ids, t.models, data_dir)
    prices = read_prices(data_dir).loc[t.models]
    return ReplayTable(
        name="mmlu-pro",
        ids=t.ids,
        prompts=list(t.prompts),
        groups=t.groups.to_numpy(dtype=str),
        models=t.models,
        outcome=t.outcome.to_numpy(dtype=float),
        cost=t.cost.to_numpy(dtype=float),
        prompt_tokens=tokens(in_chars.to_numpy(dtype=float)),
        output_tokens=tokens(ans.chars),
        answers=ans.choice,
        answer_chars=ans.chars,
        prices=(
            prices["input_usd_per_mtok"].to_numpy(dtype=float) / 1e6,
            prices["output_usd_per_mtok"].to_numpy(dtype=float) / 1e6,
        ),
        cost_note="cost convention: input tokens = ceil(chars(question+options)/4), output "
        "tokens = ceil(gen_chars/4), priced with prices.csv",
        binary=True,
    )


def alpacaeval(data_dir: Path | None = None) -> ReplayTable:
    t = read_alpacaeval(data_dir)
    root = (data_dir or default_data_dir()) / "alpacaeval" / "model_outputs"
    models = sorted(ALPACA_PRICES)
    chars = np.full((len(t), len(models)), np.nan)
    pos = {text: i for i, text in enumerate(t.prompts)}
    for j, m in enumerate(models):
        for row in json.loads((root / f"{m}.json").read_text()):
            i = pos.get(row["instruction"])
            if i is not None:
                chars[i, j] = len(row["output"] or "")
    outcome = t.outcome[models].to_numpy(dtype=float)
    keep = ~np.isnan(chars).any(axis=1) & ~np.isnan(outcome).any(axis=1)
    p_in = np.array([ALPACA_PRICES[m][0] for m in models]) / 1e6
    p_out = np.array([ALPACA_PRICES[m][1] for m in models]) / 1e6
    prompt_tok = tokens(t.prompts.str.len().to_numpy(dtype=float))[keep]
    out_tok = tokens(chars[keep])
    prices = ", ".join(f"{m} {a:g}/{b:g}" for m, (a, b) in sorted(ALPACA_PRICES.items()))
    return ReplayTable(
        name="alpacaeval",
        ids=[i for i, k in zip(t.ids, keep, strict=True) if k],
        prompts=[p for p, k in zip(t.prompts, keep, strict=True) if k],
        groups=t.groups.to_numpy(dtype=str)[keep],
        models=models,
        outcome=outcome[keep],
        cost=prompt_tok[:, None] * p_in[None, :] + out_tok * p_out[None, :],
        prompt_tokens=prompt_tok,
        output_tokens=out_tok,
        answers=np.full((int(keep.sum()), len(models)), "", dtype=str),
        answer_chars=chars[keep],
        prices=(p_in, p_out),
        cost_note="quality = judge's P(answer beats gpt-4-1106-preview) ('adequate' = the judge "
        "prefers it); no recorded cost: ceil(chars/4) tokens of instruction and answer x list "
        f"prices, USD per 1M in/out tokens: {prices}",
        binary=False,
    )


READERS = {"routerbench": routerbench, "mmlu-pro": mmlu_pro, "alpacaeval": alpacaeval}


def read(name: str, data_dir: Path | None = None) -> ReplayTable:
    return READERS[name](data_dir)


def fit_prices(table: ReplayTable, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """USD per input / output token per model: the table's, else NNLS on the given rows."""
    if table.prices is not None:
        return table.prices
    from scipy.optimize import nnls

    p_in = np.zeros(len(table.models))
    p_out = np.zeros(len(table.models))
    for j in range(len(table.models)):
        a = np.column_stack([table.prompt_tokens[rows], table.output_tokens[rows, j]])
        scale = a.max(axis=0)
        coef, _ = nnls(a / scale, table.cost[rows, j])
        p_in[j], p_out[j] = coef / scale
    return p_in, p_out


def typical_output(table: ReplayTable, rows: np.ndarray) -> np.ndarray:
    """Mean recorded output tokens per model on ``rows`` (what a backend's config would say)."""
    out = np.nanmean(table.output_tokens[rows], axis=0)
    return np.array([max(1, math.ceil(v)) if not math.isnan(v) else 256 for v in out])
