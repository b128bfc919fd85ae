"""The predictor at runtime: load an artifact and score prompts.

This module owns what scores a prompt:

* :func:`load_artifact` → :class:`Predictor` (version, profiles, ``predict_batch``);
* giving a backend without data a profile: :meth:`Predictor.with_alias` (map it to a known
  profile) and :func:`fit_profile` (fit its ability from a few hundred labelled outcomes).

The gateway normally does not call it in its own process: ``predictors.serving`` runs it in
worker processes (:func:`load_for_serving` loads what a worker serves, on the device
:func:`pick_device` chooses), and ``gateway.serve.predictor_client`` sends them prompts with a
time limit (or, with ``predictor.workers: 0``, calls a cheap encoder's predictor directly).

``complexity`` is the mean predicted failure probability over the artifact's trained profiles
(0 = every profile is expected to succeed, 1 = none is).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from predictors.artifact import DEFAULT_ARTIFACT_DIR, read_artifact
from predictors.embedding import Embedder, EmbedderConfig
from predictors.outcome_model import OutcomeModel, fit_new_profile
from predictors.static_embedding import StaticConfig, StaticEmbedder

log = logging.getLogger(__name__)

AnyEmbedder = Embedder | StaticEmbedder
AnyEmbedderConfig = EmbedderConfig | StaticConfig


def embedder_config_from_dict(d: Mapping[str, Any]) -> AnyEmbedderConfig:
    """An artifact's embedder settings: MiniLM (onnx / torch) or the static token table."""
    if d.get("runtime") == "static":
        return StaticConfig.from_dict(dict(d))
    return EmbedderConfig.from_dict(dict(d))


