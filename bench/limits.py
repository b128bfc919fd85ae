"""Rate-limit accuracy: how many requests and tokens two gateway replicas on one Redis admit
per minute, against the key's limit (issue 13).

Starts the fake upstream, ``--gateways`` ``tollgate serve`` processes sharing one Redis (a
throw-away key prefix, deleted afterwards) and one SQLite store, and two keys made with the CLI:
one with ``--rpm``, one with ``--tpm``. Then, for ``--duration`` seconds (more than one minute,
so the window rolls over), ``--clients`` concurrent clients per key send chat requests as fast
as they can, spread over the replicas (a client that gets a 429 pauses ``--pause-ms``).

Printed, per limit and per window (window 1: the first 60 s; window 2: from 60 s to the end):

* admitted: requests answered 200 (RPM) or the tokens they really used (TPM);
* expected: the limit in window 1; in window 2 what slid out of the sliding window meanwhile
  (the admissions of the first ``duration - 60`` seconds), so ``admitted/expected`` is the
  accuracy of the sliding window: 1.000 when exact for requests; for tokens a little under,
  since a request is refused when its *reservation* (prompt + ``--max-tokens``) does not fit;
* max in any 60 s: the most admitted in any 60-second span, timed on the client clock at the
  midpoint of request and answer (Redis's clock decides: a few ms of skew either way);
* refused (429) and ``upstream``: calls the fake upstream really got for the key (a refused
  request must never reach it).

    flock /tmp/heavy.lock python -m bench.limits                 # ~2 minutes
    python -m bench.limits --rpm 500 --tpm 60000 --clients 24 --duration 75
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.gateway_process import GatewayProcess  # noqa: E402
from gateway.devtools.fake_upstream import FakeUpstream  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"
WINDOW_S = 60.0
PROMPT = "please summarise the quarterly report in three short bullet points for the team"


@dataclass
class Run:
    """What the clients of one key saw: (time, status, tokens used) per request; the time is
    the midpoint of sending and answer, seconds from the start."""

    name: str
    limit: int
    sent: list[tuple[float, int, int]] = field(default_factory=list)

    def admitted(self) -> list[tuple[float, int]]:
        return sorted((t, tok) for t, status, tok in self.sent if status == 200)

    def refused(self) -> int:
        return sum(1 for _, status, _ in self.sent if status == 429)

    def other(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for _, status, _ in self.sent:
            if status not in (200, 429):
                out[status] = out.get(status, 0) + 1
        return out


def tollgate(gateway: GatewayProcess, *args: str) -> str:
    """The last line ``tollgate <args>`` prints (on the gateways' config)."""
    done = gateway.cli(*args)
    if done.returncode != 0:
        raise RuntimeError(f"tollgate {' '.join(args)}: {done.stderr}")
    return done.stdout.strip().splitlines()[-1]


async def hammer(
    run: Run, key: str, urls: list[str], args: argparse.Namespace, t0: float, end: float
) -> None:
    headers = {"authorization": f"Bearer {key}"}
    body = {
        "model": "fake",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": args.max_tokens,
    }
    limits = httpx.Limits(max_connections=args.clients * 2)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def client_loop(i: int) -> None:
            n = 0
            while time.monotonic() < end:
                url = urls[(i + n) % len(urls)] + "/v1/chat/completions"
                n += 1
                sent = time.monotonic()
                try:
                    r = await client.post(url, json=body, headers=headers)
                except httpx.HTTPError:
                    run.sent.append((sent - t0, -1, 0))
                    continue
                # Redis admitted it between send and answer: the midpoint, on the client clock
                at = (sent + time.monotonic()) / 2 - t0
                tokens = 0
                if r.status_code == 200:
                    usage = r.json().get("usage") or {}
                    tokens = int(usage.get("prompt_tokens", 0)) + int(
                        usage.get("completion_tokens", 0)
                    )
                run.sent.append((at, r.status_code, tokens))
                if r.status_code == 429:
                    await asyncio.sleep(args.pause_ms / 1000)

        await asyncio.gather(*(client_loop(i) for i in range(args.clients)))


def max_in_window(points: list[tuple[float, int]], weight: bool, span: float = WINDOW_S) -> int:
    """The most admitted (requests, or tokens when ``weight``) in any ``span`` seconds."""
    times = [t for t, _ in points]
    prefix = [0]
    for _, tok in points:
        prefix.append(prefix[-1] + (tok if weight else 1))
    best = 0
    for j, t in enumerate(times):
        i = bisect.bisect_right(times, t - span)
        best = max(best, prefix[j + 1] - prefix[i])
    return best


def skew_ms(run: Run, weight: bool) -> int:
    """How much shorter than 60 s a span must be for the client-clock maximum to be within the
    limit: the timing skew between the client's clock and Redis's (0: none needed)."""
    points = run.admitted()
    for ms in range(0, 2001, 5):
        if max_in_window(points, weight, WINDOW_S - ms / 1000) <= run.limit:
            return ms
    return -1


def rows_for(run: Run, kind: str, duration: float) -> list[list[str]]:
    points = run.admitted()
    weight = kind == "TPM"

    def total(lo: float, hi: float) -> int:
        return sum((tok if weight else 1) for t, tok in points if lo <= t < hi)

    w1 = total(0, WINDOW_S)
    w2 = total(WINDOW_S, duration)
    slid_out = total(0, duration - WINDOW_S)
    peak = max_in_window(points, weight)
    rows = [
        [kind, f"1 (0-{WINDOW_S:.0f} s)", str(run.limit), str(w1), f"{w1 / run.limit:.3f}"],
    ]
    ratio = f"{w2 / slid_out:.3f}" if slid_out else "-"
    rows.append([kind, f"2 ({WINDOW_S:.0f}-{duration:.0f} s)", str(slid_out), str(w2), ratio])
    rows.append(
        [kind, "any 60 s, client clock (max)", str(run.limit), str(peak), f"{peak / run.limit:.3f}"]
    )
    return rows


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


async def cleanup_redis(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gateways", type=int, default=2)
    p.add_argument("--clients", type=int, default=12, help="concurrent clients per key")
    p.add_argument("--rpm", type=int, default=300)
    p.add_argument("--tpm", type=int, default=20_000)
    p.add_argument("--max-tokens", type=int, default=200, help="reserved output per request")
    p.add_argument("--completion-tokens", type=int, default=48, help="what the upstream answers")
    p.add_argument("--duration", type=float, default=75.0, help="seconds (> 60: roll-over)")
    p.add_argument("--pause-ms", type=float, default=100.0, help="a client's pause after a 429")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-limits-"))
    prefix = f"tgbench:{uuid.uuid4().hex[:8]}:"
    gateways: list[GatewayProcess] = []
    try:
        with FakeUpstream(port=0, completion_tokens=args.completion_tokens) as upstream:
            cfg = {
                "backends": [
                    {
                        "name": "fake",
                        "model": "openai/fake-model",
                        "api_base": upstream.base_url,
                        "api_key": "os.environ/FAKE_KEY",
                        "input_cost_per_token": "0.000001",
                        "output_cost_per_token": "0.000002",
                        "max_retries": 0,
                    }
                ],
                "predictor": {"enabled": False},
                "store": {"spool_dir": str(work / "spool")},
                "server": {"access_log": False},
                "redis": {"key_prefix": prefix},
            }
            env = {
                "FAKE_KEY": "k",
                "TOLLGATE_DATABASE_URL": f"sqlite:///{work}/store.db",
                "TOLLGATE_REDIS_URL": REDIS_URL,
            }
            gateways = [
                GatewayProcess(cfg, work, env, ("--log-level", "warning"), name=f"gateway-{i}")
                for i in range(args.gateways)
            ]
            first = gateways[0]
            rpm_key = tollgate(first, "keys", "create", "--tenant", "rpm", "--rpm", str(args.rpm))
            tpm_key = tollgate(first, "keys", "create", "--tenant", "tpm", "--tpm", str(args.tpm))
            for gateway in gateways:  # started side by side
                gateway.spawn()
            for gateway in gateways:
                gateway.wait_ready(timeout_s=120)
            urls = [gateway.url for gateway in gateways]
            for url in urls:  # warm-up on an unlimited tenant: first-call imports, connections
                warm = tollgate(first, "keys", "create", "--tenant", "warm")
                httpx.post(
                    url + "/v1/chat/completions",
                    json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": f"Bearer {warm}"},
                    timeout=60,
                )
            upstream.reset(config=False)
            runs = [Run("rpm", args.rpm), Run("tpm", args.tpm)]
            t0 = time.monotonic()
            end = t0 + args.duration

            async def both() -> None:
                await asyncio.gather(
                    hammer(runs[0], rpm_key, urls, args, t0, end),
                    hammer(runs[1], tpm_key, urls, args, t0, end),
                )

            asyncio.run(both())
            upstream_calls = int(upstream.stats().get("total_requests", 0))
    finally:
        for gateway in gateways:
            gateway.stop()
        asyncio.run(cleanup_redis(prefix))
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nrate-limit accuracy: {args.gateways} gateways on one Redis, {args.clients} clients "
        f"per key, {args.duration:.0f} s, sliding 60 s windows"
    )
    rows = rows_for(runs[0], "RPM", args.duration) + rows_for(runs[1], "TPM", args.duration)
    print_table(["limit", "window", "expected", "admitted", "admitted/expected"], rows)
    print()
    admitted = sum(len(r.admitted()) for r in runs)
    for r in runs:
        print(
            f"{r.name}: sent {len(r.sent)}, admitted {len(r.admitted())}, refused (429) "
            f"{r.refused()}, other {r.other() or 'none'}"
        )
    print(f"upstream calls {upstream_calls} = admitted {admitted}: {upstream_calls == admitted}")
    for r, weight in ((runs[0], False), (runs[1], True)):
        print(
            f"{r.name}: the client-clock maximum is within the limit for spans of 60 s minus "
            f"{skew_ms(r, weight)} ms (request/answer timing vs Redis's clock)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
