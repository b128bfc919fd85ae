"""Predictor artifacts on disk: a versioned directory with safe weights and hashed metadata.

This module owns the artifact format and its integrity check. An artifact directory holds

* ``weights.safetensors`` — the outcome model's arrays (float32; the neighbour memory int8 /
  float16) (safetensors: no code runs
  when loading, unlike pickle);
* ``metadata.json`` — format version, artifact version, profiles, embedder settings, training
  data description, training config, metrics, and ``content_hash``.

``content_hash`` is the SHA-256 of the weights file bytes followed by the canonical JSON of the
metadata *without* the hash field. :func:`read_artifact` recomputes it and refuses a directory
whose files were changed. The artifact ``version`` is derived from the hash, so retraining on
the same data with the same settings reproduces the same version.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
METADATA_FILE = "metadata.json"
DEFAULT_ARTIFACT_DIR = Path(__file__).resolve().parent / "artifacts" / "default"


class ArtifactError(ValueError):
    """The artifact directory is missing, malformed or fails its integrity check."""


def _canonical(meta: dict[str, Any]) -> bytes:
    body = {k: v for k, v in meta.items() if k not in ("content_hash", "version")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def content_hash(weights_bytes: bytes, meta: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(weights_bytes)
    h.update(b"\0")
    h.update(_canonical(meta))
    return h.hexdigest()


def _storable(v: np.ndarray) -> np.ndarray:
    """float32, except arrays deliberately kept small (int8 / float16 memory)."""
    kind = v.dtype if v.dtype in (np.dtype(np.int8), np.dtype(np.float16)) else np.float32
    return np.ascontiguousarray(v, dtype=kind)


def write_artifact(
    out_dir: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]
) -> dict[str, Any]:
    """Write weights + metadata; returns the metadata with ``version`` and ``content_hash``."""
    from safetensors.numpy import save

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = save({k: _storable(v) for k, v in sorted(arrays.items())})
    meta = dict(meta)
    meta["format_version"] = FORMAT_VERSION
    digest = content_hash(weights, meta)
    meta["content_hash"] = digest
    meta["version"] = f"{meta.get('name', 'predictor')}-{digest[:12]}"
    (out / WEIGHTS_FILE).write_bytes(weights)
    (out / METADATA_FILE).write_text(
        json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n"
    )
    return meta


def read_artifact(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify an artifact; raises :class:`ArtifactError` if anything is off."""
    from safetensors.numpy import load

    root = Path(path)
    wpath, mpath = root / WEIGHTS_FILE, root / METADATA_FILE
    if not wpath.is_file() or not mpath.is_file():
        raise ArtifactError(f"{root}: expected {WEIGHTS_FILE} and {METADATA_FILE}")
    try:
        meta = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{mpath}: invalid JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{mpath}: unsupported format_version")
    weights = wpath.read_bytes()
    expected = meta.get("content_hash")
    actual = content_hash(weights, meta)
    if expected != actual:
        raise ArtifactError(
            f"{root}: content hash mismatch (metadata says {expected}, files hash to {actual}); "
            "the artifact was modified or is corrupt"
        )
    if meta.get("version") != f"{meta.get('name', 'predictor')}-{actual[:12]}":
        raise ArtifactError(f"{root}: version does not match the content hash")
    try:
        arrays = load(weights)
    except Exception as e:  # safetensors raises its own error types
        raise ArtifactError(f"{wpath}: unreadable weights: {e}") from e
    return dict(arrays), meta
