"""The gateway's side of the predictor: worker processes, a prompt cache, a hard time limit.

This module owns :class:`PredictorClient`, what the router asks for ``P(success)``. Model code
runs in ``python -m predictors.serving`` worker processes (``predictor.workers``, one by
default): each prompt goes to the least busy one over its stdin; a worker batches whatever has
queued up and answers on its stdout, which the event loop reads like any socket. So on a
2-core host the loop and the encoder each get a core. (``predictor.workers: 0`` calls the
predictor in this process, unbatched: only for the static encoder; slower under load.)

Every call ends in time with a :class:`Scored`: a prediction (``ok``), or ``None`` and why —
``timeout`` (not answered within the request's budget), ``error`` (the model raised or the
worker died), ``unavailable`` (no worker running: it is being restarted) or ``overloaded``
(more calls waiting than ``max_pending``); the router records it with the decision and the
policy's ``predictor_fallback`` applies. Around the workers: an LRU cache keyed by a hash of
the text the encoder reads (head and tail), identical prompts in flight share one call, each
call carries its deadline so a worker skips work its caller gave up on, and a worker that
exits is restarted with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from gateway.serve.predictor_outcome import (
    ERROR,
    OK,
    OVERLOADED,
    TIMEOUT,
    UNAVAILABLE,
    ClientStats,
    Scored,
)
from gateway.settings import cache_root_from_env
from predictors.embedding import clip_text
from predictors.service import AnyEmbedderConfig, Prediction, embedder_config_from_dict
from predictors.verdict import VerdictModel
from predictors.wire import HEADER, decode_reply, encode_request, verdict_from_hello

log = logging.getLogger("tollgate.predictor")


class _Failed(Exception):
    def __init__(self, status: str, detail: str = "") -> None:
        super().__init__(detail or status)
        self.status = status


class _Worker:
    """One ``predictors.serving`` process and the calls waiting on it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        # answers: the prediction and when the worker sent it (its monotonic clock)
        self.pending: dict[int, asyncio.Future[tuple[Prediction, float]]] = {}
        self.hello: dict[str, Any] = {}
        self.reader: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and bool(self.hello)

    def fail_all(self, status: str, detail: str) -> None:
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(_Failed(status, detail))


