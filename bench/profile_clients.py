"""Which HTTP client the fast path uses: httpx vs aiohttp, CPU per request under concurrency.

This module owns ``python -m bench.profile_clients``: against the fake upstream (fixed
latency), one process keeps ``c`` requests in flight with each client for ``--duration``
seconds (after a warm-up, so pool set-up and imports are not counted) and prints requests/s
and the client's CPU per request. That CPU is what the gateway would spend in its upstream
client per call; ``gateway/backends/openai_http.py`` uses aiohttp because of this table
(httpx/httpcore's pool scans every connection on every request, so its cost grows with the
number in flight).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gateway.devtools.fake_upstream import FakeUpstream  # noqa: E402

BODY = json.dumps(
    {"model": "fake-model", "messages": [{"role": "user", "content": "hello there"}]}
).encode()
HEADERS = {"content-type": "application/json"}


async def drive(one: Callable[[], Awaitable[None]], conc: int, dur: float) -> tuple[float, float]:
    done = 0
    stop = time.perf_counter() + dur

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await one()
            done += 1

    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    wall = time.perf_counter() - t0
    return done / wall, (time.process_time() - c0) / max(done, 1) * 1000


async def measure(url: str, kind: str, conc: int, dur: float) -> tuple[float, float]:
    if kind == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
        client = httpx.AsyncClient(limits=limits, timeout=10, trust_env=False)

        async def one() -> None:
            (await client.post(url, content=BODY, headers=HEADERS)).read()

        try:
            await drive(one, conc, 1.0)
            return await drive(one, conc, dur)
        finally:
            await client.aclose()
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc))

    async def one_aio() -> None:
        async with session.post(url, data=BODY, headers=HEADERS) as resp:
            await resp.read()

    try:
        await drive(one_aio, conc, 1.0)
        return await drive(one_aio, conc, dur)
    finally:
        await session.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--concurrency", default="8,32,64")
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--latency-ms", type=float, default=20.0)
    args = p.parse_args(argv)
    import uvloop

    print(f"{'client':>8} {'in flight':>9} {'req/s':>8} {'client CPU ms/req':>18}")
    with FakeUpstream(latency_ms=args.latency_ms) as upstream:
        url = upstream.base_url + "/chat/completions"
        for conc in (int(c) for c in args.concurrency.split(",")):
            for kind in ("httpx", "aiohttp"):
                rps, cpu = uvloop.run(measure(url, kind, conc, args.duration))
                print(f"{kind:>8} {conc:>9} {rps:8.0f} {cpu:18.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
