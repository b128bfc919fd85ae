"""Live load of self-hosted inference engines, read from each engine's own standard endpoint.

One reader per ``self_hosted.engine``:

- ``vllm``: Prometheus ``/metrics`` — ``vllm:num_requests_running``, ``vllm:num_requests_waiting``
  and ``vllm:kv_cache_usage_perc`` (a fraction despite the name; older releases call it
  ``vllm:gpu_cache_usage_perc``).
- ``sglang``: Prometheus ``/metrics`` — ``sglang:num_running_reqs``, ``sglang:num_queue_reqs``,
  ``sglang:token_usage`` (KV-cache token fraction).
- ``llamacpp``: llama.cpp ``llama-server``'s Prometheus ``/metrics`` (``--metrics``) —
  ``llamacpp:requests_processing``, ``llamacpp:requests_deferred``,
  ``llamacpp:kv_cache_usage_ratio``; else its ``/slots`` list (busy slots, total slots).
- ``tgi``: Prometheus ``/metrics`` — ``tgi_batch_current_size``, ``tgi_queue_size``.
- ``trtllm``: ``trtllm-serve``'s ``/metrics`` JSON iteration statistics
  (``numActiveRequests``, ``numQueuedRequests``, ``kvCacheStats``).
- ``openai``: any other OpenAI-compatible server; it publishes no load, so the gateway's own
  in-flight count is all there is (``gateway.capacity``).

The endpoints live on the ``api_base`` host (``http://host:port/v1`` → ``http://host:port/metrics``)
unless ``self_hosted.metrics_url`` names another. Readers never raise for an engine that is down
or does not publish a metric: a missing value is ``None`` (unknown), never zero.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

ENGINES = ("vllm", "sglang", "llamacpp", "tgi", "trtllm", "openai")


@dataclass(frozen=True)
class EngineLoad:
    """One reading of an engine's load. ``None`` fields: the engine does not publish them."""

    running: int | None
    waiting: int | None
    kv_cache_usage: float | None  # fraction of the KV cache in use, 0..1
    slots: int | None = None  # concurrent sequences the engine serves (llama.cpp slots)
    source: str = ""  # the URL read
    read_at: float = 0.0  # wall-clock seconds (time.time()), comparable across replicas

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> EngineLoad:
        data = json.loads(raw)
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


# --------------------------------------------------------------------------- endpoints


def server_root(api_base: str) -> str:
    """``http://host:port/v1`` → ``http://host:port`` (the engine's own routes live there)."""
    parts = urlsplit(api_base)
    path = re.sub(r"/v\d+/?$", "", parts.path.rstrip("/"))
    return urlunsplit((parts.scheme or "http", parts.netloc, path, "", ""))


def load_urls(engine: str, api_base: str | None, metrics_url: str | None = None) -> list[str]:
    """The URLs a reader tries, in order (empty: the engine publishes no load)."""
    if engine == "openai":
        return [metrics_url] if metrics_url else []
    if metrics_url:
        return [metrics_url]
    if not api_base:
        return []
    root = server_root(api_base)
    if engine == "llamacpp":
        return [f"{root}/metrics", f"{root}/slots"]
    return [f"{root}/metrics"]


# --------------------------------------------------------------------------- parsing

_SAMPLE = re.compile(
    r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$"
)


def parse_prometheus(text: str) -> dict[str, list[float]]:
    """Prometheus text exposition → metric name → the values of its samples (one per label set).

    Comments, ``_created`` timestamps and unparsable lines are skipped; NaN samples dropped.
    """
    out: dict[str, list[float]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        try:
            value = float(match.group("value"))
        except ValueError:
            continue
        if math.isnan(value):
            continue
        out.setdefault(match.group("name"), []).append(value)
    return out


def _sum(metrics: dict[str, list[float]], *names: str) -> float | None:
    """Sum over label sets (data-parallel engines publish one series per rank) of the first
    name present."""
    for name in names:
        if name in metrics:
            return sum(metrics[name])
    return None


def _max(metrics: dict[str, list[float]], *names: str) -> float | None:
    for name in names:
        if name in metrics:
            return max(metrics[name])
    return None


def _int(value: float | None) -> int | None:
    return None if value is None else round(value)


def _fraction(value: float | None) -> float | None:
    if value is None:
        return None
    return value / 100 if value > 1.0 else value  # some exporters give a percentage


PROMETHEUS_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    # engine: (running, waiting, kv usage) metric names, newest first
    "vllm": (
        ("vllm:num_requests_running",),
        ("vllm:num_requests_waiting",),
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    ),
    "sglang": (
        ("sglang:num_running_reqs",),
        ("sglang:num_queue_reqs",),
        ("sglang:token_usage",),
    ),
    "llamacpp": (
        ("llamacpp:requests_processing",),
        ("llamacpp:requests_deferred",),
        ("llamacpp:kv_cache_usage_ratio",),
    ),
    "tgi": (("tgi_batch_current_size",), ("tgi_queue_size",), ()),
}


