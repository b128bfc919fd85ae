"""Readers for the recorded per-query, per-model outcome tables in ``../shared/data``.

This module owns turning each published routing dataset into one common value,
:class:`OutcomeTable`: per query id, the prompt text a client would send, per model the
outcome (0/1 correctness, or a quality score in [0, 1]) and per model the cost in USD.

* RouterBench (``routerbench/*.csv``): 0/1 correctness columns and the recorded real cost
  ``<model>|total_cost`` of that query on that model.
* MMLU-Pro (``mmlu-pro/``): 0/1 correctness from ``correct_wide.parquet`` (NaN where a model has
  no answer). Cost follows the dataset README's convention: input tokens =
  ``ceil(chars(question + options) / 4)``, output tokens = ``ceil(gen_chars / 4)``, priced with
  ``prices.csv`` (USD per 1M tokens). ``chars(question + options)`` is the length of the raw
  ``question`` field plus the raw ``options`` field of ``questions.csv``.
* AlpacaEval 2.0 (``alpacaeval/``): the judge's probability that a model's answer beats
  gpt-4-1106-preview, used as a quality score. It has no cost column (cost is NaN).
  Evaluation-only licence: never train a shipped artifact on it.

The data directory defaults to ``../shared/data`` relative to the project root; callers pass
another one explicitly (the gateway's CLIs take it from ``--data`` or ``TOLLGATE_DATA_DIR``
through ``gateway.settings``: this module never reads the environment).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROUTERBENCH_FILES = ("arc_challenge", "mbpp", "winogrande")
DATASETS = ("routerbench", "mmlu-pro", "alpacaeval")

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    """The shared data directory next to the project: ``<project root>/../shared/data``."""
    return (_PROJECT_ROOT / ".." / "shared" / "data").resolve()


@dataclass(frozen=True)
class OutcomeTable:
    """Recorded outcomes of several models on the same queries.

    ``outcome`` and ``cost`` are DataFrames indexed by query id with one column per model
    (same order as ``models``); NaN means "no record". ``prompts`` and ``groups`` are Series on
    the same index (``groups`` is the sub-dataset/category, e.g. ``mbpp`` or ``law``).
    """

    name: str
    prompts: pd.Series
    groups: pd.Series
    outcome: pd.DataFrame
    cost: pd.DataFrame
    binary: bool  # True: outcomes are 0/1 correctness; False: quality scores in [0, 1]

    @property
    def models(self) -> list[str]:
        return [str(c) for c in self.outcome.columns]

    @property
    def ids(self) -> list[str]:
        return [str(i) for i in self.outcome.index]

    def __len__(self) -> int:
        return len(self.outcome)

    def complete(self) -> OutcomeTable:
        """Only the queries that have an outcome and a cost for every model."""
        keep = self.outcome.notna().all(axis=1)
        if not self.cost.isna().all().all():
            keep &= self.cost.notna().all(axis=1)
        return self.subset(self.outcome.index[keep])

    def subset(self, ids: Sequence[str] | pd.Index) -> OutcomeTable:
        idx = pd.Index(ids)
        return OutcomeTable(
            name=self.name,
            prompts=self.prompts.loc[idx],
            groups=self.groups.loc[idx],
            outcome=self.outcome.loc[idx],
            cost=self.cost.loc[idx],
            binary=self.binary,
        )

    def describe(self) -> dict[str, object]:
        """A JSON-able summary used in artifact metadata and reports."""
        return {
            "name": self.name,
            "queries": len(self),
            "models": self.models,
            "binary": self.binary,
            "mean_outcome": {m: round(float(v), 4) for m, v in self.outcome.mean().items()},
            "mean_cost_usd": {
                m: (None if math.isnan(v) else float(v)) for m, v in self.cost.mean().items()
            },
        }


def _resolve(data_dir: str | Path | None) -> Path:
    path = Path(data_dir) if data_dir is not None else default_data_dir()
    if not path.is_dir():
        raise FileNotFoundError(f"data directory not found: {path} (pass the data directory)")
    return path


def _routerbench_prompt(raw: str) -> str:
    """RouterBench stores the prompt as a Python-literal list of strings (one per turn)."""
    try:
        parts = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw
    if isinstance(parts, list | tuple):
        return "\n\n".join(str(p) for p in parts)
    return str(parts)


def read_routerbench(
    data_dir: str | Path | None = None,
    files: Sequence[str] = ROUTERBENCH_FILES,
    nrows: int | None = None,
) -> OutcomeTable:
    """RouterBench 0-shot: 11 models, 0/1 correctness, real per-query USD cost."""
    root = _resolve(data_dir) / "routerbench"
    frames = []
    for f in files:
        df = pd.read_csv(root / f"{f}.csv", nrows=nrows)
        frames.append(df.drop(columns=[c for c in df.columns if c.startswith("Unnamed")]))
    df = pd.concat(frames, ignore_index=True)
    cost_cols = [c for c in df.columns if c.endswith("|total_cost")]
    models = sorted(c.split("|", 1)[0] for c in cost_cols)
    df = df.drop_duplicates("sample_id").set_index("sample_id")
    df.index = df.index.astype(str)
    df.index.name = "id"
    outcome = df[models].astype(float)
    cost = df[[f"{m}|total_cost" for m in models]].astype(float)
    cost.columns = pd.Index(models)
    prompts = df["prompt"].astype(str).map(_routerbench_prompt)
    return OutcomeTable(
        name="routerbench",
        prompts=prompts,
        groups=df["eval_name"].astype(str),
        outcome=outcome,
        cost=cost,
        binary=True,
    )


def _format_options(raw: str) -> list[str]:
    try:
        opts = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return [raw]
    return [str(o) for o in opts] if isinstance(opts, list | tuple) else [str(opts)]


def mmlu_pro_prompt(question: str, options_raw: str) -> str:
    """The prompt a client would send for an MMLU-Pro question: question then lettered options."""
    letters = "ABCDEFGHIJKLMNOP"
    opts = _format_options(options_raw)
    lines = [f"{letters[i] if i < len(letters) else i}) {o}" for i, o in enumerate(opts)]
    return question + "\n" + "\n".join(lines)


def read_prices(data_dir: str | Path | None = None) -> pd.DataFrame:
    """MMLU-Pro ``prices.csv``: per model USD per 1M input / output tokens and tier."""
    return pd.read_csv(_resolve(data_dir) / "mmlu-pro" / "prices.csv").set_index("model")


def read_mmlu_pro(data_dir: str | Path | None = None, nrows: int | None = None) -> OutcomeTable:
    """MMLU-Pro: 29 models, 0/1 correctness, cost from the README token convention."""
    root = _resolve(data_dir) / "mmlu-pro"
    wide = pd.read_parquet(root / "correct_wide.parquet")
    if nrows is not None:
        wide = wide.iloc[:nrows]
    questions = pd.read_csv(root / "questions.csv").set_index("question_id")
    prices = read_prices(data_dir)
    models = sorted(c.removeprefix("correct__") for c in wide.columns if c.startswith("correct__"))
    wide = wide.set_index("question_id")
    outcome = wide[[f"correct__{m}" for m in models]].astype(float)
    outcome.columns = pd.Index(models)
    q = questions.loc[wide.index]
    in_chars = q["question"].astype(str).str.len() + q["options"].astype(str).str.len()
    in_tokens = np.ceil(in_chars.to_numpy(dtype=float) / 4.0)
    long = pd.read_csv(root / "outputs_long.csv", usecols=["question_id", "model", "gen_chars"])
    long = long[long["question_id"].isin(wide.index)]
    gen = long.pivot_table(
        index="question_id", columns="model", values="gen_chars", aggfunc="first"
    )
    gen = gen.reindex(index=wide.index, columns=models)
    out_tokens = np.ceil(gen.to_numpy(dtype=float) / 4.0)
    p_in = prices.loc[models, "input_usd_per_mtok"].to_numpy(dtype=float)
    p_out = prices.loc[models, "output_usd_per_mtok"].to_numpy(dtype=float)
    cost_arr = (in_tokens[:, None] * p_in[None, :] + out_tokens * p_out[None, :]) / 1e6
    # no recorded answer -> no cost either
    cost_arr = np.where(outcome.isna().to_numpy(), np.nan, cost_arr)
    ids = pd.Index([str(i) for i in wide.index], name="id")
    outcome.index = ids
    cost = pd.DataFrame(cost_arr, index=ids, columns=pd.Index(models))
    prompts = pd.Series(
        [mmlu_pro_prompt(a, b) for a, b in zip(q["question"], q["options"], strict=True)],
        index=ids,
    )
    groups = pd.Series(q["category"].astype(str).to_numpy(), index=ids)
    return OutcomeTable("mmlu-pro", prompts, groups, outcome, cost, binary=True)


def read_alpacaeval(data_dir: str | Path | None = None) -> OutcomeTable:
    """AlpacaEval 2.0: quality score = P(answer beats gpt-4-1106-preview); no cost recorded."""
    root = _resolve(data_dir) / "alpacaeval"
    df = pd.read_csv(root / "alpacaeval_p_beats_gpt4turbo_wide.csv")
    meta = {"prompt_id", "dataset", "instruction"}
    models = sorted(c for c in df.columns if c not in meta)
    ids = pd.Index([str(i) for i in df["prompt_id"]], name="id")
    outcome = pd.DataFrame(df[models].to_numpy(dtype=float), index=ids, columns=pd.Index(models))
    cost = pd.DataFrame(np.nan, index=ids, columns=pd.Index(models))
    prompts = pd.Series(df["instruction"].astype(str).to_numpy(), index=ids)
    groups = pd.Series(df["dataset"].astype(str).to_numpy(), index=ids)
    return OutcomeTable("alpacaeval", prompts, groups, outcome, cost, binary=False)


def read_dataset(name: str, data_dir: str | Path | None = None) -> OutcomeTable:
    """Read one dataset by name: ``routerbench``, ``mmlu-pro`` or ``alpacaeval``."""
    if name == "routerbench":
        return read_routerbench(data_dir)
    if name == "mmlu-pro":
        return read_mmlu_pro(data_dir)
    if name == "alpacaeval":
        return read_alpacaeval(data_dir)
    raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")


def split_ids(
    ids: Sequence[str], seed: int, train_frac: float = 0.7
) -> tuple[list[str], list[str]]:
    """A seeded train/test split by query id (no query is in both parts)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    n_train = round(train_frac * len(ids))
    arr = np.asarray(ids, dtype=object)
    return [str(x) for x in arr[order[:n_train]]], [str(x) for x in arr[order[n_train:]]]
