"""Gateway overhead benchmark: Tollgate vs the LiteLLM proxy vs direct-to-upstream.

This module owns ``python -m bench.overhead``: it starts the fake upstream
(``tests/fake_upstream.py``, fixed latency), the Tollgate gateway (``tollgate serve``, SQLite or
Postgres store) and the LiteLLM proxy (``litellm[proxy]``, same pinned version, no database)
against that same upstream, drives each with one load generator (asyncio + httpx, HTTP/1.1
keep-alive, uvloop) in this process, and prints one table:

* open-loop phases at fixed request rates: latency p50/p99 and the latency *added* over
  direct-to-upstream at the same rate, achieved rate, errors;
* a closed-loop phase (N concurrent workers) for the max sustained requests/s;
* Tollgate/LiteLLM ratios and whether Tollgate's store has one ``requests`` row per
  successful request it was sent.

Latency is measured from each request's *scheduled* send time (open loop), so a server that
falls behind is charged for the queueing it causes (no coordinated omission).

While one target is measured the other servers under test are paused (SIGSTOP) so that
they take no CPU (``--no-isolate`` turns that off). The machine is small: the generator, the
upstream and the server under test share the same cores, so absolute numbers are low and the
direct row is the generator's own ceiling; compare rows, not machines.

Raw results go to ``bench/out/overhead.json``. Every subprocess is stopped on exit, errors and
Ctrl-C; every loop is bounded in time and count; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import platform
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/overhead.py` works too
    sys.path.insert(0, str(REPO))

from tests.fake_upstream import FakeUpstream, free_port  # noqa: E402

HOST = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent
INPUT_COST = "0.0000002"
OUTPUT_COST = "0.0000006"
PROMPT = "Summarise in one line: the quick brown fox jumps over the lazy dog."
ALL_TARGETS = ("direct", "tollgate", "litellm")
REQUEST_ID_HEADER = "x-tollgate-request-id"
Sender = Callable[[bool], Awaitable[tuple[int, str | None]]]


# --------------------------------------------------------------------------- data


@dataclass
class Target:
    """One thing the generator can be pointed at."""

    name: str
    base_url: str  # ends in /v1
    model: str
    api_key: str
    proc: subprocess.Popen[bytes] | None = None  # None for direct (the upstream itself)
    ok_sent: int = 0  # successful requests over the whole run, warm-ups included
    errors_sent: int = 0
    issued: int = 0  # requests started (answered, failed, timed out or cancelled)
    request_ids: list[str] = field(default_factory=list)  # x-tollgate-request-id of successes


@dataclass
class PhaseResult:
    """Latency and throughput of one target in one phase."""

    target: str
    phase: str  # "rate" or "max"
    offered_rps: float | None
    concurrency: int | None
    duration_s: float
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    achieved_rps: float = 0.0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    max_ms: float | None = None
    send_lag_p99_ms: float | None = None  # how late the generator sent (its own overload)
    bench_cpu_cores: float | None = None  # CPU used by generator + upstream + target, in cores
    other_cpu_cores: float | None = None  # CPU used by everything else on the host, in cores
    settle_s: float | None = None  # time the target needed to answer promptly before the phase
    server_cpu_ms_per_req: float | None = None  # CPU of the server under test per request sent
    note: str | None = None
    upstream_requests: int | None = None
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[rank]


# --------------------------------------------------------------------------- load generator


class LoadGen:
    """Open-loop and closed-loop request drivers sharing one keep-alive pool per phase.

    ``client="aiohttp"`` (default) or ``"httpx"``: both speak HTTP/1.1 with keep-alive. httpx
    0.28 / httpcore 1.0 is measurably unfit as a generator on this machine (at 64 concurrent
    requests against the bare fake upstream it manages ~115 req/s with a p50 of ~400 ms and
    the generator's CPU saturated, where aiohttp does ~2,200 req/s at p50 28 ms), so it would
    measure itself rather than the servers; it stays available for comparison.
    """

    def __init__(
        self,
        target: Target,
        *,
        timeout_s: float,
        pool: int,
        stream_ratio: float,
        max_tokens: int | None,
        client: str = "aiohttp",
        seed: int = 7,
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.pool = pool
        self.stream_ratio = stream_ratio
        self.client_kind = client
        self.rng = random.Random(seed)
        self.url = f"{target.base_url}/chat/completions"
        self.headers = {
            "authorization": f"Bearer {target.api_key}",
            "content-type": "application/json",
        }
        body: dict[str, Any] = {
            "model": target.model,
            "messages": [{"role": "user", "content": PROMPT}],
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        self.body = json.dumps(body).encode()
        self.stream_body = json.dumps(
            {**body, "stream": True, "stream_options": {"include_usage": True}}
        ).encode()

    @contextlib.asynccontextmanager
    async def _session(self, connections: int) -> AsyncIterator[Sender]:
        """Yield ``send(stream) -> (status, request id)`` bound to one keep-alive pool."""
        if self.client_kind == "httpx":
            limits = httpx.Limits(
                max_connections=connections, max_keepalive_connections=connections
            )
            async with httpx.AsyncClient(
                limits=limits, timeout=self.timeout_s, trust_env=False
            ) as hc:

                async def send_httpx(stream: bool) -> tuple[int, str | None]:
                    if stream:
                        async with hc.stream(
                            "POST", self.url, content=self.stream_body, headers=self.headers
                        ) as resp:
                            tail = b""
                            async for part in resp.aiter_raw():
                                tail = (tail + part)[-64:]
                            rid = resp.headers.get(REQUEST_ID_HEADER)
                            return _stream_status(resp.status_code, tail), rid
                    resp = await hc.post(self.url, content=self.body, headers=self.headers)
                    return resp.status_code, resp.headers.get(REQUEST_ID_HEADER)

                yield send_httpx
            return

        import aiohttp

        connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def send_aiohttp(stream: bool) -> tuple[int, str | None]:
                data = self.stream_body if stream else self.body
                async with session.post(self.url, data=data, headers=self.headers) as resp:
                    rid = resp.headers.get(REQUEST_ID_HEADER)
                    if not stream:
                        await resp.read()
                        return resp.status, rid
                    tail = b""
                    async for part in resp.content.iter_any():
                        tail = (tail + part)[-64:]
                    return _stream_status(resp.status, tail), rid

            yield send_aiohttp

    async def _one(
        self,
        send: Sender,
        start: float,
        lat: list[float],
        errors: Counter[str],
        done: list[float],
    ) -> None:
        stream = self.stream_ratio > 0 and self.rng.random() < self.stream_ratio
        self.target.issued += 1
        rid: str | None = None
        try:
            status, rid = await send(stream)
        except (TimeoutError, httpx.TimeoutException):
            status = -1
            errors["timeout"] += 1
        except Exception as exc:  # connection errors of either client: count, keep going
            status = -1
            errors[type(exc).__name__] += 1
        now = time.perf_counter()
        if status == 200:
            lat.append(now - start)
            done.append(now)
            self.target.ok_sent += 1
            if rid is not None:
                self.target.request_ids.append(rid)
            return
        if status > 0:
            errors["truncated_stream" if status == 299 else f"http_{status}"] += 1
        self.target.errors_sent += 1

    async def open_loop(self, rate: float, duration_s: float, max_inflight: int) -> PhaseResult:
        """Send ``rate`` req/s for ``duration_s`` regardless of responses (open loop)."""
        res = PhaseResult(self.target.name, "rate", rate, None, duration_s)
        lat: list[float] = []
        lags: list[float] = []
        done: list[float] = []
        errors: Counter[str] = Counter()
        n = max(1, int(rate * duration_s))
        async with self._session(self.pool) as send:
            tasks: set[asyncio.Task[None]] = set()
            t0 = time.perf_counter() + 0.05
            for i in range(n):
                scheduled = t0 + i / rate
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                lags.append(max(0.0, time.perf_counter() - scheduled))
                if len(tasks) >= max_inflight:
                    errors["generator_inflight_cap"] += 1
                    continue
                task = asyncio.create_task(self._one(send, scheduled, lat, errors, done))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            res.sent = n
            if tasks:
                _, pending = await asyncio.wait(set(tasks), timeout=self.timeout_s + 2.0)
                for task in pending:
                    task.cancel()
                    errors["unfinished"] += 1
                if pending:
                    await asyncio.wait(pending, timeout=2.0)
        self._finish(res, lat, errors, done, t0)
        lags.sort()
        res.send_lag_p99_ms = _ms(percentile(lags, 99))
        return res

    async def closed_loop(self, concurrency: int, duration_s: float) -> PhaseResult:
        """``concurrency`` workers each send the next request when the previous one ends."""
        res = PhaseResult(self.target.name, "max", None, concurrency, duration_s)
        lat: list[float] = []
        done: list[float] = []
        errors: Counter[str] = Counter()
        sent = 0
        async with self._session(concurrency) as send:
            t0 = time.perf_counter()
            stop_at = t0 + duration_s

            async def worker() -> None:
                nonlocal sent
                for _ in range(10_000_000):  # bounded by stop_at in practice
                    if time.perf_counter() >= stop_at:
                        return
                    sent += 1
                    await self._one(send, time.perf_counter(), lat, errors, done)

            workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
            _, pending = await asyncio.wait(workers, timeout=duration_s + self.timeout_s + 2.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
        res.sent = sent
        self._finish(res, lat, errors, done, t0)
        return res

    @staticmethod
    def _finish(
        res: PhaseResult, lat: list[float], errors: Counter[str], done: list[float], t0: float
    ) -> None:
        lat.sort()
        res.ok = len(lat)
        res.errors = dict(errors)
        if done:
            span = max(done) - t0
            res.achieved_rps = res.ok / span if span > 0 else 0.0
        res.p50_ms = _ms(percentile(lat, 50))
        res.p90_ms = _ms(percentile(lat, 90))
        res.p99_ms = _ms(percentile(lat, 99))
        res.mean_ms = _ms(sum(lat) / len(lat)) if lat else None
        res.max_ms = _ms(lat[-1]) if lat else None


def _stream_status(status: int, tail: bytes) -> int:
    """A 200 stream that did not end with ``[DONE]`` counts as truncated (299)."""
    if status == 200 and b"[DONE]" not in tail:
        return 299
    return status


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def run_async(coro: Any) -> Any:
    """Run a coroutine on a fresh uvloop loop (keeps the generator light).

    Not ``asyncio.run``/``uvloop.run``: their SIGINT handler only cancels the main task, and a
    library that swallows that cancellation would let a Ctrl-C go unnoticed; here Ctrl-C raises
    KeyboardInterrupt straight out of the loop and the caller stops every server.
    """
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is in the lock file
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=2.0))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


# --------------------------------------------------------------------------- processes


class Processes:
    """Owns every server subprocess of the run; stops them all, whatever happens."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopped: set[int] = set()

    def spawn(
        self,
        name: str,
        cmd: list[str],
        *,
        env: dict[str, str],
        log: Path,
        cwd: Path,
        cpus: set[int] | None = None,
    ) -> subprocess.Popen[bytes]:
        out = log.open("wb")
        preexec: Callable[[], None] | None = None
        if cpus:

            def preexec() -> None:
                os.sched_setaffinity(0, cpus)

        try:
            proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=preexec,
            )
        finally:
            out.close()
        self.procs.append((name, proc))
        return proc

    def pause(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None and proc.pid not in self.stopped:
            os.killpg(proc.pid, signal.SIGSTOP)
            self.stopped.add(proc.pid)

    def resume(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.pid in self.stopped:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)
            self.stopped.discard(proc.pid)

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
        """SIGTERM the process group (after SIGCONT), then SIGKILL after ``grace_s``."""
        self.resume(proc)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        # children left in the group (workers) go too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc, grace_s=5.0)


@dataclass
class CpuSnapshot:
    wall: float
    host_busy_s: float
    ours_s: float
    pids: list[int]


def _host_busy_s() -> float:
    """Busy CPU seconds of the whole host since boot (all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(x) for x in fields[:8]]
    busy = sum(ticks) - ticks[3] - ticks[4]  # minus idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_snapshot(pids: list[int]) -> CpuSnapshot:
    own = os.times()
    ours = own.user + own.system + sum(_proc_cpu_s(p) for p in pids)
    return CpuSnapshot(time.monotonic(), _host_busy_s(), ours, pids)


def cpu_since(before: CpuSnapshot) -> tuple[float | None, float | None]:
    """(cores used by this bench's processes, cores used by everything else) since ``before``:
    other engineers' jobs on a shared 2-core box skew a phase, and this shows when."""
    after = cpu_snapshot(before.pids)
    wall = after.wall - before.wall
    if wall <= 0 or after.host_busy_s == 0.0:
        return None, None
    ours = (after.ours_s - before.ours_s) / wall
    others = max(0.0, (after.host_busy_s - before.host_busy_s) / wall - ours)
    return round(ours, 2), round(others, 2)


def wait_ready(
    url: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    timeout_s: float,
    headers: dict[str, str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: process exited ({proc.returncode})\n{tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url, headers=headers).status_code == 200:
                    return
            time.sleep(0.25)
    raise RuntimeError(f"{url}: not ready after {timeout_s:.0f}s\n{tail(log)}")


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_bytes()[-n:].decode(errors="replace")
    except OSError:
        return ""


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "DATABASE_URL",
    ):
        env.pop(var, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def tollgate_cmd() -> list[str]:
    exe = VENV_BIN / "tollgate"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "gateway.cli.main"]


# --------------------------------------------------------------------------- stores


class Store:
    """Where Tollgate's rows go: a SQLite file or a throw-away Postgres database."""

    def __init__(self, kind: str, tmp: Path, pg_url: str) -> None:
        self.kind = kind
        self.tmp = tmp
        self.pg_admin = pg_url
        self.db_name = f"tollgate_bench_{secrets.token_hex(4)}"
        self.created = False

    @property
    def url(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.tmp / 'bench.db'}"
        return f"{self.pg_admin.rsplit('/', 1)[0]}/{self.db_name}"

    def _pg(self, sql: str) -> None:
        import asyncpg

        async def go() -> None:
            conn = await asyncpg.connect(
                self.pg_admin.replace("postgresql+asyncpg", "postgresql"), timeout=10
            )
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(go())

    def create(self) -> None:
        if self.kind == "postgres":
            self._pg(f'CREATE DATABASE "{self.db_name}"')
            self.created = True

    def drop(self) -> None:
        if self.kind == "postgres" and self.created:
            with contextlib.suppress(Exception):
                self._pg(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            self.created = False

    def rows_and_ids(self) -> tuple[int, set[str]]:
        """(row count, distinct request ids) of the ``requests`` table."""
        sql = "SELECT request_id FROM requests"
        if self.kind == "sqlite":
            import sqlalchemy as sa

            engine = sa.create_engine(self.url)
            try:
                with engine.connect() as conn:
                    ids = [r[0] for r in conn.execute(sa.text(sql))]
            finally:
                engine.dispose()
        else:
            import asyncpg

            async def go() -> list[str]:
                conn = await asyncpg.connect(self.url, timeout=10)
                try:
                    return [r[0] for r in await conn.fetch(sql)]
                finally:
                    await conn.close()

            ids = asyncio.run(go())
        return len(ids), set(ids)

    def count_rows(self, table: str = "requests") -> int:
        if self.kind == "sqlite":
            import sqlalchemy as sa

            engine = sa.create_engine(self.url)
            try:
                with engine.connect() as conn:
                    return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
            finally:
                engine.dispose()
        import asyncpg

        async def go() -> int:
            conn = await asyncpg.connect(self.url, timeout=10)
            try:
                return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            finally:
                await conn.close()

        return int(asyncio.run(go()))


# --------------------------------------------------------------------------- targets


def write_tollgate_config(path: Path, upstream_base: str) -> None:
    path.write_text(
        "backends:\n"
        "  - name: fake\n"
        "    model: openai/fake-model\n"
        f"    api_base: {upstream_base}\n"
        "    api_key: os.environ/FAKE_KEY\n"
        f"    input_cost_per_token: {INPUT_COST}\n"
        f"    output_cost_per_token: {OUTPUT_COST}\n"
    )


def write_litellm_config(path: Path, upstream_base: str) -> None:
    path.write_text(
        "model_list:\n"
        "  - model_name: fake\n"
        "    litellm_params:\n"
        "      model: openai/fake-model\n"
        f"      api_base: {upstream_base}\n"
        "      api_key: os.environ/FAKE_KEY\n"
        f"      input_cost_per_token: {INPUT_COST}\n"
        f"      output_cost_per_token: {OUTPUT_COST}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )


def start_tollgate(
    procs: Processes,
    tmp: Path,
    logs: Path,
    upstream: FakeUpstream,
    store: Store,
    config_file: Path | None,
    cpus: set[int] | None,
) -> Target:
    cfg = config_file or tmp / "tollgate.yaml"
    if config_file is None:
        write_tollgate_config(cfg, upstream.base_url)
    env = base_env()
    env.update(
        {
            "TOLLGATE_DATABASE_URL": store.url,
            "TOLLGATE_ADMIN_KEY": "adm-" + secrets.token_hex(16),
            "FAKE_KEY": "fake-upstream-key",
        }
    )
    log = logs / "tollgate.log"
    port = free_port()
    proc = procs.spawn(
        "tollgate",
        [*tollgate_cmd(), "serve", "--config", str(cfg), "--host", HOST, "--port", str(port)],
        env=env,
        log=log,
        cwd=REPO,
        cpus=cpus,
    )
    wait_ready(f"http://{HOST}:{port}/readyz", proc, log, timeout_s=90)
    keys = subprocess.run(
        [*tollgate_cmd(), "keys", "create", "--tenant", "bench", "--config", str(cfg)],
        env=env,
        cwd=REPO,
        capture_output=True,
        timeout=90,
        check=False,
    )
    if keys.returncode != 0:  # older CLIs take no --config for keys
        keys = subprocess.run(
            [*tollgate_cmd(), "keys", "create", "--tenant", "bench"],
            env=env,
            cwd=REPO,
            capture_output=True,
            timeout=90,
            check=False,
        )
    lines = keys.stdout.decode().strip().splitlines()
    if keys.returncode != 0 or not lines:
        raise RuntimeError(
            f"tollgate keys create failed ({keys.returncode}): "
            f"{keys.stdout.decode()[-1500:]}{keys.stderr.decode()[-1500:]}"
        )
    return Target("tollgate", f"http://{HOST}:{port}/v1", "fake", lines[-1].strip(), proc)


def start_litellm(
    procs: Processes, tmp: Path, logs: Path, upstream: FakeUpstream, cpus: set[int] | None
) -> Target:
    cfg = tmp / "litellm.yaml"
    write_litellm_config(cfg, upstream.base_url)
    master = "sk-" + secrets.token_hex(24)
    env = base_env()
    env.update(
        {
            "FAKE_KEY": "fake-upstream-key",
            "LITELLM_MASTER_KEY": master,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no internet: use the bundled cost map
            "LITELLM_TELEMETRY": "False",
        }
    )
    log = logs / "litellm.log"
    port = free_port()
    exe = VENV_BIN / "litellm"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "litellm.proxy.proxy_cli"]
    proc = procs.spawn(
        "litellm",
        [*cmd, "--config", str(cfg), "--host", HOST, "--port", str(port), "--num_workers", "1"],
        env=env,
        log=log,
        cwd=tmp,
        cpus=cpus,
    )
    wait_ready(f"http://{HOST}:{port}/health/readiness", proc, log, timeout_s=120)
    return Target("litellm", f"http://{HOST}:{port}/v1", "fake", master, proc)


# --------------------------------------------------------------------------- orchestration


@dataclass
class Plan:
    targets: list[str]
    rates: list[float]
    duration_s: float
    max_duration_s: float
    concurrency: list[int]
    warmup_s: float
    timeout_s: float
    max_inflight: int
    stream_ratio: float
    upstream_latency_ms: float
    completion_tokens: int
    store: str
    isolate: bool
    pin: bool
    client: str
    settle_timeout_s: float
    max_restarts: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.overhead",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--targets",
        default=",".join(ALL_TARGETS),
        help="comma list of direct,tollgate,litellm (direct is always measured)",
    )
    p.add_argument("--rates", help="open-loop req/s, comma list (default 25,50,100,200,400)")
    p.add_argument("--duration", type=float, help="seconds per open-loop phase (default 8)")
    p.add_argument("--max-duration", type=float, help="closed-loop phase seconds (default 10)")
    p.add_argument(
        "--concurrency",
        default="16,64",
        help="closed-loop worker counts, comma list; max sustained req/s = best of them",
    )
    p.add_argument("--warmup", type=float, help="warm-up seconds per target (default 2)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout seconds")
    p.add_argument(
        "--max-restarts",
        type=int,
        default=2,
        help="restart a server under test that exited, at most this many times (reported)",
    )
    p.add_argument(
        "--settle-timeout",
        type=float,
        default=60.0,
        help="before each phase, wait up to this long for the target to answer promptly",
    )
    p.add_argument("--max-inflight", type=int, default=2000, help="open-loop in-flight cap")
    p.add_argument(
        "--stream-ratio",
        type=float,
        default=0.0,
        help="fraction of requests that stream (SSE, include_usage)",
    )
    p.add_argument("--upstream-latency-ms", type=float, default=20.0)
    p.add_argument("--completion-tokens", type=int, default=16)
    p.add_argument(
        "--client",
        choices=("aiohttp", "httpx"),
        default="aiohttp",
        help="generator HTTP client (httpx collapses above ~16 concurrent requests here)",
    )
    p.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument(
        "--pg-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="admin URL used to create and drop the bench database",
    )
    p.add_argument("--tollgate-config", type=Path, help="use this gateway config file as is")
    p.add_argument(
        "--no-isolate",
        action="store_true",
        help="do not SIGSTOP the servers that are not being measured",
    )
    p.add_argument(
        "--pin",
        action="store_true",
        help="pin servers under test to CPU 1, upstream + generator to CPU 0",
    )
    p.add_argument("--quick", action="store_true", help="short run: 2 rates, 3 s phases")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "overhead.json")
    p.add_argument("--keep-tmp", action="store_true", help="keep logs and the SQLite file")
    args = p.parse_args(argv)
    # --quick changes the defaults only; explicit options still win
    defaults = {"rates": "25,50,100,200,400", "duration": 8.0, "max_duration": 10.0, "warmup": 2.0}
    if args.quick:
        defaults = {"rates": "50,200", "duration": 3.0, "max_duration": 4.0, "warmup": 1.0}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def make_plan(args: argparse.Namespace) -> Plan:
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(targets) - set(ALL_TARGETS)
    if unknown:
        raise SystemExit(f"unknown targets: {', '.join(sorted(unknown))}")
    if "direct" not in targets:
        targets.insert(0, "direct")
    targets.sort(key=ALL_TARGETS.index)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    if not concurrency or any(c < 1 or c > 1024 for c in concurrency):
        raise SystemExit("--concurrency needs worker counts in 1..1024")
    if not rates or any(r <= 0 for r in rates):
        raise SystemExit("--rates needs positive numbers")
    return Plan(
        targets,
        rates,
        args.duration,
        args.max_duration,
        concurrency,
        args.warmup,
        args.timeout,
        args.max_inflight,
        args.stream_ratio,
        args.upstream_latency_ms,
        args.completion_tokens,
        args.store,
        not args.no_isolate,
        args.pin,
        args.client,
        args.settle_timeout,
        args.max_restarts,
    )


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = make_plan(args)
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    logs = args.json.parent / "overhead-logs"  # server logs are kept (git-ignored bench/out)
    logs.mkdir(parents=True, exist_ok=True)
    procs = Processes()
    store = Store(plan.store, tmp, args.pg_url)
    two_cpus = plan.pin and (os.cpu_count() or 1) >= 2
    server_cpus = {1} if two_cpus else None
    results: list[PhaseResult] = []
    report: dict[str, Any] = {}
    try:
        with (
            sigterm_as_interrupt(),
            FakeUpstream(
                latency_ms=plan.upstream_latency_ms,
                completion_tokens=plan.completion_tokens,
                history_size=0,
            ) as upstream,
        ):
            if two_cpus:
                assert upstream.proc is not None
                os.sched_setaffinity(upstream.proc.pid, {0})
                os.sched_setaffinity(0, {0})
            targets: dict[str, Target] = {
                "direct": Target("direct", upstream.base_url, "fake-model", "fake-upstream-key")
            }
            if "tollgate" in plan.targets:
                store.create()
                log(f"starting tollgate ({plan.store} store) ...")
                targets["tollgate"] = start_tollgate(
                    procs, tmp, logs, upstream, store, args.tollgate_config, server_cpus
                )
            if "litellm" in plan.targets:
                log("starting the LiteLLM proxy ...")
                targets["litellm"] = start_litellm(procs, tmp, logs, upstream, server_cpus)

            def make_gen(t: Target) -> LoadGen:
                return LoadGen(
                    t,
                    timeout_s=plan.timeout_s,
                    pool=min(512, plan.max_inflight),
                    stream_ratio=plan.stream_ratio,
                    max_tokens=None,
                    client=plan.client,
                )

            gens = {name: make_gen(t) for name, t in targets.items()}

            def only(name: str) -> None:
                """Resume ``name``, pause every other server under test."""
                for other, t in targets.items():
                    if t.proc is None:
                        continue
                    if other == name or not plan.isolate:
                        procs.resume(t.proc)
                    else:
                        procs.pause(t.proc)

            dead: set[str] = set()
            restarts: dict[str, list[str]] = {}

            def restart(name: str, before: str) -> str | None:
                """Start an exited server again (bounded), keeping its counters and store."""
                old = targets[name]
                done = restarts.setdefault(name, [])
                if old.proc is None or len(done) >= plan.max_restarts:
                    return None
                rc = old.proc.returncode
                log_file = logs / f"{name}.log"
                with contextlib.suppress(OSError):
                    log_file.replace(logs / f"{name}.exit{len(done) + 1}.log")
                log(f"restarting {name} (it exited with {rc}) before {before}")
                if name == "tollgate":
                    new = start_tollgate(
                        procs, tmp, logs, upstream, store, args.tollgate_config, server_cpus
                    )
                else:
                    new = start_litellm(procs, tmp, logs, upstream, server_cpus)
                new.ok_sent, new.errors_sent = old.ok_sent, old.errors_sent
                targets[name] = new
                gens[name] = make_gen(new)
                dead.discard(name)
                note = f"{name} exited ({rc}) and was restarted before {before}"
                done.append(note)
                return note

            def settle(name: str) -> float:
                """Wait (bounded) until ``name`` answers promptly again: an overloaded server
                keeps working off the backlog that the previous phase left behind."""
                t0 = time.monotonic()
                for _ in range(1000):
                    probe: PhaseResult = run_async(gens[name].closed_loop(2, 0.5))
                    if probe.ok and probe.p99_ms is not None and probe.p99_ms < 1000.0:
                        break
                    if time.monotonic() - t0 > plan.settle_timeout_s or not alive(name):
                        break
                return round(time.monotonic() - t0, 2)

            def alive(name: str) -> bool:
                proc = targets[name].proc
                if proc is None or proc.poll() is None:
                    return True
                if name not in dead:
                    dead.add(name)
                    log(
                        f"{name} exited with {proc.returncode}; its log ends with:\n"
                        f"{tail(logs / (name + '.log'), 2000)}"
                    )
                return False

            def measure(name: str, phase: Callable[[LoadGen], Any]) -> PhaseResult:
                only(name)
                note = None
                if not alive(name):
                    note = restart(name, _phase_label(phase_stub(name, phase, None)))
                    only(name)
                settle_s = settle(name) if targets[name].proc is not None else 0.0
                if not alive(name):
                    proc = targets[name].proc
                    assert proc is not None
                    stub = phase_stub(name, phase, proc.returncode)
                    results.append(stub)
                    return stub
                upstream.reset(config=False, stats=True)
                pids = [p for p in (upstream.proc, targets[name].proc) if p is not None]
                server_pid = pids[-1].pid  # the server under test (the upstream for direct)
                before = cpu_snapshot([p.pid for p in pids])
                server_cpu0, issued0 = _proc_cpu_s(server_pid), targets[name].issued
                res: PhaseResult = run_async(phase(gens[name]))
                res.bench_cpu_cores, res.other_cpu_cores = cpu_since(before)
                issued = targets[name].issued - issued0
                if issued > 0:
                    cpu_ms = (_proc_cpu_s(server_pid) - server_cpu0) * 1000.0 / issued
                    res.server_cpu_ms_per_req = round(cpu_ms, 2)
                res.settle_s = settle_s
                res.note = note
                res.upstream_requests = int(upstream.stats()["total_requests"])
                results.append(res)
                log(
                    f"  {name:9s} {_phase_label(res):>12s}: ok={res.ok} "
                    f"err={res.n_errors} p50={_f(res.p50_ms)} p99={_f(res.p99_ms)} "
                    f"rps={res.achieved_rps:.1f}"
                )
                return res

            for name in plan.targets:
                only(name)
                log(f"warm-up {name} ({plan.warmup_s:.0f}s)")
                run_async(gens[name].closed_loop(8, plan.warmup_s))
            for rate in plan.rates:
                for name in plan.targets:
                    measure(name, functools.partial(_open, rate=rate, plan=plan))
            for name in plan.targets:
                for workers in plan.concurrency:
                    measure(name, functools.partial(_closed, workers=workers, plan=plan))
            for t in targets.values():  # everything runs again (for the store check)
                if t.proc is not None:
                    procs.resume(t.proc)

            compute_added(results)
            report = build_report(plan, args, results, targets)
            if "tollgate" in targets:
                report["store_check"] = check_store(store, targets["tollgate"], procs)
            report["restarts"] = restarts
            report["logs"] = str(logs)
            report["tmp"] = str(tmp) if args.keep_tmp else None
    except KeyboardInterrupt:
        log("interrupted: stopping every server")
        raise
    finally:
        procs.stop_all()
        store.drop()
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return report


def phase_stub(name: str, phase: Any, returncode: int | None) -> PhaseResult:
    """The result row of a phase that could not run because the server had exited."""
    kw = phase.keywords if isinstance(phase, functools.partial) else {}
    plan: Plan = kw["plan"]
    if "rate" in kw:
        res = PhaseResult(name, "rate", kw["rate"], None, plan.duration_s)
    else:
        res = PhaseResult(name, "max", None, kw["workers"], plan.max_duration_s)
    res.errors = {"server_exited": 1}
    res.note = f"server exited with {returncode} before this phase"
    return res


def _open(gen: LoadGen, *, rate: float, plan: Plan) -> Any:
    return gen.open_loop(rate, plan.duration_s, plan.max_inflight)


def _closed(gen: LoadGen, *, workers: int, plan: Plan) -> Any:
    return gen.closed_loop(workers, plan.max_duration_s)


def check_store(store: Store, target: Target, procs: Processes) -> dict[str, Any]:
    """Is every successful Tollgate request in the store? Each success's
    ``x-tollgate-request-id`` must have a row in ``requests``; rows for requests the client
    abandoned (timeouts) are allowed. Waits (bounded) for buffered writes, and stops the
    gateway gracefully (which flushes) if rows are still missing."""
    ids = set(target.request_ids)
    out: dict[str, Any] = {
        "store": store.kind,
        "table": "requests",
        "ok_requests": target.ok_sent,
        "ok_with_request_id": len(ids),
        "error_requests": target.errors_sent,
        "issued_requests": target.issued,
    }
    rows: int | None = None
    missing: int | None = None
    error = None

    def look() -> None:
        nonlocal rows, missing, error
        try:
            rows, found = store.rows_and_ids()
            missing = len(ids - found)
            error = None
        except Exception as exc:  # the table may not exist: report, never crash the bench
            error = f"{type(exc).__name__}: {exc}"[:300]

    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        look()
        if missing == 0 and rows is not None and rows >= target.issued:
            break
        time.sleep(0.5)
    out["rows_while_running"] = rows
    if target.proc is not None and missing != 0:
        procs.stop(target.proc, grace_s=15.0)  # graceful stop flushes any buffer
        look()
        out["rows_after_shutdown"] = rows
    out["rows"] = rows
    out["successes_without_row"] = missing
    out["error"] = error
    out["match"] = bool(
        missing == 0 and len(ids) == target.ok_sent and rows is not None and rows >= len(ids)
    )
    return out


def compute_added(results: list[PhaseResult]) -> None:
    direct = {(r.phase, r.offered_rps, r.concurrency): r for r in results if r.target == "direct"}
    for r in results:
        base = direct.get((r.phase, r.offered_rps, r.concurrency))
        if base is None or r.target == "direct":
            continue
        if r.p50_ms is not None and base.p50_ms is not None:
            r.added_p50_ms = round(r.p50_ms - base.p50_ms, 3)
        if r.p99_ms is not None and base.p99_ms is not None:
            r.added_p99_ms = round(r.p99_ms - base.p99_ms, 3)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 3)


def build_report(
    plan: Plan, args: argparse.Namespace, results: list[PhaseResult], targets: dict[str, Target]
) -> dict[str, Any]:
    by = {(r.target, r.phase, r.offered_rps): r for r in results}
    ratios: list[dict[str, Any]] = []
    goals: dict[str, Any] = {}
    if "tollgate" in targets and "litellm" in targets:
        latency_ok = True
        for rate in plan.rates:
            t, lt = by.get(("tollgate", "rate", rate)), by.get(("litellm", "rate", rate))
            if t is None or lt is None:
                continue
            ratios.append(
                {
                    "rate": rate,
                    "added_p50": _ratio(t.added_p50_ms, lt.added_p50_ms),
                    "added_p99": _ratio(t.added_p99_ms, lt.added_p99_ms),
                    "p50": _ratio(t.p50_ms, lt.p50_ms),
                    "p99": _ratio(t.p99_ms, lt.p99_ms),
                    "server_cpu": _ratio(t.server_cpu_ms_per_req, lt.server_cpu_ms_per_req),
                }
            )
            ok = (
                t.n_errors <= lt.n_errors
                and t.p50_ms is not None
                and (lt.p50_ms is None or t.p50_ms < lt.p50_ms)
                and t.p99_ms is not None
                and (lt.p99_ms is None or t.p99_ms < lt.p99_ms)
            )
            latency_ok = latency_ok and ok
        for workers in plan.concurrency:
            t_c, l_c = (
                next((r for r in results if r.target == name and r.concurrency == workers), None)
                for name in ("tollgate", "litellm")
            )
            ratios.append(
                {
                    "rate": f"max c={workers}",
                    "rps": _ratio(
                        t_c.achieved_rps if t_c else None, l_c.achieved_rps if l_c else None
                    ),
                }
            )
        tmax, lmax = best_max(results, "tollgate"), best_max(results, "litellm")
        max_ratio = _ratio(tmax, lmax)
        ratios.append({"rate": "max", "rps": max_ratio})
        goals = {
            "less_added_latency_at_every_rate": latency_ok,
            "more_max_rps": bool(max_ratio is not None and max_ratio > 1.0),
        }
    return {
        "max_sustained_rps": {name: best_max(results, name) for name in targets},
        "plan": asdict(plan),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "litellm": _version("litellm"),
            "httpx": httpx.__version__,
        },
        "results": [asdict(r) for r in results],
        "ratios": ratios,
        "goals": goals,
        "command": " ".join(["python -m bench.overhead", *sys.argv[1:]]),
    }


