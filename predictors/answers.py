"""The recorded answers in ``../shared/data``, as the cascade's verdict sees them.

This module owns reading, per query id and dataset model, the closed-form answer
(``predictors.verdict.extract_choice`` of the answer text; MMLU-Pro: the recorded ``pred``
letter) and the answer's length in characters:

* RouterBench: ``<model>|model_response`` (a Python-literal list of turns). ARC and
  Winogrande ask for one letter; MBPP answers are code and have no closed form ("");
* MMLU-Pro: ``outputs_long.csv`` (``pred``, ``gen_chars``).

Rows follow the ids given (a :class:`predictors.datasets.OutcomeTable`'s); NaN length where
no answer is recorded.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from predictors.datasets import ROUTERBENCH_FILES, default_data_dir
from predictors.verdict import extract_choice

#: RouterBench sub-datasets whose answers are not a closed-form choice.
OPEN_FORM = frozenset({"mbpp"})


@dataclass(frozen=True)
class Answers:
    """(n, m) closed-form answer ("" none) and answer length (NaN: not recorded)."""

    choice: np.ndarray
    chars: np.ndarray


def _text(raw: object) -> str:
    try:
        value = ast.literal_eval(str(raw))
    except (ValueError, SyntaxError):
        return str(raw)
    if isinstance(value, list | tuple):
        return "\n".join(str(v) for v in value)
    return str(value)


def routerbench_answers(
    ids: Sequence[str], models: Sequence[str], data_dir: str | Path | None = None
) -> Answers:
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    frames = [pd.read_csv(root / "routerbench" / f"{f}.csv") for f in ROUTERBENCH_FILES]
    raw = pd.concat(frames, ignore_index=True).drop_duplicates("sample_id")
    raw = raw.set_index(raw["sample_id"].astype(str)).reindex(list(ids))
    closed = ~raw["eval_name"].astype(str).isin(OPEN_FORM).to_numpy()
    choice = np.full((len(ids), len(models)), "", dtype=object)
    chars = np.full((len(ids), len(models)), np.nan)
    for j, m in enumerate(models):
        col = raw[f"{m}|model_response"]
        for i, (value, is_closed) in enumerate(zip(col, closed, strict=True)):
            if pd.isna(value):
                continue
            text = _text(value)
            chars[i, j] = len(text)
            if is_closed:
                choice[i, j] = extract_choice(text) or ""
    return Answers(choice.astype(str), chars)


def mmlu_pro_answers(
    ids: Sequence[str], models: Sequence[str], data_dir: str | Path | None = None
) -> Answers:
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    long = pd.read_csv(
        root / "mmlu-pro" / "outputs_long.csv",
        usecols=["question_id", "model", "pred", "gen_chars"],
        dtype={"question_id": str, "pred": str},
    )
    long = long[long["question_id"].isin(set(ids))]
    pred = long.pivot_table(index="question_id", columns="model", values="pred", aggfunc="first")
    gen = long.pivot_table(
        index="question_id", columns="model", values="gen_chars", aggfunc="first"
    )
    pred = pred.reindex(index=list(ids), columns=list(models)).fillna("")
    gen = gen.reindex(index=list(ids), columns=list(models))
    return Answers(pred.to_numpy(dtype=str), gen.to_numpy(dtype=float))


def read_answers(
    dataset: str, ids: Sequence[str], models: Sequence[str], data_dir: str | Path | None = None
) -> Answers | None:
    """The recorded answers of ``dataset`` (None for a dataset without closed-form answers)."""
    if dataset == "routerbench":
        return routerbench_answers(ids, models, data_dir)
    if dataset == "mmlu-pro":
        return mmlu_pro_answers(ids, models, data_dir)
    return None
