"""Routed load benchmark: does routing (`model: auto`, predictor included) hold under concurrency?

This module owns ``python bench/routed_load.py``. It starts the fake upstream and a real
``tollgate serve`` (both subprocesses, 127.0.0.1 only), the gateway on the shipped
``config.yaml`` with its backends pointed at the fake upstream (four backends mapped to
predictor profiles, the shipped policies, routing rules, shadow policy and predictor settings,
the 50 ms predictor timeout included), a SQLite store in a temporary directory. Then, for each
concurrency level, a closed loop of that many workers sends real RouterBench prompts
(``../shared/data``), once **routed** (``model: auto``) and once **pinned** to one backend
(the same prompts, no routing), and prints one table:

    concurrency | routed req/s (= decisions/s) | fallbacks % | errors | routed / pinned | p50 / p99

A decision "fell back" when the gateway says so: ``x-tollgate-predictor: fallback:<reason>``
(or, from gateways older than that header, ``x-tollgate-decision: predictor_unavailable``);
the table also shows the gateway's own count (``tollgate_predictor_fallbacks_total`` in
``/metrics``) where it exports one, and the mean time a routing decision waited for an
answered prediction (``tollgate_predictor_wait_seconds``: when it far exceeds the worker's own
time, the wait is the gateway's event loop, busy with other requests, not the predictor).
Prompts are not reused across the run unless the data runs
out (then a numbered prefix keeps each text distinct), so the predictor's cache does not flatter
the numbers; ``--repeat`` sends the same prompts again to show a warm cache.

Every phase is bounded in time (``--duration``) and count (``--max-requests``), every request
has a timeout, and every subprocess is stopped on exit, errors and Ctrl-C. The machine is small
and shared: the generator, the upstream, the gateway and its predictor share the same cores,
so compare the routed and pinned rows of one run (they alternate), not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/routed_load.py` works too
    sys.path.insert(0, str(REPO))

from bench.loadgen import percentile  # noqa: E402
from gateway.devtools.fake_upstream import free_port  # noqa: E402

HOST = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent
# How the fake upstream is started: a subprocess, so a move of the module is a one-line change.
FAKE_UPSTREAM = [sys.executable, "-m", "gateway.devtools.fake_upstream"]
PINNED_BACKEND = "local-moe"
FALLBACK_COUNTER = "tollgate_predictor_fallbacks_total"
WAIT_SUM = 'tollgate_predictor_wait_seconds_sum{status="ok"}'
WAIT_COUNT = 'tollgate_predictor_wait_seconds_count{status="ok"}'


# --------------------------------------------------------------------------- processes


def tollgate_cmd() -> list[str]:
    exe = VENV_BIN / "tollgate"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway.cli.main"]


def base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
        and not k.endswith("_API_KEY")
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Processes:
    """The subprocesses this bench started; each in its own process group, all stopped on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_bytes()[-n:].decode(errors="replace")
    except OSError:
        return ""


async def wait_ready(
    session: aiohttp.ClientSession,
    url: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    timeout_s: float,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited ({proc.returncode})\n{tail(log)}")
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                if r.status == 200:
                    return
        await asyncio.sleep(0.25)
    raise RuntimeError(f"{url}: not ready after {timeout_s:.0f}s\n{tail(log)}")


def bench_config(
    shipped: Path, upstream: str, timeout_ms: float | None, artifact: str | None = None
) -> dict[str, Any]:
    """The shipped config with every chat backend pointed at the fake upstream (same names,
    prices, profiles, policies and predictor settings), anonymous access on loopback."""
    cfg = yaml.safe_load(shipped.read_text())
    backends = []
    for b in cfg["backends"]:
        if "embeddings" in (b.get("capabilities") or []):
            continue
        b = dict(b)
        provider, _, rest = str(b["model"]).partition("/")
        if provider not in ("openai", "hosted_vllm"):
            # speak the OpenAI wire format to the fake (the entry keeps its explicit prices)
            b["model"] = f"openai/{rest}"
        b["api_base"] = upstream
        b["api_key"] = "os.environ/FAKE_UPSTREAM_KEY"
        backends.append(b)
    cfg["backends"] = backends
    cfg.setdefault("server", {})["anonymous_tenant"] = "bench"
    if timeout_ms is not None:
        cfg.setdefault("predictor", {})["timeout_ms"] = timeout_ms
    if artifact is not None:
        cfg.setdefault("predictor", {})["artifact"] = artifact
    return cfg


# --------------------------------------------------------------------------- load


@dataclass
class Phase:
    mode: str  # routed | pinned
    concurrency: int
    sent: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)
    predicted: int = 0
    versions: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    counter_delta: float | None = None  # the gateway's own fallback count over the phase
    wait_ms: float | None = None  # mean wait for an answered prediction (the gateway's histogram)
    gateway_cpu_s: float | None = None  # CPU seconds the gateway process used in the phase
    predictor_cpu_s: float | None = None  # ... and its predictor worker processes

    @property
    def rps(self) -> float:
        return self.ok / self.wall_s if self.wall_s else 0.0

    def pct(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)

    @property
    def fallback_pct(self) -> float | None:
        decided = self.predicted + sum(self.fallbacks.values())
        return 100.0 * sum(self.fallbacks.values()) / decided if decided else None