def make_embedder(
    config: AnyEmbedderConfig,
    *,
    device: str = "cpu",
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> AnyEmbedder:
    """The embedder that produces ``config``'s vectors."""
    if isinstance(config, StaticConfig):
        return StaticEmbedder(config, cache_dir=cache_dir)
    return Embedder(config, device=device, threads=threads, cache_dir=cache_dir)


def resolve_artifact(path: str | Path | None) -> Path:
    """An artifact directory: ``None`` is the shipped default, and a bare name (no path
    separator) that names a shipped artifact (``static``) is that one."""
    if path is None:
        return DEFAULT_ARTIFACT_DIR
    shipped = DEFAULT_ARTIFACT_DIR.parent / str(path)
    if "/" not in str(path) and shipped.is_dir() and not Path(path).is_dir():
        return shipped
    return Path(path)


@dataclass(frozen=True)
class Prediction:
    """Predicted outcome of one prompt: scalar complexity and P(success) per profile."""

    complexity: float
    p_success: Mapping[str, float]
    # the query's vector (in the artifact's embedder space): logged with the request so the
    # predictor can later be trained on the request's outcome (``train --from-store``)
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: Per profile, the expected answer length over the profile's typical one (1.0: typical;
    #: only profiles whose recorded answers the memory knows)
    output_ratio: Mapping[str, float] = field(default_factory=dict)


def output_ratios(profiles: Sequence[str], row: np.ndarray) -> dict[str, float]:
    """``{profile: ratio}`` of one query's length ratios, the unknown (NaN) ones left out."""
    return {p: float(r) for p, r in zip(profiles, row.tolist(), strict=True) if r == r}


class Predictor:
    """An embedder plus an outcome model, loaded from a verified artifact."""

    def __init__(
        self,
        model: OutcomeModel,
        meta: Mapping[str, Any],
        embedder: AnyEmbedder | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        self.meta = dict(meta)
        self.version: str = str(meta.get("version", "unversioned"))
        self.embedder_config = embedder_config_from_dict(meta["embedder"])
        self._embedder = embedder
        # complexity: mean over the dataset-trained profiles (``complexity_profiles`` when an
        # artifact also learned backend profiles from a gateway's store)
        trained = set(meta.get("complexity_profiles", meta.get("profiles", model.profiles)))
        self._trained_idx = [i for i, p in enumerate(model.profiles) if p in trained]
        self.aliases: dict[str, str] = dict(aliases or {})

    @property
    def embedder(self) -> AnyEmbedder:
        if self._embedder is None:  # lazy: loading torch + weights takes ~1 s
            self._embedder = make_embedder(self.embedder_config)
        if self._embedder.fingerprint != self.embedder_config.fingerprint():
            raise ValueError("embedder settings differ from the ones the artifact was trained on")
        return self._embedder

    @property
    def profiles(self) -> list[str]:
        return [*self.model.profiles, *self.aliases]

    def with_alias(self, backend: str, profile: str) -> Predictor:
        """A predictor where ``backend`` is scored exactly like the known ``profile``."""
        if profile not in self.model.profiles:
            raise KeyError(f"unknown profile {profile!r}")
        return Predictor(self.model, self.meta, self._embedder, {**self.aliases, backend: profile})

    def predict_embeddings(self, x: np.ndarray) -> list[Prediction]:
        probs, ratios = self.model.predict(x)
        complexity = (1.0 - probs[:, self._trained_idx].mean(axis=1)).tolist()
        names = self.model.profiles
        out = []
        for i, (row, c) in enumerate(zip(probs.tolist(), complexity, strict=True)):
            ps = dict(zip(names, row, strict=True))
            rs = output_ratios(names, ratios[i])
            for alias, target in self.aliases.items():
                ps[alias] = ps[target]
                if target in rs:
                    rs[alias] = rs[target]
            out.append(Prediction(c, MappingProxyType(ps), x[i], MappingProxyType(rs)))
        return out

    def predict_batch(self, prompts: Sequence[str]) -> list[Prediction]:
        if not prompts:
            return []
        return self.predict_embeddings(self.embedder.encode(list(prompts)))


def load_artifact(path: str | Path | None = None, embedder: AnyEmbedder | None = None) -> Predictor:
    """Load and verify an artifact directory (``None``: the shipped default artifact; a bare
    name: a shipped artifact, see :func:`resolve_artifact`)."""
    arrays, meta = read_artifact(resolve_artifact(path))
    model = OutcomeModel(list(meta["profiles"]), arrays)
    return Predictor(model, meta, embedder)


def pick_device(requested: str, runtime: str, int8: bool) -> str:
    """``cpu`` or ``cuda``: ``auto`` takes the GPU when torch sees one and the artifact's
    embedder can run there (the torch runtime without CPU int8); else the CPU."""
    if requested == "cpu":
        return "cpu"
    gpu_ok = runtime == "torch" and not int8
    if requested == "cuda" and not gpu_ok:
        raise ValueError(
            "this artifact's embedder runs on CPU only (ONNX int8); train one with the torch "
            "runtime to serve on a GPU"
        )
    if not gpu_ok:
        return "cpu"
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def load_for_serving(
    artifact: str | Path | None,
    *,
    device: str = "auto",
    threads: int = 1,
    cache_dir: str | Path | None = None,
) -> tuple[Predictor, AnyEmbedderConfig, str]:
    """An artifact's predictor with the embedder it needs, on the device :func:`pick_device`
    picks for ``device``, warmed up: ``(predictor, embedder settings, device used)``."""
    _, meta = read_artifact(resolve_artifact(artifact))
    cfg = embedder_config_from_dict(meta["embedder"])
    used = pick_device(device, cfg.runtime, bool(getattr(cfg, "quantize_int8", False)))
    embedder = make_embedder(cfg, device=used, threads=threads, cache_dir=cache_dir)
    predictor = load_artifact(artifact, embedder=embedder)
    predictor.predict_batch(["warm up the predictor", "a second, longer warm-up prompt"])
    return predictor, cfg, used


def fit_profile(
    predictor: Predictor,
    name: str,
    prompts: Sequence[str],
    success: Sequence[float],
    min_examples: int = 100,
) -> Predictor:
    """A predictor with a new profile ``name`` fitted from labelled (prompt, success) outcomes.

    The shared query features stay frozen; only the new backend's ability vector and bias are
    learned, so a few hundred outcomes suffice.
    """
    if len(prompts) != len(success):
        raise ValueError("prompts and success differ in length")
    if len(prompts) < min_examples:
        raise ValueError(f"need at least {min_examples} labelled outcomes, got {len(prompts)}")
    x = predictor.embedder.encode(list(prompts))
    a, u = fit_new_profile(predictor.model, x, np.asarray(success, dtype=float))
    model = predictor.model.with_profile(name, a, u)
    return Predictor(model, predictor.meta, predictor._embedder, predictor.aliases)
