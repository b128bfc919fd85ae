"""Where the predictors keep derived files on this machine: the exported ONNX encoder
(``onnx/``) and dataset embeddings (``embeddings/``), under one cache root.

Its own module so that the encoder and the embedding cache can both name the root without
importing each other (they used to form an import cycle through the embedder). The root is a
parameter: the predictors never read the environment (the gateway passes
``gateway.settings.cache_root_from_env()``; scripts pass a path or take the default).
"""

from __future__ import annotations

from pathlib import Path


def cache_root(root: str | Path | None = None) -> Path:
    """Tollgate's machine-local cache: ``root`` when given, else ``~/.cache/tollgate``."""
    return Path(root) if root is not None else Path.home() / ".cache" / "tollgate"
