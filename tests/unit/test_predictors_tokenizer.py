"""The tokenizer read from tokenizer.json gives the ids transformers' AutoTokenizer gives (the
embedder used it before), on benchmark prompts and on awkward text."""

from __future__ import annotations

from pathlib import Path

import pytest

from predictors.datasets import default_data_dir, read_routerbench
from predictors.embedding import EmbedderConfig, bundled_model_dir, clip_text
from predictors.tokenizer import WordPieceTokenizer

AWKWARD = [
    "",
    " ",
    "Prove that the square root of 2 is irrational.",
    "héllo WORLD  ünïcode 日本語 \t tabs\nnew line",
    "a" * 3000,  # one word past WordPiece's per-word limit
    "x " * 400,  # past the 128 tokens tokenizer.json truncates to
    "Q: What's 2+2?\nA: 4 <|endoftext|> [SEP] [CLS] [MASK]",
    "emoji 🚀🔥 and math ∑ x² ≤ ∞",
]


def _prompts() -> list[str]:
    data = default_data_dir()
    if not (data / "routerbench").is_dir():
        return []
    table = read_routerbench(data)
    return [str(p) for p in list(table.prompts)[::25]]


def test_ids_match_transformers() -> None:
    from transformers import AutoTokenizer

    path = bundled_model_dir()
    reference = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    ours = WordPieceTokenizer(path)
    texts = AWKWARD + _prompts()
    texts += [clip_text(t, EmbedderConfig()) for t in texts]  # what the embedder tokenizes
    options = {"add_special_tokens": False, "truncation": False, "verbose": False}
    assert ours(texts, **options)["input_ids"] == reference(texts, **options)["input_ids"]
    assert (ours.cls_token_id, ours.sep_token_id, ours.pad_token_id) == (
        reference.cls_token_id,
        reference.sep_token_id,
        reference.pad_token_id,
    )
    assert max(len(ids) for ids in ours(["x " * 400])["input_ids"]) == 400  # not truncated


def test_missing_special_token_is_an_error(tmp_path: Path) -> None:
    import json

    spec = json.loads((bundled_model_dir() / "tokenizer.json").read_text())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] != "[PAD]"]
    spec["model"]["vocab"].pop("[PAD]")
    spec["padding"] = None
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"\[PAD\]"):
        WordPieceTokenizer(tmp_path)
