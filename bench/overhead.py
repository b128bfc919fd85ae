"""Gateway overhead: Tollgate (pinned and routed) vs the LiteLLM proxy vs direct-to-upstream.

This module owns ``python -m bench.overhead``. It starts, all on 127.0.0.1:

* the fake upstream (``tollgate fake-upstream``, fixed ``--upstream-latency-ms``), the baseline
  every row is compared with ("direct");
* ``tollgate serve --workers N`` (Redis state under a throw-away key prefix and a throw-away
  PostgreSQL database when N > 1, else in-process state and SQLite), whose one backend ``fake``
  is called pinned (``model: fake``) and routed (``model: tollgate/bench``: a policy over two
  backends on the same upstream, the shipped predictor unless ``--no-predictor``);
* the LiteLLM proxy (``litellm[proxy]``, the pinned version, no database) with the same
  backend and prices, ``--litellm-workers`` processes (default 1: more are killed by
  uvicorn's 5 s worker health check while they import litellm on a busy 2-core host).

Then, in ``--rounds`` interleaved rounds, each target is measured in turn, the other servers
paused with SIGSTOP so they take no CPU:

* closed loop with ``wrk`` (``bench/wrk.py``) at each of ``--connections`` (default 32, 64):
  requests/s, p50/p99, and the latency *added* over direct in the same round;
* open loop below saturation (``--rate`` req/s, by default half of what the slower Tollgate
  path sustained in round 1; aiohttp, latency from each request's scheduled send time): the
  added p50/p99 a gateway that is not saturated costs;
* the CPU the target's processes used per request, and their resident memory.

The table shows the median over rounds; ratios are to direct and to the LiteLLM proxy from the
same run. At the end the gateway is stopped gracefully and every request id it answered (wrk
writes them out) must have its row in the store. The machine is small and shared: the load
average is printed with the table; compare ratios, not runs. Needs ``wrk`` (apt-get install
wrk) and, for N > 1, the Redis and PostgreSQL servers (``--redis-url``, ``--pg-url``).
Raw results go to ``bench/out/overhead.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/overhead.py` works too
    sys.path.insert(0, str(REPO))

from bench import loadgen  # noqa: E402
from bench.wrk import chat_body, run_wrk, wrk_available  # noqa: E402
from gateway.devtools.fake_upstream import FakeUpstream, free_port  # noqa: E402

HOST = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent
INPUT_COST = "0.0000002"
OUTPUT_COST = "0.0000006"
TARGETS = ("direct", "pinned", "routed", "litellm")


@dataclass
class Target:
    name: str
    url: str  # .../v1/chat/completions
    model: str
    key: str = ""
    group: int | None = None  # process group of the server under test (None: the upstream)
    request_ids: list[str] = field(default_factory=list)


@dataclass
class Sample:
    """One target measured once in one round at one load."""

    target: str
    load: str  # "c32", "c64", "r100"
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_ms_per_req: float | None
    rss_mb: float | None
    replicas: int


# --------------------------------------------------------------------------- processes


class Processes:
    """Every server subprocess of the run, each in its own process group; all stopped at exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.paused: set[int] = set()

    def spawn(self, cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def pause(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None and proc.pid not in self.paused:
            os.killpg(proc.pid, signal.SIGSTOP)
            self.paused.add(proc.pid)

    def resume(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.pid in self.paused:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)
            self.paused.discard(proc.pid)

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
        self.resume(proc)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # workers left in the group

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc, grace_s=10.0)


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(stat[2]) == pgid:  # field 5: process group
            pids.append(int(entry.name))
    return pids


def cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["FAKE_KEY"] = "fake-upstream-key"
    return env


async def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    def tail() -> str:
        return log.read_bytes()[-3000:].decode(errors="replace")

    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: exited ({proc.returncode})\n{tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{url}: not ready after {timeout_s:.0f} s\n{tail()}")


# --------------------------------------------------------------------------- store


class Store:
    """SQLite file (one worker) or a throw-away PostgreSQL database (several workers)."""

    def __init__(self, tmp: Path, pg_url: str | None) -> None:
        self.tmp = tmp
        self.pg_admin = pg_url
        self.name = f"tollgate_bench_{secrets.token_hex(4)}"

    @property
    def url(self) -> str:
        if self.pg_admin is None:
            return f"sqlite:///{self.tmp / 'bench.db'}"
        return f"{self.pg_admin.rsplit('/', 1)[0]}/{self.name}"

    async def _pg(self, sql: str) -> None:
        import asyncpg

        assert self.pg_admin is not None
        conn = await asyncpg.connect(self.pg_admin, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create(self) -> None:
        if self.pg_admin is not None:
            await self._pg(f'CREATE DATABASE "{self.name}"')

    async def drop(self) -> None:
        if self.pg_admin is not None:
            with contextlib.suppress(Exception):
                await self._pg(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    async def recorded(self, ids: list[str]) -> set[str]:
        from gateway.store.database import create_engine

        engine = create_engine(self.url)
        found: set[str] = set()
        try:
            from sqlalchemy import text

            async with engine.connect() as conn:
                for i in range(0, len(ids), 5000):
                    part = ids[i : i + 5000]
                    params = {f"p{j}": v for j, v in enumerate(part)}
                    marks = ",".join(f":p{j}" for j in range(len(part)))
                    rows = await conn.execute(
                        text(f"SELECT request_id FROM requests WHERE request_id IN ({marks})"),
                        params,
                    )
                    found.update(r[0] for r in rows)
        finally:
            await engine.dispose()
        return found


# --------------------------------------------------------------------------- servers


def tollgate_config(upstream: str, tmp: Path, predictor: bool, redis_prefix: str) -> Path:
    def entry(name: str, model: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": f"openai/{model}",
            "api_base": upstream,
            "api_key": "os.environ/FAKE_KEY",
            "input_cost_per_token": INPUT_COST,
            "output_cost_per_token": OUTPUT_COST,
        }

    cfg = {
        "backends": [entry("fake", "fake-model"), entry("fake-big", "fake-big-model")],
        "policies": {
            "bench": {
                "candidates": ["fake", "fake-big"],
                "objective": {
                    "kind": "cheapest_adequate",
                    "min_success": 0.5,
                    "on_no_adequate": "most_capable",
                },
                "predictor_fallback": "fake",
            }
        },
        "routing": {"default": "bench"},
        "predictor": {"enabled": predictor},
        "store": {"spool_dir": str(tmp / "spool"), "flush_interval_ms": 200},
        "redis": {"key_prefix": redis_prefix},
        "server": {"anonymous_tenant": "bench"},
    }
    path = tmp / "tollgate.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def litellm_config(upstream: str, tmp: Path) -> Path:
    path = tmp / "litellm.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {
                        "model_name": "fake",
                        "litellm_params": {
                            "model": "openai/fake-model",
                            "api_base": upstream,
                            "api_key": "os.environ/FAKE_KEY",
                            "input_cost_per_token": float(INPUT_COST),
                            "output_cost_per_token": float(OUTPUT_COST),
                        },
                    }
                ],
                "litellm_settings": {"telemetry": False},
            }
        )
    )
    return path


