"""The response cache on the request path: look a chat request up before it is routed or
reserves any budget, serve a hit (plain, or re-built as a stream) at zero upstream cost, and
keep a successful answer for the next request (docs/cache.md).

* ``exact`` mode: the answer of the same normalised request of the same tenant
  (``gateway.serve.cache_key``);
* ``semantic`` mode: else the answer of the closest earlier request of the tenant with the same
  shape (all but the last user message the same) whose last user message's embedding — the
  predictor's, the one routing uses — is at least ``cache.similarity`` (cosine) close. Each
  scope keeps its newest ``cache.semantic_entries`` vectors; they are compared here.

Storage is the shared state (``gateway.state``: Redis, shared by every replica, or in-process).
A lookup that fails or takes longer than ``cache.lookup_timeout_ms`` is a miss, never an error;
so is a failed write. Only complete answers are kept: HTTP success, every choice finished with
``stop``, no tool call pending, not rejected by the policy's validators, and at most
``cache.max_entry_bytes``. Temperature does not matter (as in LiteLLM): a cached sampled answer
is reused for the same parameters. A request opts out with the header ``x-tollgate-cache: off``,
``cache-control: no-cache`` / ``no-store``, or ``metadata: {"tollgate_cache": "off"}``.

A hit is recorded as one attempt of the request with cost 0, ``cache_hit`` set and
``cache_saved_usd`` = what the reused answer cost when it was made; no latency is recorded for
it (backends' latency figures stay the backends').
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from gateway.backends.upstream import UpstreamJSON, json_bytes
from gateway.config import BackendConfig
from gateway.config.cache import CacheConfig
from gateway.pricing import format_usd
from gateway.request_record import note_attempt
from gateway.runtime import Runtime
from gateway.serve.cache_key import CacheKeys, request_keys
from gateway.serve.context import RequestContext
from gateway.serve.relay import DONE, StreamEnd, sse
from gateway.snapshot import Route
from gateway.store.keys import now
from predictors.embedding import pack_vector, unpack_vector

log = logging.getLogger("tollgate.cache")

HEADER = "x-tollgate-cache"
OPT_OUT = frozenset({"off", "no-cache", "no-store", "bypass", "false", "0"})
_WARN_EVERY_S = 30.0
_last_warning = 0.0


def _warn(what: str, exc: BaseException) -> None:
    """Log a cache failure at most every 30 s (a Redis outage must not flood the log)."""
    global _last_warning
    if time.monotonic() - _last_warning >= _WARN_EVERY_S:
        _last_warning = time.monotonic()
        log.warning(
            "response cache %s failed (%s: %s); served as a miss", what, type(exc).__name__, exc
        )


def opted_out(headers: Mapping[str, str], body: Mapping[str, Any]) -> bool:
    """The client asked not to use the cache for this request."""
    if headers.get(HEADER, "").strip().lower() in OPT_OUT:
        return True
    control = headers.get("cache-control", "").lower()
    if "no-cache" in control or "no-store" in control:
        return True
    meta = body.get("metadata")
    return isinstance(meta, Mapping) and str(meta.get("tollgate_cache", "")).lower() in OPT_OUT


def cacheable(answer: Mapping[str, Any]) -> bool:
    """A complete chat answer: choices, each finished with ``stop``, no tool call pending."""
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or answer.get("error"):
        return False
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict) or choice.get("finish_reason") != "stop":
            return False
        if message.get("tool_calls") or message.get("function_call"):
            return False
    return True


@dataclass(frozen=True)
class Cached:
    """A cached answer and where it came from."""

    body: dict[str, Any]
    raw: bytes  # the answer's JSON, as served
    backend: str
    model: str
    cost_usd: Decimal | None  # what the answer cost when it was made (None: unpriced)
    how: str  # exact | semantic
    similarity: float | None = None


def _encode(raw: bytes, backend: BackendConfig, cost: Decimal | None) -> str:
    meta = {"backend": backend.name, "model": backend.model, "cost_usd": format_usd(cost)}
    return '{"meta":' + json.dumps(meta) + ',"body":' + raw.decode("utf-8") + "}"


def _decode(value: str, how: str, similarity: float | None = None) -> Cached | None:
    try:
        # written by _encode: the meta object, then the answer's own JSON up to the last "}"
        cut = value.index(',"body":')
        meta, raw = json.loads(value[len('{"meta":') : cut]), value[cut + 8 : -1].encode()
        body = json.loads(raw)
        cost = None if meta["cost_usd"] == "unpriced" else Decimal(meta["cost_usd"])
        return Cached(body, raw, meta["backend"], meta["model"], cost, how, similarity)
    except (ValueError, KeyError, TypeError, ArithmeticError):
        return None  # not an entry this version wrote: a miss


def _unit(vector: Any) -> np.ndarray | None:
    v = np.asarray(vector, dtype=np.float32).ravel()
    norm = float(np.linalg.norm(v)) if v.size else 0.0
    return v / norm if norm > 0 and np.isfinite(norm) else None


def _closest(query: np.ndarray, vectors: Mapping[str, str]) -> tuple[str, float] | None:
    """The entry whose vector is closest to ``query`` (cosine), and how close."""
    entries, rows = [], []
    for entry, packed in vectors.items():
        try:
            v = unpack_vector(packed)
        except ValueError:
            continue
        if v.shape == query.shape:
            entries.append(entry)
            rows.append(v)
    if not rows:
        return None
    sims = np.stack(rows) @ query
    best = int(np.argmax(sims))
    return entries[best], float(sims[best])


@dataclass
class CacheProbe:
    """The cache's part in one request: how the lookup went (``status``: hit, miss, bypass; ""
    with the cache off), the hit, and what a miss keeps once answered."""

    status: str = ""
    cfg: CacheConfig | None = None
    keys: CacheKeys | None = None
    hit: Cached | None = None
    vector: np.ndarray | None = None  # the query's embedding (semantic mode)
    kept: bool = field(default=False)

    def headers(self) -> dict[str, str]:
        if not self.status:
            return {}
        out = {HEADER: self.status}
        if self.hit is not None:
            out["x-tollgate-backend"] = self.hit.backend
            if self.hit.similarity is not None:
                out["x-tollgate-cache-similarity"] = f"{self.hit.similarity:.4f}"
        return out

    # -- storing a miss's answer ------------------------------------------------------------
    async def keep_answer(
        self, rt: Runtime, ctx: RequestContext, answer: Mapping[str, Any], backend: BackendConfig
    ) -> None:
        """Keep a plain answer that served this (missed) request, if it is cacheable."""
        if self.status != "miss" or self.kept or not cacheable(answer):
            return
        await self._put(rt, ctx, json_bytes(answer), backend)

    async def keep_stream(
        self, rt: Runtime, ctx: RequestContext, end: StreamEnd, backend: BackendConfig, model: Any
    ) -> None:
        """Keep a streamed answer that completed (one choice, ``stop``), as a plain answer."""
        if self.status != "miss" or self.kept or end.status != "ok" or end.finish_reason != "stop":
            return
        if ctx.request.answers != 1:
            return  # the relay joins the text of every choice: only one can be re-built
        body: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(model or backend.model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": end.text},
                    "finish_reason": "stop",
                }
            ],
        }
        if isinstance(end.usage, dict):
            body["usage"] = {k: v for k, v in end.usage.items() if k != "cost_usd"}
        await self._put(rt, ctx, json_bytes(body), backend)

    async def _put(
        self, rt: Runtime, ctx: RequestContext, raw: bytes, backend: BackendConfig
    ) -> None:
        cfg, keys = self.cfg, self.keys
        assert cfg is not None and keys is not None
        self.kept = True
        if len(raw) > cfg.max_entry_bytes:
            return
        ttl_ms = int(cfg.ttl_s * 1000)
        value = _encode(raw, backend, None if ctx.unpriced else ctx.total_cost)
        try:
            async with asyncio.timeout(cfg.lookup_timeout_ms / 1000):
                await rt.state.cache_put(keys.exact, value, ttl_ms)
                if self.vector is not None:
                    packed = pack_vector(self.vector)
                    await rt.state.cache_vector_add(
                        keys.scope, keys.exact, packed, ttl_ms, cfg.semantic_entries
                    )
        except Exception as exc:
            _warn("write", exc)

    # -- serving a hit ------------------------------------------------------------------------
    def record_hit(self, rt: Runtime, ctx: RequestContext) -> Cached:
        """Record the hit as the request's one attempt: zero cost, what it saved."""
        hit = self.hit
        assert hit is not None
        attempt_id = uuid.uuid4().hex
        row: dict[str, Any] = {
            "id": attempt_id,
            "request_id": ctx.request_id,
            "task_id": ctx.task_id,
            "attempt": 1,
            "tenant_id": ctx.principal.tenant_id,
            "key_id": ctx.principal.key_id,
            "endpoint": ctx.endpoint,
            "policy": ctx.policy,
            "backend": hit.backend,
            "model": hit.model,
            "status": "ok",
            "error_type": None,
            "http_status": 200,
            "prompt_tokens": None,
            "completion_tokens": None,
            "usage_source": "cache",
            "cost_usd": Decimal(0),
            "latency_ms": None,
            "ttft_ms": None,
            "streamed": ctx.streamed,
            "fallback_of": None,
            "decision": None,
            "created_at": ctx.started_at,
            "finished_at": now(),
            "cache_hit": True,
            "cache_saved_usd": hit.cost_usd,
        }
        rt.writer.submit_attempt(row)
        note_attempt(row)
        ctx.attempts += 1
        ctx.last_attempt_id = attempt_id
        rt.metrics.cache_lookups.labels(f"{hit.how}_hit").inc()
        if hit.cost_usd:
            rt.metrics.cache_saved.inc(float(hit.cost_usd))
        return hit

    def answer(self) -> UpstreamJSON:
        assert self.hit is not None
        return UpstreamJSON(self.hit.body, self.hit.raw)

    async def chunks(self, ctx: RequestContext) -> AsyncIterator[bytes]:
        """The hit as an SSE stream, as the relay would send it: a role chunk, the content, the
        finishing chunk, the usage chunk if the client asked for it, ``[DONE]``; the last chunk
        carries the request's cost (0) like a relayed stream's."""
        assert self.hit is not None
        body = self.hit.body
        base = {
            "id": body.get("id") or f"chatcmpl-{ctx.request_id}",
            "object": "chat.completion.chunk",
            "created": body.get("created") or int(time.time()),
            "model": body.get("model") or self.hit.model,
        }
        out: list[dict[str, Any]] = []
        for choice in body.get("choices") or []:
            index, message = choice.get("index", 0), choice.get("message") or {}
            delta = {"role": message.get("role", "assistant"), "content": ""}
            out.append(
                {**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]}
            )
            content = {"content": message.get("content") or ""}
            out.append(
                {**base, "choices": [{"index": index, "delta": content, "finish_reason": None}]}
            )
            done = {
                "index": index,
                "delta": {},
                "finish_reason": choice.get("finish_reason", "stop"),
            }
            out.append({**base, "choices": [done]})
        tail = {
            "cost_usd": format_usd(Decimal(0)),
            "attempts": ctx.attempts,
            "request_id": ctx.request_id,
        }
        usage = body.get("usage")
        if ctx.request.forward_usage and isinstance(usage, dict):
            out.append({**base, "choices": [], "usage": {**usage, "cost_usd": tail["cost_usd"]}})
        if out:
            out[-1] = {**out[-1], "x_tollgate": tail}
        for chunk in out:
            yield sse(chunk)
        yield DONE


