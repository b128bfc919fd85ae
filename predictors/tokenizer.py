"""The embedding model's WordPiece tokenizer without ``transformers``.

``transformers.AutoTokenizer`` wraps the same Rust tokenizer (``tokenizers``) that the model's
``tokenizer.json`` describes, but importing it pulls in most of ``transformers`` (and through it
``torch``): seconds before the first prompt is scored. This reads ``tokenizer.json`` directly,
with the truncation (128) and padding stored in it turned off, and gives the ids
``AutoTokenizer`` gives with ``add_special_tokens=False, truncation=False``
(``tests/unit/test_predictors_tokenizer.py`` compares them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


class WordPieceTokenizer:
    """Token ids for texts, and the ids of ``[CLS]``, ``[SEP]`` and ``[PAD]``."""

    def __init__(self, model_dir: str | Path) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.cls_token_id = self._id("[CLS]")
        self.sep_token_id = self._id("[SEP]")
        self.pad_token_id = self._id("[PAD]")

    def _id(self, token: str) -> int:
        found = self._tokenizer.token_to_id(token)
        if found is None:
            raise ValueError(f"the tokenizer has no {token} token")
        return int(found)

    def __call__(self, texts: Sequence[str], **_options: Any) -> dict[str, list[list[int]]]:
        """``{"input_ids": [...]}`` without special tokens or truncation (the options an
        ``AutoTokenizer`` call would take are accepted and are these)."""
        encoded = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return {"input_ids": [list(e.ids) for e in encoded]}