# --------------------------------------------------------------------------- load


async def open_loop(target: Target, rate: float, duration_s: float) -> tuple[list[float], int]:
    """Send ``rate`` req/s for ``duration_s`` whatever the answers (``bench.loadgen.open_loop``);
    latencies (ms, sorted) from each request's scheduled time and the error count."""
    headers = {"content-type": "application/json"}
    if target.key:
        headers["authorization"] = f"Bearer {target.key}"
    lat: list[float] = []

    def answered(at: float, done: float, answer: Mapping[str, str], raw: bytes) -> None:
        lat.append((done - at) * 1000)
        rid = answer.get("x-tollgate-request-id")
        if rid:
            target.request_ids.append(rid)

    body = chat_body(target.model).encode()
    errors = await loadgen.open_loop(target.url, body, headers, rate, duration_s, answered)
    lat.sort()
    return lat, errors


def pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of sorted ``values``: the ``round(q/100 * n)``-th of them
    (not ``bench.loadgen.percentile``'s ``floor(q * n) + 1``-th, so that the open-loop rows stay
    comparable with earlier runs); NaN when there are none."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))]


async def measure(
    target: Target, load: str, rnd: int, args: argparse.Namespace, procs: Processes
) -> Sample:
    pids = group_pids(target.group) if target.group else []
    replicas = max(1, len(pids) - 1) if len(pids) > 1 else 1
    cpu0 = cpu_s(pids)
    if load.startswith("c"):
        res = await asyncio.to_thread(
            run_wrk,
            target.url,
            target.model,
            key=target.key,
            connections=int(load[1:]),
            duration_s=args.duration,
            collect_ids=target.group is not None and target.name != "litellm",
        )
        target.request_ids.extend(res.request_ids)
        requests, rps = res.requests, res.rps
        p50, p99 = res.p50_ms, res.p99_ms
        errors = res.non_2xx + sum(res.socket_errors.values())
    else:
        lat, errors = await open_loop(target, float(load[1:]), args.duration)
        requests, rps = len(lat), len(lat) / args.duration
        p50, p99 = pct(lat, 50), pct(lat, 99)
    used = cpu_s(pids) - cpu0
    return Sample(
        target=target.name,
        load=load,
        round=rnd,
        rps=round(rps, 1),
        p50_ms=round(p50, 2),
        p99_ms=round(p99, 2),
        requests=requests,
        errors=errors,
        cpu_ms_per_req=round(1000 * used / requests, 2) if pids and requests else None,
        rss_mb=round(rss_mb(pids) / replicas, 1) if pids else None,
        replicas=replicas,
    )