OFF = CacheProbe()


def _target(route: Route) -> str:
    if route.policy is not None:
        return f"policy:{route.policy}"
    return "backend:" + ",".join(f"{b.name}={b.model}" for b in route.chain)


async def _embed(rt: Runtime, ctx: RequestContext) -> np.ndarray | None:
    """The predictor's embedding of the request's query (None: no predictor, or none in time;
    the predictor's own cache makes the router's call for the same text free)."""
    predictor = rt.predictor
    score = getattr(predictor, "score", None)
    if score is None or not ctx.request.query:
        return None
    scored = await score(ctx.request.query, ctx.snap.config.predictor.timeout_ms / 1000)
    prediction = scored.prediction
    return (
        _unit(prediction.embedding)
        if prediction is not None and prediction.embedding is not None
        else None
    )


async def probe(rt: Runtime, ctx: RequestContext, route: Route) -> CacheProbe:
    """Look the request up (before routing and the budget): a hit to serve, or a miss that
    remembers where to keep its answer."""
    cfg = ctx.snap.config.cache
    request = ctx.request
    if cfg.mode == "off" or request.endpoint != "chat":
        return OFF
    if opted_out(request.headers, request.body):
        rt.metrics.cache_lookups.labels("bypass").inc()
        return CacheProbe("bypass", cfg)
    keys = request_keys(ctx.principal.tenant_id, _target(route), request.body)
    found = CacheProbe("miss", cfg, keys)
    try:
        async with asyncio.timeout(cfg.lookup_timeout_ms / 1000):
            value = await rt.state.cache_get(keys.exact)
            if value is not None:
                found.hit = _decode(value, "exact")
            elif cfg.mode == "semantic":
                found.vector = await _embed(rt, ctx)
                if found.vector is not None:
                    best = _closest(found.vector, await rt.state.cache_vectors(keys.scope))
                    if best is not None and best[1] >= cfg.similarity:
                        value = await rt.state.cache_get(best[0])
                        if value is not None:
                            found.hit = _decode(value, "semantic", best[1])
    except Exception as exc:
        _warn("lookup", exc)
    if found.hit is not None:
        found.status = "hit"
    else:
        rt.metrics.cache_lookups.labels("miss").inc()
    return found