def load_from_prometheus(engine: str, text: str, source: str = "") -> EngineLoad | None:
    """An engine's load from its Prometheus text; None when none of its metrics are there."""
    names = PROMETHEUS_NAMES.get(engine)
    if names is None:
        return None
    metrics = parse_prometheus(text)
    running = _sum(metrics, *names[0])
    waiting = _sum(metrics, *names[1])
    kv = _fraction(_max(metrics, *names[2])) if names[2] else None
    if running is None and waiting is None and kv is None:
        return None
    return EngineLoad(_int(running), _int(waiting), kv, source=source, read_at=time.time())


def load_from_slots(slots: Any, source: str = "") -> EngineLoad | None:
    """llama.cpp ``/slots``: a list of slots, busy when ``is_processing`` (older: ``state`` 1)."""
    if not isinstance(slots, list) or not all(isinstance(s, dict) for s in slots):
        return None
    busy = sum(1 for s in slots if s.get("is_processing") or s.get("state") == 1)
    return EngineLoad(busy, None, None, slots=len(slots), source=source, read_at=time.time())


def load_from_trtllm_stats(stats: Any, source: str = "") -> EngineLoad | None:
    """``trtllm-serve`` ``/metrics``: a list of per-iteration statistics; the last one counts."""
    if isinstance(stats, list):
        stats = stats[-1] if stats else None
    if not isinstance(stats, dict):
        return None
    running = stats.get("numActiveRequests")
    waiting = stats.get("numQueuedRequests")
    kv: float | None = None
    cache = stats.get("kvCacheStats") or {}
    if isinstance(cache, dict) and cache.get("maxNumBlocks"):
        kv = float(cache.get("usedNumBlocks", 0)) / float(cache["maxNumBlocks"])
    if running is None and waiting is None and kv is None:
        return None
    return EngineLoad(
        None if running is None else int(running),
        None if waiting is None else int(waiting),
        kv,
        source=source,
        read_at=time.time(),
    )


def parse_load(engine: str, body: str, content_type: str, source: str) -> EngineLoad | None:
    """Whatever one load URL answered → a reading (None: nothing this engine publishes)."""
    text = body.lstrip()
    if text.startswith(("[", "{")) or "json" in content_type:
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if engine == "trtllm":
            return load_from_trtllm_stats(data, source)
        if engine == "llamacpp":
            return load_from_slots(data, source)
        return None
    return load_from_prometheus(engine, body, source)


# --------------------------------------------------------------------------- reading


class NoLoadEndpoint(Exception):
    """The engine answered, but publishes none of the load it is read for (e.g. 404)."""


async def read_load(
    client: httpx.AsyncClient, engine: str, urls: list[str], timeout_s: float = 1.0
) -> EngineLoad | None:
    """Read the first URL that answers with load. None: the engine is unreachable now.

    Raises ``NoLoadEndpoint`` when the engine is up but none of its URLs publishes load, so the
    caller can stop asking for a while instead of polling a 404 every second.
    """
    reached = False
    for url in urls:
        try:
            resp = await client.get(url, timeout=timeout_s)
        except (httpx.HTTPError, OSError):
            continue
        reached = True
        if resp.status_code != 200:
            continue
        load = parse_load(engine, resp.text, resp.headers.get("content-type", ""), url)
        if load is not None:
            return load
    if reached:
        raise NoLoadEndpoint(f"{engine}: no load published at {', '.join(urls)}")
    return None
