"""Dataset readers on small slices of the real files in ../shared/data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from predictors.datasets import (
    default_data_dir,
    read_alpacaeval,
    read_mmlu_pro,
    read_prices,
    read_routerbench,
    split_ids,
)

pytestmark = pytest.mark.skipif(
    not default_data_dir().is_dir(), reason="../shared/data is not available"
)


def test_routerbench_slice() -> None:
    t = read_routerbench(files=("mbpp",), nrows=20)
    assert len(t) == 20 and len(t.models) == 11
    assert "gpt-4-1106-preview" in t.models
    assert set(np.unique(t.outcome.to_numpy())) <= {0.0, 1.0}
    # real recorded cost: gpt-4 is dearer than mistral-7b on every query
    assert (t.cost["gpt-4-1106-preview"] > t.cost["mistralai/mistral-7b-chat"]).all()
    # the Python-literal prompt list is decoded to plain text
    assert not t.prompts.iloc[0].startswith("[")
    assert (t.groups == "mbpp").all()


def test_mmlu_pro_cost_follows_the_token_convention() -> None:
    t = read_mmlu_pro(nrows=30)
    assert len(t) == 30 and len(t.models) == 29
    import pandas as pd

    root = default_data_dir() / "mmlu-pro"
    qid = t.ids[0]
    q = pd.read_csv(root / "questions.csv").set_index("question_id").loc[int(qid)]
    long = pd.read_csv(root / "outputs_long.csv")
    gen = long[(long.question_id == int(qid)) & (long.model == "gemini-1.5-pro-002")]
    price = read_prices().loc["gemini-1.5-pro-002"]
    tokens_in = math.ceil((len(q["question"]) + len(q["options"])) / 4)
    tokens_out = math.ceil(int(gen["gen_chars"].iloc[0]) / 4)
    expected = (
        tokens_in * price["input_usd_per_mtok"] + tokens_out * price["output_usd_per_mtok"]
    ) / 1e6
    assert t.cost.loc[qid, "gemini-1.5-pro-002"] == pytest.approx(expected)
    assert t.prompts.loc[qid].startswith(str(q["question"]))
    assert "\nA) " in t.prompts.loc[qid]


def test_alpacaeval_scores() -> None:
    t = read_alpacaeval()
    assert len(t) == 805 and not t.binary
    v = t.outcome.to_numpy()
    assert np.nanmin(v) >= 0.0 and np.nanmax(v) <= 1.0
    assert t.cost.isna().all().all()


def test_split_is_seeded_and_disjoint() -> None:
    ids = [str(i) for i in range(100)]
    a_tr, a_te = split_ids(ids, 3)
    b_tr, _ = split_ids(ids, 3)
    assert a_tr == b_tr and len(a_tr) == 70 and len(a_te) == 30
    assert not set(a_tr) & set(a_te)
    assert split_ids(ids, 4)[0] != a_tr
