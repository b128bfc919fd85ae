"""Response cache latency: what a client waits for a miss, an exact hit and a semantic hit.

A real ``tollgate serve`` (the shipped predictor, for the semantic cache's embeddings) in front
of the fake upstream with a fixed latency (``--upstream-ms``, default 50 ms); one client sends
requests one at a time (keep-alive) and the table shows p50/p95/mean per kind:

* ``bypass``: the cache skipped (``x-tollgate-cache: off``): the upstream's latency plus the
  gateway's own overhead;
* ``miss``: a new question (looked up, then answered by the upstream and kept; in semantic mode
  the lookup includes the embedding);
* ``exact hit``: the same request again;
* ``semantic hit``: a paraphrase of a cached question (cosine >= ``--similarity`` by the
  predictor's embedding); paraphrases that did not reach it are counted as misses (``hit %``);
* ``stream hit``: the same request with ``stream: true``, served as SSE from the cache.

Each round uses another ``temperature`` (part of the key and of the semantic scope), so every
round starts with cold entries. ``--redis URL`` keeps the cache in Redis (throw-away prefix)
instead of the gateway process. Run it alone: ``flock /tmp/heavy.lock python -m bench.cache``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.loadgen import percentile
from bench.routed_load import HOST, Processes, base_env, tollgate_cmd, wait_ready
from gateway.devtools.fake_upstream import FakeUpstream, free_port

# (question, paraphrase): distinct topics, so that only a question's own paraphrase is close
PAIRS = [
    ("What is the capital of France?", "what's the capital of France"),
    ("How do I bake sourdough bread at home?", "how can I bake sourdough bread at home"),
    ("Write a haiku about the sea.", "write a haiku about the ocean sea"),
    ("Explain how a hash table works.", "explain how hash tables work"),
    ("What causes the seasons on Earth?", "what causes Earth's seasons"),
    ("Translate 'good morning' into Spanish.", "translate good morning to Spanish"),
    ("How many legs does a spider have?", "how many legs do spiders have"),
    ("Give me three tips for a job interview.", "give me 3 tips for job interviews"),
    ("What is the boiling point of water in Celsius?", "boiling point of water in celsius?"),
    ("Summarise the plot of Romeo and Juliet.", "summarize the plot of Romeo and Juliet"),
    ("How does photosynthesis work?", "how does photosynthesis work in plants"),
    ("What is the difference between TCP and UDP?", "difference between TCP and UDP?"),
    ("Recommend a good book about astronomy.", "recommend a good astronomy book"),
    ("How do I reverse a list in Python?", "how to reverse a Python list"),
    ("Why is the sky blue?", "why is the sky blue in color"),
    ("What are the symptoms of the flu?", "what are flu symptoms"),
    ("How far is the Moon from the Earth?", "how far away is the moon from earth"),
    ("Suggest a name for a pet goldfish.", "suggest a name for my pet goldfish"),
    ("What is compound interest?", "what's compound interest"),
    ("How do vaccines train the immune system?", "how do vaccines train our immune system"),
]


@dataclass
class Samples:
    ms: list[float] = field(default_factory=list)
    other: int = 0  # answers whose x-tollgate-cache was not the expected one

    def pct(self, q: float) -> float | None:
        return percentile(self.ms, q)


async def send(
    session: aiohttp.ClientSession, base: str, text: str, temperature: float, **kw: Any
) -> tuple[float, str]:
    body = {
        "model": "fake",
        "temperature": temperature,
        "messages": [{"role": "user", "content": text}],
        **kw.pop("body", {}),
    }
    t0 = time.perf_counter()
    async with session.post(base + "/v1/chat/completions", json=body, **kw) as resp:
        await resp.read()
        ms = (time.perf_counter() - t0) * 1000
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
        return ms, resp.headers.get("x-tollgate-cache", "")


async def measure(base: str, rounds: int) -> dict[str, Samples]:
    kinds = {k: Samples() for k in ("bypass", "miss", "exact hit", "semantic hit", "stream hit")}
    async with aiohttp.ClientSession() as session:
        for r in range(rounds + 1):  # round 0 warms up (connections, first embeddings)
            temp = round(0.01 * (r + 1), 2)

            async def note(
                kind: str,
                expect: str,
                text: str,
                temp: float = temp,
                warm: bool = r == 0,
                **kw: Any,
            ) -> None:
                ms, got = await send(session, base, text, temp, **kw)
                if warm:
                    return
                if got == expect:
                    kinds[kind].ms.append(ms)
                else:
                    kinds[kind].other += 1

            for q, _ in PAIRS:
                await note("bypass", "bypass", q, headers={"x-tollgate-cache": "off"})
            for q, _ in PAIRS:
                await note("miss", "miss", q)
            for q, _ in PAIRS:
                await note("exact hit", "hit", q)
            for _, p in PAIRS:
                await note("semantic hit", "hit", p)
            for q, _ in PAIRS:
                await note("stream hit", "hit", q, body={"stream": True})
    return kinds


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def print_table(kinds: dict[str, Samples], args: argparse.Namespace, where: str) -> None:
    print(
        f"\nresponse cache latency ({where}; upstream {args.upstream_ms:.0f} ms; "
        f"similarity {args.similarity}; {args.rounds} rounds x {len(PAIRS)} questions)"
    )
    print(f"{'kind':<14}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}{'as expected':>13}")
    for kind, s in kinds.items():
        total = len(s.ms) + s.other
        mean = statistics.fmean(s.ms) if s.ms else None
        share = f"{len(s.ms) / total:.0%}" if total else "-"
        print(
            f"{kind:<14}{len(s.ms):>5}{fmt(s.pct(0.5)):>10}{fmt(s.pct(0.95)):>10}"
            f"{fmt(mean):>10}{share:>13}"
        )


async def main_async(args: argparse.Namespace) -> int:
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="tg-bench-cache-"))
    try:
        with FakeUpstream(port=0, latency_ms=args.upstream_ms) as upstream:
            port = free_port()
            cfg = {
                "backends": [
                    {
                        "name": "fake",
                        "model": "openai/fake-model",
                        "api_base": upstream.base_url,
                        "input_cost_per_token": "0.000001",
                        "output_cost_per_token": "0.000002",
                        "max_retries": 0,
                    }
                ],
                "predictor": {"enabled": True, "timeout_ms": 1000},
                "store": {"spool_dir": str(tmp / "spool")},
                "server": {"anonymous_tenant": "bench", "access_log": False},
                "cache": {"mode": "semantic", "ttl_s": 600, "similarity": args.similarity},
            }
            env = {**base_env(), "TOLLGATE_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}"}
            env["TOLLGATE_REDIS_URL"] = args.redis or ""
            if args.redis:
                cfg["redis"] = {"key_prefix": f"tgbench:{uuid.uuid4().hex[:8]}:"}
            (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
            log = tmp / "tollgate.log"
            cmd = [*tollgate_cmd(), "serve", "--config", str(tmp / "config.yaml")]
            cmd += ["--host", HOST, "--port", str(port), "--log-level", "warning"]
            proc = procs.spawn(cmd, env, log)
            base = f"http://{HOST}:{port}"
            async with aiohttp.ClientSession() as session:
                await wait_ready(session, base + "/readyz", proc, log, 180)
            kinds = await measure(base, args.rounds)
            calls = upstream.stats()["total_requests"]
        print_table(kinds, args, "Redis" if args.redis else "in-process")
        print(
            f"upstream calls: {calls} (bypass + miss + paraphrases that missed, warm-up included)"
        )
        return 0
    finally:
        procs.stop_all()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--upstream-ms", type=float, default=50.0)
    ap.add_argument("--similarity", type=float, default=0.9)
    ap.add_argument("--redis", default=None, help="Redis URL (throw-away key prefix)")
    return asyncio.run(main_async(ap.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