class PredictorClient:
    """Time-bounded, cached, multi-process predictions for the router."""

    def __init__(
        self,
        artifact: str | None = None,
        *,
        workers: int = 1,
        threads: int = 1,
        max_batch: int = 64,
        cache_size: int = 10_000,
        device: str = "auto",
        max_pending: int = 4096,
        grace_s: float = 1.0,
        priority: int = 10,
        start_timeout_s: float = 300.0,
        command: Sequence[str] | None = None,
    ) -> None:
        self.artifact = artifact
        self.n_workers = max(0, workers)  # 0: in this process (cheap encoders only)
        self.grace_s = grace_s
        self.priority = priority  # worker's nice -N (where allowed): every decision waits on it
        self.threads = threads
        self.max_batch = max_batch
        self.cache_size = cache_size
        self.device = device
        self.max_pending = max_pending
        self._inline: Any = None  # the Predictor itself when n_workers == 0
        self.start_timeout_s = start_timeout_s
        self._command = list(command) if command is not None else None
        self.stats = ClientStats()
        self.version = "unstarted"
        self.fingerprint: str | None = None
        self.device_used: str | None = None
        #: The artifact's cascade verdict (``gateway.serve.cascade``), known once loaded.
        self.verdict: VerdictModel | None = None
        self._profiles: frozenset[str] = frozenset()
        self._profile_order: list[str] = []
        self._embedder: AnyEmbedderConfig | None = None
        self._workers = [_Worker(i) for i in range(self.n_workers)]
        self._cache: OrderedDict[str, Prediction] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[tuple[Prediction, float]]] = {}
        self._next_id = 0
        self._closing = False
        self._restarts: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def profiles(self) -> frozenset[str]:
        """The profiles the predictor scores (known once a worker said hello)."""
        return self._profiles

    def warmup(self) -> None:
        """Nothing to do here: each worker warms its model up before it says hello."""

    def command(self) -> list[str]:
        """The worker's command line (``command`` given to the constructor replaces it)."""
        if self._command is not None:
            return list(self._command)
        cmd = [sys.executable, "-m", "predictors.serving", "--threads", str(self.threads)]
        cmd += ["--max-batch", str(self.max_batch), "--device", self.device]
        cmd += ["--priority", str(self.priority)]
        if self.artifact:
            cmd += ["--artifact", str(self.artifact)]
        cache = cache_root_from_env()  # where the worker finds (or builds) its ONNX encoder
        if cache is not None:
            cmd += ["--cache-dir", str(cache)]
        return cmd

    async def start(self) -> None:
        """Start every worker and wait until each has loaded the model (raises if one fails);
        with no workers, load the model into this process."""
        if self.n_workers == 0:
            await asyncio.to_thread(self._load_inline)
            return
        await asyncio.gather(*(self._spawn(w) for w in self._workers))

    def _load_inline(self) -> None:
        from predictors.service import load_for_serving

        predictor, config, _ = load_for_serving(
            self.artifact, device="cpu", threads=self.threads, cache_dir=cache_root_from_env()
        )
        if not getattr(predictor.embedder, "batch_independent", False):
            log.warning(
                "predictor.workers: 0 runs the %s encoder on the event loop's thread; it is "
                "meant for the static encoder",
                config.runtime,
            )
        self._inline = predictor
        self.verdict = VerdictModel.from_arrays(predictor.model.arrays)
        self._profile_order = list(predictor.profiles)
        self._profiles = frozenset(self._profile_order)
        self.version = predictor.version
        self.fingerprint = config.fingerprint()
        self.device_used = "cpu (in the gateway process)"
        self._embedder = config

    async def _spawn(self, worker: _Worker) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # the worker's log lines go where the gateway's go
            limit=1 << 24,
        )
        worker.proc = proc
        worker.hello = {}
        assert proc.stdout is not None
        try:
            body = await asyncio.wait_for(_read_frame(proc.stdout), self.start_timeout_s)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if body is None:
            code = await proc.wait()
            raise RuntimeError(f"predictor worker exited while loading (exit code {code})")
        hello = json.loads(body)
        if self._profile_order and hello["profiles"] != self._profile_order:
            raise RuntimeError("predictor workers disagree on the profiles they score")
        self._profile_order = list(hello["profiles"])
        self._profiles = frozenset(self._profile_order)
        self.version = str(hello["version"])
        self.fingerprint = str(hello["fingerprint"])
        self.device_used = str(hello.get("device"))
        self._embedder = embedder_config_from_dict(hello["embedder"])
        self.verdict = verdict_from_hello(hello)
        worker.hello = hello
        worker.reader = asyncio.create_task(self._read_replies(worker), name="predictor-reader")
        log.info(
            "predictor worker %d ready (pid %s, %s, %s, batching %s)",
            worker.index,
            hello.get("pid"),
            self.version,
            self.device_used,
            hello.get("batching"),
        )

    async def close(self) -> None:
        self._closing = True
        for task in list(self._restarts):
            task.cancel()
        for worker in self._workers:
            await self._stop(worker)

    async def _stop(self, worker: _Worker) -> None:
        proc = worker.proc
        worker.fail_all(UNAVAILABLE, "predictor shutting down")
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()  # EOF: the worker finishes and exits
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if worker.reader is not None:
            worker.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker.reader

    async def _read_replies(self, worker: _Worker) -> None:
        proc = worker.proc
        assert proc is not None and proc.stdout is not None
        order = self._profile_order
        try:
            while True:
                body = await _read_frame(proc.stdout)
                if body is None:
                    break
                reply = decode_reply(body)
                for i, item_id in enumerate(reply.ids):
                    fut = worker.pending.pop(item_id, None)
                    if fut is None or fut.done():
                        continue
                    fut.set_result((reply.prediction(i, order), reply.sent))
                for item_id, why in reply.failed.items():
                    fut = worker.pending.pop(item_id, None)
                    if fut is not None and not fut.done():
                        status = TIMEOUT if why == "expired" else ERROR
                        fut.set_exception(_Failed(status, why))
        except Exception:
            log.exception("predictor worker %d: unreadable reply", worker.index)
        code = proc.returncode if proc.returncode is not None else "running"
        worker.fail_all(ERROR, f"predictor worker exited ({code})")
        worker.hello = {}
        if not self._closing:
            log.error("predictor worker %d stopped (%s); restarting it", worker.index, code)
            task = asyncio.create_task(self._restart(worker))
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)

    async def _restart(self, worker: _Worker) -> None:
        delay = 0.5
        if worker.proc is not None and worker.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.kill()
            await worker.proc.wait()
        while not self._closing:
            try:
                await self._spawn(worker)
                self.stats.restarts += 1
                return
            except Exception:
                log.exception("predictor worker %d failed to restart", worker.index)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    # ------------------------------------------------------------------ calls

    def _key(self, prompt: str) -> tuple[str, str]:
        # the static runtime reads the same head + tail window as MiniLM
        text = clip_text(prompt, self._embedder) if self._embedder is not None else prompt  # type: ignore[arg-type]
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(), text

    def _cache_put(self, key: str, value: Prediction) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _submit(self, text: str, deadline: float) -> asyncio.Future[tuple[Prediction, float]]:
        live = [w for w in self._workers if w.alive]
        if not live:
            raise _Failed(UNAVAILABLE, "no predictor worker is running")
        if sum(len(w.pending) for w in live) >= self.max_pending:
            raise _Failed(OVERLOADED, f"{self.max_pending} predictions already waiting")
        worker = min(live, key=lambda w: len(w.pending))
        self._next_id += 1
        fut: asyncio.Future[tuple[Prediction, float]] = asyncio.get_running_loop().create_future()
        worker.pending[self._next_id] = fut
        assert worker.proc is not None and worker.proc.stdin is not None
        worker.proc.stdin.write(encode_request(self._next_id, text, deadline))
        return fut

    async def score(self, prompt: str, timeout_s: float) -> Scored:
        """A prediction for ``prompt`` within ``timeout_s``, or why there is none."""
        t0 = time.monotonic()
        self.stats.calls += 1
        key, text = self._key(prompt)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self.stats.cache_hits += 1
            self.stats.outcomes[OK] += 1
            return Scored(hit, OK, 1000 * (time.monotonic() - t0), cached=True)
        if self._inline is not None:
            return self._score_inline(key, text, t0)
        fut = self._inflight.get(key)
        pred: Prediction | None
        try:
            if fut is not None:
                self.stats.coalesced += 1
            else:
                fut = self._submit(text, t0 + timeout_s)
                self._inflight[key] = fut
                fut.add_done_callback(functools.partial(self._settle, key))
            # The worker enforces the budget (a request it cannot start in time comes back
            # "expired", one answered late is stamped so); the grace past the deadline keeps
            # the event loop's own lag from counting as the predictor's, and gives up on a hang.
            deadline = t0 + timeout_s
            wait = max(deadline - time.monotonic(), 0.0) + self.grace_s
            pred, sent = await asyncio.wait_for(asyncio.shield(fut), wait)
            status, detail = OK, None
            if sent > deadline:  # answered, but after the budget: the predictor was late
                pred, status, detail = None, TIMEOUT, "late"
                self.stats.late += 1
        except TimeoutError:
            pred, status, detail = None, TIMEOUT, "no_answer"
            self.stats.gave_up += 1
        except _Failed as exc:
            pred, status = None, exc.status
            detail = "expired" if exc.status == TIMEOUT else None
            self.stats.expired += exc.status == TIMEOUT
            if exc.status == ERROR:
                log.warning("predictor error: %s; the policy's predictor_fallback applies", exc)
        self.stats.outcomes[status] += 1
        return Scored(pred, status, 1000 * (time.monotonic() - t0), detail=detail)

    def _score_inline(self, key: str, text: str, t0: float) -> Scored:
        try:
            pred = self._inline.predict_batch([text])[0]
            status = OK
            self._cache_put(key, pred)
        except Exception:
            log.exception("predictor error; the policy's predictor_fallback applies")
            pred, status = None, ERROR
        self.stats.outcomes[status] += 1
        return Scored(pred, status, 1000 * (time.monotonic() - t0))

    def _settle(self, key: str, fut: asyncio.Future[tuple[Prediction, float]]) -> None:
        if self._inflight.get(key) is fut:
            del self._inflight[key]
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:  # a late answer is still right: later calls get it from the cache
            self._cache_put(key, fut.result()[0])

    async def predict(self, prompt: str, timeout_s: float) -> Prediction | None:
        """The prediction, or ``None`` when there is none in time (see :meth:`score`)."""
        return (await self.score(prompt, timeout_s)).prediction


async def _read_frame(stream: asyncio.StreamReader) -> bytes | None:
    """One frame's body, or None at end of stream."""
    try:
        head = await stream.readexactly(HEADER.size)
        (n,) = HEADER.unpack(head)
        return await stream.readexactly(n)
    except asyncio.IncompleteReadError:
        return None