# --------------------------------------------------------------------------- run


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-overhead-"))
    logs = REPO / "bench" / "out" / "overhead-logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = Processes()
    store = Store(tmp, args.pg_url if args.workers > 1 else None)
    redis_prefix = f"tgbench:{secrets.token_hex(4)}:"
    samples: list[Sample] = []
    report: dict[str, Any] = {}
    await store.create()
    try:
        with FakeUpstream(latency_ms=args.upstream_latency_ms) as upstream:
            env = base_env()
            direct = Target("direct", f"{upstream.base_url}/chat/completions", "fake-model")
            targets: dict[str, Target] = {"direct": direct}
            servers: list[subprocess.Popen[bytes]] = []
            if {"pinned", "routed"} & set(args.targets):
                cfg = tollgate_config(upstream.base_url, tmp, args.predictor, redis_prefix)
                tg_env = {**env, "TOLLGATE_DATABASE_URL": store.url}
                if args.workers > 1:
                    tg_env["TOLLGATE_REDIS_URL"] = args.redis_url
                port = free_port()
                cmd = [str(VENV_BIN / "tollgate"), "serve", "--config", str(cfg)]
                cmd += ["--host", HOST, "--port", str(port), "--workers", str(args.workers)]
                cmd += ["--log-level", "warning"]
                log = logs / "tollgate.log"
                proc = procs.spawn(cmd, tg_env, log)
                servers.append(proc)
                log_line(f"starting tollgate serve --workers {args.workers} ...")
                await wait_ready(f"http://{HOST}:{port}/readyz", proc, log, args.start_timeout)
                url = f"http://{HOST}:{port}/v1/chat/completions"
                targets["pinned"] = Target("pinned", url, "fake", group=proc.pid)
                targets["routed"] = Target("routed", url, "tollgate/bench", group=proc.pid)
            if "litellm" in args.targets:
                master = "sk-" + secrets.token_hex(16)
                port = free_port()
                exe = VENV_BIN / "litellm"
                cmd = [str(exe), "--config", str(litellm_config(upstream.base_url, tmp))]
                cmd += ["--host", HOST, "--port", str(port)]
                cmd += ["--num_workers", str(args.litellm_workers)]
                log = logs / "litellm.log"
                proc = procs.spawn(cmd, {**env, "LITELLM_MASTER_KEY": master}, log)
                servers.append(proc)
                log_line("starting the LiteLLM proxy ...")
                await wait_ready(
                    f"http://{HOST}:{port}/health/readiness", proc, log, args.start_timeout
                )
                targets["litellm"] = Target(
                    "litellm", f"http://{HOST}:{port}/v1/chat/completions", "fake", master
                )
                targets["litellm"].group = proc.pid
            order = [t for t in TARGETS if t in targets and (t in args.targets or t == "direct")]
            closed = [f"c{c}" for c in args.connections]
            rates: list[float] = list(args.rate)
            for t in order:  # warm-up: connections, caches, lazy imports
                await run_isolated(procs, servers, targets[t], "c8", 0, args, warm=True)
            for rnd in range(args.rounds):
                for step in [*closed, "open"]:
                    if step == "open" and not rates:  # once, from round 1's closed loops
                        rates = [below_saturation(samples, closed)]
                    step_loads = [f"r{r:g}" for r in rates] if step == "open" else [step]
                    for t in order if rnd % 2 == 0 else list(reversed(order)):
                        for load in step_loads:
                            s = await run_isolated(procs, servers, targets[t], load, rnd, args)
                            samples.append(s)
                            log_line(
                                f"round {rnd + 1} {load:>5} {t:>8}: {s.rps:8.1f} req/s p50 "
                                f"{s.p50_ms:7.2f} p99 {s.p99_ms:8.2f} ms, errors {s.errors}"
                            )
            report["load_average"] = os.getloadavg()
            if "pinned" in targets:
                report["store_check"] = await check_store(
                    procs, servers[0], store, [targets["pinned"], targets["routed"]]
                )
    finally:
        procs.stop_all()
        await store.drop()
        shutil.rmtree(tmp, ignore_errors=True)
    report["samples"] = [asdict(s) for s in samples]
    report["args"] = {k: v for k, v in vars(args).items() if k != "pg_url"}
    return report


