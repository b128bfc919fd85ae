"""The client side that the HTTP load benchmarks share: the open-loop request driver and the
percentile their tables print.

This module owns sending an open-loop load (``bench/overhead.py``'s ``--rate`` rows,
``bench/latency_breakdown.py``) and reading percentiles off the latencies the benchmarks
measure (``bench/routed_load.py``, ``bench/cache.py``, ``bench/latency_breakdown.py``). The
closed loops live with their benchmarks (``bench/wrk.py``, ``bench/routed_load.py``'s workers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-quantile (0 <= q <= 1) of ``values`` as one of them, no interpolation: the one
    at index ``floor(q * n)`` once sorted (the last one for q = 1); None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def open_loop(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    rate: float,
    duration_s: float,
    answered: Callable[[float, float, Mapping[str, str], bytes], None],
) -> int:
    """POST ``body`` to ``url`` ``rate`` times a second for ``duration_s`` whatever the answers
    (no coordinated omission). Each 200 answer is handed to ``answered(at, done, headers, raw)``:
    ``at`` is the request's scheduled send time and ``done`` the time its whole body was read,
    both ``time.monotonic()`` (``CLOCK_MONOTONIC``, which every process on the host shares).
    Returns how many requests got another status, a connection error or a timeout (30 s each;
    the driver stops waiting 40 s after the last send)."""
    import aiohttp

    headers = dict(headers)
    failed = 0
    n = max(1, int(rate * duration_s))
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(at: float) -> None:
            nonlocal failed
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    raw = await resp.read()
                    done = time.monotonic()
                    if resp.status == 200:
                        answered(at, done, resp.headers, raw)
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            failed += 1

        tasks = []
        t0 = time.monotonic() + 0.05
        for i in range(n):
            at = t0 + i / rate
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(at)))
        await asyncio.wait(tasks, timeout=40)
    return failed
