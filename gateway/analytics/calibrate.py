"""Calibrating a self-hosted backend: the sweep of rising concurrency that measures it.

The driver sends a realistic prompt mix (``gateway.analytics.prompt_mix``) as streamed
chat completions, closed-loop, at concurrency 1, 2, 4, … until the server saturates, then a
prefill probe (the same mix with ``max_tokens=1``) at the operating point. Every prompt starts
with a random nonce so prefix caches cannot flatter the numbers. What the measurements give —
each point's statistics, the operating point under the SLO, the price identity, the table — is
``gateway.analytics.calibration_stats``'.

Imports only the standard library and httpx, so it also runs alone on a GPU machine
(``bench/gpu_calibrate.py``); storing results is ``gateway.store.calibrations``' job.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import asdict
from typing import Any

import httpx

from gateway.analytics.calibration_stats import (
    Calibration,
    Point,
    Sample,
    choose,
    prices,
    saturated,
    summarise,
)
from gateway.analytics.prompt_mix import Prompt

LEVELS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# litellm provider prefixes of OpenAI-compatible servers: the served name is what follows
OPENAI_COMPATIBLE_PREFIXES = frozenset(
    {"hosted_vllm", "openai", "custom_openai", "text-completion-openai", "llamafile", "lm_studio"}
)


def served_model_name(model: str) -> str:
    """The name the server knows a model by: a litellm string minus its provider prefix."""
    prefix, _, rest = model.partition("/")
    return rest if rest and prefix in OPENAI_COMPATIBLE_PREFIXES else model


# --------------------------------------------------------------------------- one request


async def stream_one(
    client: httpx.AsyncClient,
    url: str,
    model: str,
    prompt: Prompt,
    *,
    headers: dict[str, str] | None = None,
    max_tokens: int | None = None,
    timeout_s: float = 300.0,
) -> Sample:
    """One streamed chat completion: time to first token, latency and usage."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"[{uuid.uuid4().hex[:12]}] {prompt.text}"}],
        "max_tokens": max_tokens or prompt.max_tokens,
        "temperature": 0.7,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    ttft: float | None = None
    usage: dict[str, Any] | None = None
    chunks = 0
    try:
        async with client.stream(
            "POST", url, json=body, headers=headers or {}, timeout=timeout_s
        ) as resp:
            if resp.status_code != 200:
                detail = (await resp.aread()).decode("utf-8", "replace")[:200]
                return Sample(False, time.perf_counter() - t0, error=f"{resp.status_code} {detail}")
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content") or delta.get("reasoning_content"):
                        chunks += 1
                        if ttft is None:
                            ttft = time.perf_counter() - t0
    except (httpx.HTTPError, OSError, ValueError) as exc:
        return Sample(False, time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}")
    latency = time.perf_counter() - t0
    if usage and usage.get("completion_tokens") is not None:
        return Sample(
            True,
            latency,
            ttft,
            int(usage.get("prompt_tokens") or 0),
            int(usage["completion_tokens"]),
        )
    return Sample(True, latency, ttft, max(1, len(prompt.text) // 4), chunks, counted=True)


# --------------------------------------------------------------------------- one point


async def run_point(
    client: httpx.AsyncClient,
    url: str,
    model: str,
    mix: list[Prompt],
    concurrency: int,
    requests: int,
    *,
    offset: int = 0,
    max_seconds: float = 120.0,
    max_tokens: int | None = None,
    headers: dict[str, str] | None = None,
) -> Point:
    """``concurrency`` closed-loop workers send ``requests`` prompts (fewer if ``max_seconds``
    passes first: no new request starts after it)."""
    samples: list[Sample] = []
    issued = 0
    t0 = time.perf_counter()

    async def worker() -> None:
        nonlocal issued
        while issued < requests and time.perf_counter() - t0 < max_seconds:
            prompt = mix[(offset + issued) % len(mix)]
            issued += 1
            samples.append(
                await stream_one(client, url, model, prompt, headers=headers, max_tokens=max_tokens)
            )

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summarise(concurrency, samples, time.perf_counter() - t0)


# --------------------------------------------------------------------------- the run


async def calibrate(
    *,
    api_base: str,
    model: str,
    backend: str,
    engine: str,
    gpu_hour_usd: float,
    gpus: int = 1,
    mix: list[Prompt],
    mix_name: str,
    slo_p95_ms: float = 20_000.0,
    max_concurrency: int = 64,
    requests_per_worker: int = 3,
    min_requests: int = 8,
    max_seconds_per_point: float = 120.0,
    api_key: str | None = None,
    progress: Any = None,
) -> Calibration:
    """Run the points, the prefill probe, and derive the price (see the module docstring)."""
    url = api_base.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    levels = [c for c in LEVELS if c <= max_concurrency] or [1]
    limits = httpx.Limits(max_connections=max(levels) + 4, max_keepalive_connections=max(levels))
    points: list[Point] = []
    offset = 0
    async with httpx.AsyncClient(limits=limits) as client:
        warm = await stream_one(client, url, model, mix[0], headers=headers, max_tokens=8)
        if not warm.ok:
            raise RuntimeError(f"{url} does not answer a chat completion: {warm.error}")
        for level in levels:
            n = max(min_requests, requests_per_worker * level)
            point = await run_point(
                client, url, model, mix, level, n,
                offset=offset, max_seconds=max_seconds_per_point, headers=headers,
            )  # fmt: skip
            offset += point.requests
            points.append(point)
            if progress is not None:
                progress(point)
            if saturated(points, slo_p95_ms):
                break
        chosen, slo_met = choose(points, slo_p95_ms)
        probe = await run_point(
            client, url, model, mix, chosen.concurrency,
            max(min_requests, requests_per_worker * chosen.concurrency),
            offset=offset, max_seconds=max_seconds_per_point, max_tokens=1, headers=headers,
        )  # fmt: skip
    if probe.errors == probe.requests:
        raise RuntimeError(f"the prefill probe failed: {probe.first_error}")
    prefill = probe.input_tokens_per_second
    money = prices(chosen, prefill, gpu_hour_usd, gpus)
    return Calibration(
        backend=backend,
        engine=engine,
        model=model,
        gpu_hour_usd=gpu_hour_usd,
        gpus=gpus,
        slo_p95_ms=slo_p95_ms,
        slo_met=slo_met,
        concurrency=chosen.concurrency,
        output_tokens_per_second=chosen.output_tokens_per_second,
        input_tokens_per_second=chosen.input_tokens_per_second,
        requests_per_second=chosen.requests_per_second,
        ttft_p95_ms=chosen.ttft_p95_ms,
        latency_p95_ms=chosen.latency_p95_ms,
        prefill_tokens_per_second=prefill,
        mix=mix_name,
        points=[asdict(p) for p in points],
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **money,  # type: ignore[arg-type]
    )