def below_saturation(samples: list[Sample], loads: list[str]) -> float:
    """Half the requests/s the slower Tollgate path sustained at the lowest concurrency in the
    first round: an open-loop rate every Tollgate target serves without queueing."""
    first = [s for s in samples if s.round == 0 and s.load == loads[0]]
    rps = [s.rps for s in first if s.target in ("pinned", "routed") and s.rps > 0]
    return max(5.0, round(min(rps) / 2)) if rps else 50.0


async def run_isolated(
    procs: Processes,
    servers: list[subprocess.Popen[bytes]],
    target: Target,
    load: str,
    rnd: int,
    args: argparse.Namespace,
    warm: bool = False,
) -> Sample:
    for proc in servers:
        if proc.pid != target.group:
            procs.pause(proc)
        else:
            procs.resume(proc)
    try:
        if warm:
            await first_answer(target, args.start_timeout)
            await asyncio.to_thread(
                run_wrk, target.url, target.model, key=target.key, connections=8, duration_s=3
            )
            return Sample(target.name, "warm", rnd, 0, 0, 0, 0, 0, None, None, 1)
        await settle(target)
        return await measure(target, load, rnd, args, procs)
    finally:
        for proc in servers:
            procs.resume(proc)


async def settle(target: Target, timeout_s: float = 90.0) -> None:
    """Wait until the target answers one request within 2 s again: an overloaded server keeps
    working off the backlog the previous measurement left."""
    headers = {"content-type": "application/json"}
    if target.key:
        headers["authorization"] = f"Bearer {target.key}"
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            with contextlib.suppress(httpx.HTTPError):
                resp = await client.post(
                    target.url, content=chat_body(target.model), headers=headers
                )
                if resp.status_code == 200 and time.monotonic() - t0 < 2.0:
                    return
            await asyncio.sleep(1)


async def first_answer(target: Target, timeout_s: float) -> None:
    """Wait until the target answers one request (a proxy's first call can take long)."""
    headers = {"content-type": "application/json"}
    if target.key:
        headers["authorization"] = f"Bearer {target.key}"
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                resp = await client.post(
                    target.url, content=chat_body(target.model), headers=headers
                )
                if resp.status_code == 200:
                    return
            await asyncio.sleep(1)
    raise RuntimeError(f"{target.name} never answered a request")


async def check_store(
    procs: Processes, gateway: subprocess.Popen[bytes], store: Store, targets: list[Target]
) -> dict[str, Any]:
    """Stop the gateway gracefully (its writers flush) and look up every answered request."""
    procs.stop(gateway, grace_s=60)
    ids = [rid for t in targets for rid in t.request_ids]
    found = await store.recorded(ids)
    missing = [rid for rid in ids if rid not in found]
    return {"answered": len(ids), "recorded": len(ids) - len(missing), "missing": missing[:20]}


# --------------------------------------------------------------------------- report


def summarise(samples: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, float | None]]:
    """Median of each measure over rounds, per (target, load)."""
    out: dict[tuple[str, str], dict[str, float | None]] = {}
    keys = {(s["target"], s["load"]) for s in samples}
    for key in keys:
        rows = [s for s in samples if (s["target"], s["load"]) == key]
        med: dict[str, float | None] = {}
        for m in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_req", "rss_mb", "errors", "replicas"):
            vals = [r[m] for r in rows if r[m] is not None]
            med[m] = statistics.median(vals) if vals else None
        out[key] = med
    return out


def added(samples: list[dict[str, Any]], target: str, load: str, m: str) -> float | None:
    """Median over rounds of (target - direct) in the same round."""
    diffs = []
    for s in samples:
        if s["target"] != target or s["load"] != load:
            continue
        base = [d for d in samples if d["target"] == "direct" and d["load"] == load]
        base = [d for d in base if d["round"] == s["round"]]
        if base:
            diffs.append(s[m] - base[0][m])
    return round(statistics.median(diffs), 2) if diffs else None


