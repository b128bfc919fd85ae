"""Where the predictors keep derived files on this machine: the exported ONNX encoder
(``onnx/``) and dataset embeddings (``embeddings/``), under one cache root.

Its own module so that the encoder and the embedding cache can both name the root without
importing each other (they used to form an import cycle through the embedder).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Tollgate's machine-local cache: ``$TOLLGATE_CACHE_DIR`` or ``~/.cache/tollgate``."""
    env = os.environ.get("TOLLGATE_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "tollgate"