def best_max(results: list[PhaseResult], target: str) -> float | None:
    """Max sustained req/s: the best closed-loop throughput over the worker counts tried."""
    rates = [r.achieved_rps for r in results if r.target == target and r.phase == "max"]
    return round(max(rates), 1) if rates else None


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- output


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _phase_label(r: PhaseResult) -> str:
    return f"{r.offered_rps:g} req/s" if r.phase == "rate" else f"max c={r.concurrency}"


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=170)
    plan = report["plan"]
    results = [PhaseResult(**{k: v for k, v in r.items()}) for r in report["results"]]
    table = Table(
        title=(
            f"Gateway overhead — upstream latency {plan['upstream_latency_ms']:g} ms, "
            f"{plan['completion_tokens']} completion tokens, "
            f"stream ratio {plan['stream_ratio']:g}, store {plan['store']}"
        ),
        caption=(
            f"{report['machine']['cpus']} CPU cores shared by the load generator, the fake "
            "upstream and the server under test (others paused: "
            f"{'yes' if plan['isolate'] else 'no'}; pinned: {'yes' if plan['pin'] else 'no'})."
            " added = target minus direct at the same rate. Latency from scheduled send."
            " cores bench/other = CPU cores used during the phase by generator + upstream +"
            " target / by every other process on the host (shared machine: compare with care)."
            " server CPU ms/req = CPU time of the server under test per request sent (less"
            " sensitive to other load than latency)."
        ),
    )
    for col in (
        "phase",
        "target",
        "achieved req/s",
        "ok",
        "errors",
        "p50 ms",
        "p99 ms",
        "added p50 ms",
        "added p99 ms",
        "gen lag p99 ms",
        "server CPU ms/req",
        "cores bench/other",
    ):
        table.add_column(col, justify="left" if col in ("phase", "target", "errors") else "right")
    rates = [r for r in results if r.phase == "rate"]
    maxes = [r for r in results if r.phase == "max"]
    order = {name: i for i, name in enumerate(ALL_TARGETS)}
    rates.sort(key=lambda r: (r.offered_rps or 0, order[r.target]))
    for i, r in enumerate(rates):
        if i and rates[i - 1].offered_rps != r.offered_rps:
            table.add_section()
        table.add_row(
            _phase_label(r),
            r.target,
            _f(r.achieved_rps),
            str(r.ok),
            _errs(r),
            _f(r.p50_ms),
            _f(r.p99_ms),
            _f(r.added_p50_ms),
            _f(r.added_p99_ms),
            _f(r.send_lag_p99_ms),
            _f(r.server_cpu_ms_per_req, 2),
            _cores(r),
        )
    table.add_section()
    maxes.sort(key=lambda r: (r.concurrency or 0, order[r.target]))
    for i, r in enumerate(maxes):
        if i and maxes[i - 1].concurrency != r.concurrency:
            table.add_section()
        table.add_row(
            _phase_label(r),
            r.target,
            _f(r.achieved_rps),
            str(r.ok),
            _errs(r),
            _f(r.p50_ms),
            _f(r.p99_ms),
            _f(r.added_p50_ms),
            _f(r.added_p99_ms),
            "",
            _f(r.server_cpu_ms_per_req, 2),
            _cores(r),
        )
    if report.get("ratios"):
        table.add_section()
        for ratio in report["ratios"]:
            if str(ratio["rate"]).startswith("max"):
                label = "max (best)" if ratio["rate"] == "max" else ratio["rate"]
                table.add_row(label, "Tollgate/LiteLLM", _f(ratio["rps"], 2), *([""] * 9))
            else:
                table.add_row(
                    f"{ratio['rate']:g} req/s",
                    "Tollgate/LiteLLM",
                    "",
                    "",
                    "",
                    _f(ratio["p50"], 2),
                    _f(ratio["p99"], 2),
                    _f(ratio["added_p50"], 2),
                    _f(ratio["added_p99"], 2),
                    "",
                    _f(ratio.get("server_cpu"), 2),
                    "",
                )
    console.print(table)
    check = report.get("store_check")
    if check:
        verdict = "OK" if check["match"] else "MISMATCH"
        console.print(
            f"store ({check['store']}, table {check['table']}): {check['ok_requests']} successful "
            f"Tollgate requests, {check['successes_without_row']} of them without a row "
            f"(matched by x-tollgate-request-id); {check['rows']} rows for "
            f"{check['issued_requests']} requests sent ({check['error_requests']} failed or timed "
            f"out client-side) -> {verdict}"
            + (f"  [{check['error']}]" if check.get("error") else "")
        )
    for notes in (report.get("restarts") or {}).values():
        for note in notes:
            console.print(f"[bold red]restart[/bold red]: {note} (logs: {report.get('logs')})")
    best = report.get("max_sustained_rps") or {}
    console.print(
        "max sustained req/s (best closed-loop level): "
        + ", ".join(f"{name} {_f(v)}" for name, v in best.items())
    )
    goals = report.get("goals")
    if goals:
        console.print(
            "goal: less latency than LiteLLM at every rate: "
            f"{'MET' if goals['less_added_latency_at_every_rate'] else 'NOT MET'}; "
            f"more max req/s: {'MET' if goals['more_max_rps'] else 'NOT MET'}"
        )


def _cores(r: PhaseResult) -> str:
    if r.bench_cpu_cores is None or r.other_cpu_cores is None:
        return "-"
    return f"{r.bench_cpu_cores:.2f}/{r.other_cpu_cores:.2f}"


def _errs(r: PhaseResult) -> str:
    if not r.errors:
        return "0"
    return ", ".join(f"{k}={v}" for k, v in sorted(r.errors.items()))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except KeyboardInterrupt:
        return 130
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print_report(report)
    print(f"raw results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