def print_report(report: dict[str, Any]) -> None:
    samples = report["samples"]
    med = summarise(samples)
    loads = sorted({s["load"] for s in samples}, key=lambda x: (x[0] != "c", float(x[1:])))
    names = [t for t in TARGETS if any(s["target"] == t for s in samples)]
    la = report.get("load_average") or (float("nan"),) * 3
    a = report["args"]
    print(
        f"\nTollgate overhead (wrk closed loop, open loop at fixed rate), upstream latency "
        f"{a['upstream_latency_ms']:g} ms, {a['rounds']} interleaved rounds of {a['duration']:g} "
        f"s, tollgate --workers {a['workers']}, LiteLLM workers "
        f"{a['litellm_workers']}, load average {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f}"
        f" on {os.cpu_count()} cores\n"
    )
    head = (
        f"{'load':>5} {'target':>8} {'req/s':>8} {'%direct':>8} {'xLiteLLM':>8} {'p50':>8} "
        f"{'p99':>8} {'+p50':>7} {'+p99':>8} {'CPU ms/req':>10} {'RSS MB/proc':>11} {'errors':>6}"
    )
    print(head)
    print("-" * len(head))
    for load in loads:
        direct = med.get(("direct", load), {}).get("rps")
        lite = med.get(("litellm", load), {}).get("rps")
        for t in names:
            m = med.get((t, load))
            if m is None:
                continue
            rps = m["rps"] or 0.0
            pct_direct = f"{100 * rps / direct:7.1f}%" if direct and t != "direct" else ""
            x_lite = f"{rps / lite:7.1f}x" if lite and t in ("pinned", "routed") else ""
            add50 = added(samples, t, load, "p50_ms") if t != "direct" else None
            add99 = added(samples, t, load, "p99_ms") if t != "direct" else None
            print(
                f"{load:>5} {t:>8} {rps:8.1f} {pct_direct:>8} {x_lite:>8} "
                f"{_f(m['p50_ms'])} {_f(m['p99_ms'])} {_f(add50, 7)} {_f(add99)} "
                f"{_f(m['cpu_ms_per_req'], 10)} {_f(m['rss_mb'], 11)} {int(m['errors'] or 0):6d}"
            )
        print()
    check = report.get("store_check")
    if check:
        verdict = "OK" if check["recorded"] == check["answered"] else "MISSING ROWS"
        missing = f"; missing e.g. {check['missing'][:3]}" if check["missing"] else ""
        print(
            f"store: {check['recorded']}/{check['answered']} answered Tollgate requests have "
            f"their row ({verdict}){missing}"
        )
    print(
        "loads: cN = wrk with N connections (closed loop: the most the target sustains), rN = "
        "N req/s open loop; +p50/+p99 = minus direct in the same round (median over rounds); "
        "CPU ms/req = CPU of all the target's processes per answered request; RSS per process"
    )


def _f(v: float | None, width: int = 8) -> str:
    return f"{v:{width}.2f}" if v is not None else " " * (width - 1) + "-"


def log_line(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--targets", default="pinned,routed,litellm", help="besides direct")
    p.add_argument("--connections", default="32,64", help="wrk connections, comma-separated")
    p.add_argument(
        "--rate",
        default="",
        help="open-loop req/s, comma-separated (default: half of what the slower Tollgate path "
        "sustained at the lowest --connections in round 1, i.e. below saturation)",
    )
    p.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="tollgate serve --workers")
    p.add_argument(
        "--litellm-workers",
        type=int,
        default=1,
        help="LiteLLM proxy --num_workers; its uvicorn workers are killed by uvicorn's 5 s "
        "health check while they import litellm on a busy 2-core host, so 1 is the default",
    )
    p.add_argument("--no-predictor", dest="predictor", action="store_false")
    p.add_argument("--upstream-latency-ms", type=float, default=20.0)
    p.add_argument(
        "--redis-url", default=os.environ.get("TOLLGATE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
    )
    p.add_argument(
        "--pg-url",
        default=os.environ.get(
            "TOLLGATE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    p.add_argument("--start-timeout", type=float, default=300.0)
    p.add_argument("--json", default=str(REPO / "bench" / "out" / "overhead.json"))
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    args.rate = [float(r) for r in args.rate.split(",") if r.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not wrk_available():
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    import uvloop

    report = uvloop.run(run(args))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
