"""The predictor at runtime: load an artifact, score prompts, micro-batch concurrent requests.

This module owns what the gateway calls:

* :func:`load_artifact` → :class:`Predictor` (version, profiles, ``predict_batch``);
* :class:`PredictorService` — an asyncio front that micro-batches concurrent ``predict`` calls
  in ONE worker thread (the event loop never runs model code), caches results by prompt hash
  (LRU), and returns ``None`` on timeout or error so the caller applies the policy's declared
  fallback (never a silent guess);
* giving a backend without data a profile: :meth:`Predictor.with_alias` (map it to a known
  profile) and :func:`fit_profile` (fit its ability from a few hundred labelled outcomes).

``complexity`` is the mean predicted failure probability over the artifact's trained profiles
(0 = every profile is expected to succeed, 1 = none is).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from predictors.artifact import DEFAULT_ARTIFACT_DIR, read_artifact
from predictors.embedding import Embedder, EmbedderConfig
from predictors.outcome_model import OutcomeModel, fit_new_profile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """Predicted outcome of one prompt: scalar complexity and P(success) per profile."""

    complexity: float
    p_success: Mapping[str, float]
    # the query's vector (in the artifact's embedder space): logged with the request so the
    # predictor can later be trained on the request's outcome (``train --from-store``)
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)


class Predictor:
    """An embedder plus an outcome model, loaded from a verified artifact."""

    def __init__(
        self,
        model: OutcomeModel,
        meta: Mapping[str, Any],
        embedder: Embedder | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        self.meta = dict(meta)
        self.version: str = str(meta.get("version", "unversioned"))
        self.embedder_config = EmbedderConfig.from_dict(meta["embedder"])
        self._embedder = embedder
        # complexity: mean over the dataset-trained profiles (``complexity_profiles`` when an
        # artifact also learned backend profiles from a gateway's store)
        trained = set(meta.get("complexity_profiles", meta.get("profiles", model.profiles)))
        self._trained_idx = [i for i, p in enumerate(model.profiles) if p in trained]
        self.aliases: dict[str, str] = dict(aliases or {})

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:  # lazy: loading torch + weights takes ~1 s
            self._embedder = Embedder(self.embedder_config)
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
        probs = self.model.predict_proba(x)
        complexity = (1.0 - probs[:, self._trained_idx].mean(axis=1)).tolist()
        names = self.model.profiles
        out = []
        for i, (row, c) in enumerate(zip(probs.tolist(), complexity, strict=True)):
            ps = dict(zip(names, row, strict=True))
            for alias, target in self.aliases.items():
                ps[alias] = ps[target]
            out.append(Prediction(c, MappingProxyType(ps), x[i]))
        return out

    def predict_batch(self, prompts: Sequence[str]) -> list[Prediction]:
        if not prompts:
            return []
        return self.predict_embeddings(self.embedder.encode(list(prompts)))


def load_artifact(path: str | Path | None = None, embedder: Embedder | None = None) -> Predictor:
    """Load and verify an artifact directory (``None``: the shipped default artifact)."""
    arrays, meta = read_artifact(path if path is not None else DEFAULT_ARTIFACT_DIR)
    model = OutcomeModel(list(meta["profiles"]), arrays)
    return Predictor(model, meta, embedder)


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


@dataclass
class _Item:
    prompt: str
    key: str
    future: asyncio.Future[Prediction]
    loop: asyncio.AbstractEventLoop


@dataclass
class ServiceStats:
    requests: int = 0
    cache_hits: int = 0
    timeouts: int = 0
    errors: int = 0
    batches: int = 0
    batched_prompts: int = 0
    batch_sizes: list[int] = field(default_factory=list)


_STOP = object()


class PredictorService:
    """Micro-batching, caching, time-bounded front for a :class:`Predictor`."""

    def __init__(
        self,
        predictor: Predictor,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        cache_size: int = 10_000,
    ) -> None:
        self.predictor = predictor
        self._profiles = frozenset(predictor.profiles)
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.cache_size = cache_size
        self.stats = ServiceStats()
        self._cache: OrderedDict[str, Prediction] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None

    @property
    def version(self) -> str:
        return self.predictor.version

    @property
    def fingerprint(self) -> str:
        """The embedder space of the predictor's vectors (stored with logged embeddings)."""
        return self.predictor.embedder_config.fingerprint()

    @property
    def profiles(self) -> frozenset[str]:
        """The profiles it scores (computed once: the router asks on every request)."""
        return self._profiles

    def warmup(self) -> None:
        """Load the model and run it once, so the first request does not pay for it."""
        self.predictor.predict_batch(["warm up the predictor", "a second, longer warm-up prompt"])

    async def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._worker, name="tollgate-predictor", daemon=True
            )
            self._thread.start()

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(thread.join)

    def _cache_get(self, key: str) -> Prediction | None:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
            return hit

    def _cache_put(self, key: str, value: Prediction) -> None:
        if self.cache_size <= 0:
            return
        with self._lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    async def predict(self, prompt: str, timeout_s: float) -> Prediction | None:
        """Prediction for ``prompt``, or ``None`` if it is not ready within ``timeout_s``."""
        self.stats.requests += 1
        key = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
        hit = self._cache_get(key)
        if hit is not None:
            self.stats.cache_hits += 1
            return hit
        if self._thread is None:
            await self.start()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Prediction] = loop.create_future()
        self._queue.put(_Item(prompt, key, fut, loop))
        try:
            return await asyncio.wait_for(fut, timeout=timeout_s)
        except TimeoutError:
            self.stats.timeouts += 1
            return None
        except Exception:
            self.stats.errors += 1
            log.exception("predictor failed; the policy's fallback applies")
            return None

    def _collect(self, first: _Item) -> tuple[list[_Item], bool]:
        items = [first]
        deadline = time.monotonic() + self.max_wait_s
        stop = False
        while len(items) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                nxt = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if nxt is _STOP:
                stop = True
                break
            items.append(nxt)
        return items, stop

    def _worker(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            items, stop = self._collect(first)
            live = [it for it in items if not it.future.done()]  # skip callers that gave up
            if live:
                self._run(live)
            if stop:
                return

    def _run(self, items: list[_Item]) -> None:
        self.stats.batches += 1
        self.stats.batched_prompts += len(items)
        if len(self.stats.batch_sizes) < 10_000:
            self.stats.batch_sizes.append(len(items))
        try:
            unique = list(dict.fromkeys(it.prompt for it in items))
            preds = dict(zip(unique, self.predictor.predict_batch(unique), strict=True))
        except Exception as exc:  # report to every waiting caller, keep the worker alive
            for it in items:
                it.loop.call_soon_threadsafe(_set_exception, it.future, exc)
            return
        for it in items:
            pred = preds[it.prompt]
            self._cache_put(it.key, pred)
            # RuntimeError: the caller's event loop is closed, nobody is waiting
            with contextlib.suppress(RuntimeError):
                it.loop.call_soon_threadsafe(_set_result, it.future, pred)


def _set_result(fut: asyncio.Future[Prediction], value: Prediction) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Prediction], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