class Prompts:
    """RouterBench prompts in a seeded order, each handed out once (then with a number)."""

    def __init__(self, texts: list[str], seed: int = 0) -> None:
        self.texts = list(dict.fromkeys(texts))
        random.Random(seed).shuffle(self.texts)
        self.i = 0

    def take(self, n: int) -> list[str]:
        out = []
        for _ in range(n):
            k, j = divmod(self.i, len(self.texts))
            text = self.texts[j]
            out.append(text if k == 0 else f"Request {k}: {text}")
            self.i += 1
        return out


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def cpu_split(gateway_pid: int) -> tuple[float, float]:
    """CPU seconds used so far by the gateway process and by its children (the predictor
    workers), from /proc (Linux)."""
    return _cpu_s(gateway_pid), sum(_cpu_s(c) for c in _children(gateway_pid))


async def scrape(session: aiohttp.ClientSession, base: str) -> tuple[float, float, float] | None:
    """The gateway's fallback count and its predictor wait histogram's sum and count (ok)."""
    try:
        async with session.get(f"{base}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as r:
            text = await r.text()
    except (TimeoutError, aiohttp.ClientError):
        return None
    total = wait_sum = wait_n = 0.0
    for line in text.splitlines():
        value = line.rsplit(" ", 1)[-1]
        if line.startswith(FALLBACK_COUNTER):
            total += float(value)
        elif line.startswith(WAIT_SUM):
            wait_sum = float(value)
        elif line.startswith(WAIT_COUNT):
            wait_n = float(value)
    return total, wait_sum, wait_n


async def run_phase(
    session: aiohttp.ClientSession,
    base: str,
    mode: str,
    concurrency: int,
    prompts: list[str],
    duration_s: float,
    request_timeout_s: float,
    gateway_pid: int | None = None,
) -> Phase:
    phase = Phase(mode, concurrency)
    cpu0 = cpu_split(gateway_pid) if gateway_pid else None
    model = "auto" if mode == "routed" else PINNED_BACKEND
    before = await scrape(session, base) or (0.0, 0.0, 0.0)
    queue = list(reversed(prompts))
    deadline = time.monotonic() + duration_s
    timeout = aiohttp.ClientTimeout(total=request_timeout_s)

    async def worker() -> None:
        while queue and time.monotonic() < deadline:
            prompt = queue.pop()
            body = {
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 16,
            }
            phase.sent += 1
            t0 = time.perf_counter()
            try:
                async with session.post(
                    f"{base}/v1/chat/completions", json=body, timeout=timeout
                ) as r:
                    await r.read()
                    status, headers = r.status, r.headers
            except (TimeoutError, aiohttp.ClientError) as exc:
                phase.errors[type(exc).__name__] += 1
                continue
            if status != 200:
                phase.errors[str(status)] += 1
                continue
            phase.ok += 1
            phase.latencies_ms.append(1000 * (time.perf_counter() - t0))
            if mode != "routed":
                continue
            verdict = headers.get("x-tollgate-predictor", "")
            if "x-tollgate-predictor-version" in headers:
                phase.versions[headers["x-tollgate-predictor-version"]] += 1
            if verdict.startswith("fallback:"):
                phase.fallbacks[verdict.removeprefix("fallback:")] += 1
            elif verdict == "ok":
                phase.predicted += 1
            elif headers.get("x-tollgate-decision") == "predictor_unavailable":
                phase.fallbacks["unknown"] += 1  # a gateway without the header
            else:
                phase.predicted += 1

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    phase.wall_s = time.monotonic() - t0
    if cpu0 is not None and gateway_pid:
        cpu1 = cpu_split(gateway_pid)
        phase.gateway_cpu_s, phase.predictor_cpu_s = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    after = await scrape(session, base)
    if after is not None:
        phase.counter_delta = after[0] - before[0]
        if after[2] > before[2]:
            phase.wait_ms = 1000 * (after[1] - before[1]) / (after[2] - before[2])
    return phase


# --------------------------------------------------------------------------- report


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def cpu_cell(routed: Phase, pinned: Phase) -> str:
    """Gateway CPU per answered request, routed (its predictor workers' share) / pinned."""

    def per(cpu: float | None, p: Phase) -> float | None:
        return None if cpu is None or not p.ok else 1000 * cpu / p.ok

    return (
        f"{_f(per(routed.gateway_cpu_s, routed))}({_f(per(routed.predictor_cpu_s, routed))})"
        f"/{_f(per(pinned.gateway_cpu_s, pinned))}"
    )


def print_table(rows: list[tuple[Phase, Phase]]) -> None:
    head = (
        f"{'conc':>4} | {'routed req/s':>12} | {'pinned req/s':>12} | {'routed/pinned':>13} | "
        f"{'fallbacks':>14} | {'gateway count':>13} | {'errors r/p':>10} | "
        f"{'routed p50/p99 ms':>17} | {'pinned p50/p99 ms':>17} | {'CPU ms/req r(pred)/p':>21} | "
        f"{'pred wait ms':>12}"
    )
    print(head)
    print("-" * len(head))
    for routed, pinned in rows:
        ratio = routed.rps / pinned.rps if pinned.rps else None
        fb_n = sum(routed.fallbacks.values())
        fb = f"{_f(routed.fallback_pct, 2)}% ({fb_n})"
        gw = "-" if routed.counter_delta is None else f"{routed.counter_delta:.0f}"
        errs = f"{sum(routed.errors.values())}/{sum(pinned.errors.values())}"
        print(
            f"{routed.concurrency:>4} | {routed.rps:>12.1f} | {pinned.rps:>12.1f} | "
            f"{_f(ratio, 2):>13} | {fb:>14} | {gw:>13} | {errs:>10} | "
            f"{_f(routed.pct(0.5)) + '/' + _f(routed.pct(0.99)):>17} | "
            f"{_f(pinned.pct(0.5)) + '/' + _f(pinned.pct(0.99)):>17} | "
            f"{cpu_cell(routed, pinned):>21} | {_f(routed.wait_ms, 2):>12}"
        )
    versions: Counter[str] = Counter()
    for routed, _ in rows:
        versions.update(routed.versions)
    print("predictor:", ", ".join(versions) or "no decision used it")
    reasons: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for routed, pinned in rows:
        reasons.update(routed.fallbacks)
        errors.update(routed.errors)
        errors.update(pinned.errors)
    if reasons:
        print("fallback reasons:", ", ".join(f"{k}={v}" for k, v in reasons.most_common()))
    if errors:
        print("errors:", ", ".join(f"{k}={v}" for k, v in errors.most_common()))


def load_prompts(data_dir: str | None) -> list[str]:
    from predictors.datasets import read_routerbench

    return list(read_routerbench(data_dir).prompts)


def host_load() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    levels = [int(x) for x in args.concurrency.split(",")]
    prompts = Prompts(load_prompts(args.data_dir), seed=args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-routed-load-"))
    procs = Processes()
    results: list[tuple[Phase, Phase]] = []
    try:
        up_port, gw_port = free_port(), free_port()
        upstream = f"http://{HOST}:{up_port}/v1"
        env = base_env()
        up_log = tmp / "upstream.log"
        up_proc = procs.spawn(
            [
                *FAKE_UPSTREAM,
                "--host",
                HOST,
                "--port",
                str(up_port),
                "--latency-ms",
                str(args.upstream_latency_ms),
                "--completion-tokens",
                "16",
            ],
            env,
            up_log,
        )
        cfg = tmp / "config.yaml"
        source = args.config or REPO / "config.yaml"
        data = bench_config(source, upstream, args.timeout_ms, args.artifact)
        data["store"] = {**data.get("store", {}), "spool_dir": str(tmp / "spool")}
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        env_gw = {
            **env,
            "TOLLGATE_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
            "FAKE_UPSTREAM_KEY": "fake-key",
        }
        env_gw.pop("TOLLGATE_REDIS_URL", None)
        gw_log = tmp / "tollgate.log"
        gw_proc = procs.spawn(
            [
                *tollgate_cmd(),
                "serve",
                "--config",
                str(cfg),
                "--host",
                HOST,
                "--port",
                str(gw_port),
                "--log-level",
                "warning",
            ],
            env_gw,
            gw_log,
        )
        base = f"http://{HOST}:{gw_port}"
        connector = aiohttp.TCPConnector(limit=max(levels) + 8, force_close=False)
        async with aiohttp.ClientSession(connector=connector) as session:
            await wait_ready(
                session, f"http://{HOST}:{up_port}/_control/health", up_proc, up_log, 60
            )
            await wait_ready(session, f"{base}/readyz", gw_proc, gw_log, 180)
            # warm-up: connections, litellm's first-call imports, the predictor's first batch
            warm = prompts.take(args.warmup)
            await run_phase(session, base, "routed", 4, warm, 60, args.request_timeout)
            await run_phase(session, base, "pinned", 4, warm, 60, args.request_timeout)
            for c in levels:
                n = min(args.max_requests, max(50, int(args.expected_rps * args.duration)))
                batch = prompts.take(n)
                if args.repeat:
                    prompts.i -= n  # the next phase gets the same texts (a warm cache)
                order = ("pinned", "routed") if len(results) % 2 == 0 else ("routed", "pinned")
                got: dict[str, Phase] = {}
                for mode in order:
                    got[mode] = await run_phase(
                        session,
                        base,
                        mode,
                        c,
                        batch,
                        args.duration,
                        args.request_timeout,
                        gateway_pid=gw_proc.pid,
                    )
                    if gw_proc.poll() is not None:
                        raise RuntimeError(f"the gateway exited\n{tail(gw_log)}")
                    print(
                        f"  c={c:<3} {mode:<6} {got[mode].ok:5d} ok in {got[mode].wall_s:5.1f}s "
                        f"({got[mode].rps:6.1f}/s), errors {dict(got[mode].errors) or 0}, "
                        f"fallbacks {dict(got[mode].fallbacks) or 0}, load {host_load()}",
                        flush=True,
                    )
                results.append((got["routed"], got["pinned"]))
        print()
        print(
            f"routed (model: auto) vs pinned (model: {PINNED_BACKEND}); upstream "
            f"{args.upstream_latency_ms:g} ms; {args.duration:g} s or {args.max_requests} "
            f"requests per phase; host load average at the end {host_load()}"
        )
        print_table(results)
        return {
            "args": vars(args),
            "phases": [
                {
                    **{
                        k: v
                        for k, v in vars(p).items()
                        if k not in ("errors", "fallbacks", "versions")
                    },
                    "errors": dict(p.errors),
                    "fallbacks": dict(p.fallbacks),
                    "versions": dict(p.versions),
                    "rps": p.rps,
                    "p50": p.pct(0.5),
                    "p99": p.pct(0.99),
                    "fallback_pct": p.fallback_pct,
                    "latencies_ms": None,
                }
                for pair in results
                for p in pair
            ],
        }
    finally:
        procs.stop_all()
        if args.keep_tmp:
            print(f"logs and store kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", default="1,8,32,64", help="closed-loop worker counts")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per phase (at most)")
    p.add_argument("--max-requests", type=int, default=1500, help="requests per phase (at most)")
    p.add_argument("--expected-rps", type=float, default=150.0, help="sizes each phase's prompts")
    p.add_argument("--warmup", type=int, default=40, help="requests per mode before measuring")
    p.add_argument("--upstream-latency-ms", type=float, default=20.0)
    p.add_argument("--timeout-ms", type=float, help="override predictor.timeout_ms")
    p.add_argument("--artifact", help="override predictor.artifact (a path, or: minilm)")
    p.add_argument("--request-timeout", type=float, default=30.0, help="per request, seconds")
    p.add_argument(
        "--config",
        type=Path,
        help="start from this config instead of the shipped config.yaml (its chat backends are "
        "pointed at the fake upstream all the same)",
    )
    p.add_argument("--data-dir", help="folder laid out like ../shared/data")
    p.add_argument(
        "--repeat", action="store_true", help="routed and pinned reuse prompts (warm cache)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-tmp", action="store_true")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "routed_load.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    report = asyncio.run(main_async(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
