"""Where the gateway's CPU goes: a cProfile of one replica serving the pinned (or routed) path.

This module owns ``python -m bench.profile_pinned``. It starts the fake upstream (a subprocess,
fixed latency), builds the gateway app *in this process* (``create_app``, SQLite store in a
temporary directory, in-process state, uvloop + httptools like ``tollgate serve``), warms it up,
then profiles the server's event loop while ``wrk`` (a subprocess) keeps ``--connections``
requests in flight for ``--duration`` seconds, and prints the top functions by own time and by
cumulative time, plus the server's CPU per request. ``--mode routed`` sends ``model: auto``
through the shipped policies instead of pinning one backend (predictor off unless
``--predictor``, so the table shows the gateway, not the encoder).

The profiler counts CPU time (``time.process_time``), so other processes on a shared machine
do not show up as slow functions. cProfile slows every Python call down by a similar factor,
so read the table for shares, not for absolute milliseconds (``bench/overhead.py`` measures
those without a profiler). The stats file goes to ``bench/out/profile_<mode>.prof``
(``python -m pstats`` reads it).

Needs ``wrk`` (``apt-get install wrk``). Everything listens on 127.0.0.1 only; every subprocess
is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import os
import pstats
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench.wrk import WrkResult, run_wrk, wrk_available  # noqa: E402
from gateway.devtools.fake_upstream import FakeUpstream, free_port  # noqa: E402

HOST = "127.0.0.1"
PRICE_IN, PRICE_OUT = "0.0000002", "0.0000006"


class GcWatch:
    """Counts the garbage collector's runs per generation and the CPU they take (their cost
    lands in whatever function allocated last, so the profile alone hides it)."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.cpu_s = 0.0
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.process_time()
        else:
            self.cpu_s += time.process_time() - self._t0
            gen = info["generation"]
            self.counts[gen] = self.counts.get(gen, 0) + 1


def gateway_config(upstream: str, spool: Path, mode: str, predictor: bool) -> dict[str, Any]:
    def entry(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": f"openai/{name}-model",
            "api_base": upstream,
            "input_cost_per_token": PRICE_IN,
            "output_cost_per_token": PRICE_OUT,
        }

    cfg: dict[str, Any] = {
        "backends": [entry("fake"), entry("other")],
        "predictor": {"enabled": predictor},
        "store": {"spool_dir": str(spool), "flush_interval_ms": 200},
        "server": {"anonymous_tenant": "profile"},
    }
    if mode == "routed":
        cfg["policies"] = {
            "default": {
                "candidates": ["fake", "other"],
                "objective": {
                    "kind": "cheapest_adequate",
                    "min_success": 0.5,
                    "on_no_adequate": "most_capable",
                },
                "predictor_fallback": "fake",
            }
        }
        cfg["routing"] = {"default": "default"}
    return cfg


async def serve_and_profile(
    args: argparse.Namespace, tmp: Path, upstream: str, database_url: str | None
) -> None:
    import uvicorn

    from gateway.app import create_app
    from gateway.config import Config
    from gateway.settings import Settings

    data = gateway_config(upstream, tmp / "spool", args.mode, args.predictor)
    environ = {"TOLLGATE_DATABASE_URL": database_url or f"sqlite:///{tmp}/tollgate.db"}
    if args.redis_url:
        environ["TOLLGATE_REDIS_URL"] = args.redis_url
        data["redis"] = {"key_prefix": f"tgprofile:{os.getpid()}:"}
    settings = Settings.from_config(
        Config.model_validate(data), host=HOST, port=free_port(), environ=environ
    )
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=HOST,
            port=settings.port,
            loop="none",
            http="httptools",
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
    )
    serving = asyncio.create_task(server.serve())
    for _ in range(600):
        if server.started:
            break
        await asyncio.sleep(0.1)
    if not server.started:
        raise RuntimeError("the gateway did not start")
    url = f"http://{HOST}:{settings.port}/v1/chat/completions"
    model = "fake" if args.mode == "pinned" else "auto"
    # warm-up: connections, caches, lazy imports
    await asyncio.to_thread(run_wrk, url, model, connections=args.connections, duration_s=2)
    # CPU time, not wall time: on a shared machine a descheduled syscall would otherwise look
    # like the most expensive function
    profiler = cProfile.Profile(time.process_time)
    gc_watch = GcWatch()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    gc.callbacks.append(gc_watch)
    profiler.enable()
    result: WrkResult = await asyncio.to_thread(
        run_wrk, url, model, connections=args.connections, duration_s=args.duration
    )
    profiler.disable()
    gc.callbacks.remove(gc_watch)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    server.should_exit = True
    await serving
    cpu_s = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    stats_path = out / f"profile_{args.mode}.prof"
    profiler.dump_stats(str(stats_path))
    print(
        f"\n{args.mode} path ({'PostgreSQL' if database_url else 'SQLite'} store, "
        f"{'Redis' if args.redis_url else 'in-process'} state), wrk {args.connections} "
        f"connections x {args.duration:g} s under "
        f"cProfile: {result.requests} requests ({result.rps:.0f} req/s), non-2xx "
        f"{result.non_2xx}, server CPU {1000 * cpu_s / max(1, result.requests):.2f} ms/request "
        f"(profiler included); load average {os.getloadavg()[0]:.2f}\n"
    )
    print(
        f"garbage collections: {gc_watch.counts} (generation: count), "
        f"{1000 * gc_watch.cpu_s:.0f} ms CPU in total, "
        f"{gc.get_freeze_count()} objects frozen (gc.freeze at start-up)\n"
    )
    for key, title in (("tottime", "own time"), ("cumulative", "cumulative time")):
        buf = io.StringIO()
        stats = pstats.Stats(profiler, stream=buf).strip_dirs().sort_stats(key)
        stats.print_stats(args.top)
        print(f"--- top {args.top} functions by {title} ---")
        body = buf.getvalue()
        print(body[body.find("   ncalls") :].rstrip())
        print()
    print(f"stats file: {stats_path}")


@contextlib.contextmanager
def throwaway_database(server: str | None) -> Iterator[str | None]:
    """A fresh database on ``server`` for the run, dropped afterwards (None: SQLite)."""
    if server is None:
        yield None
        return
    import asyncpg

    name = f"tollgate_profile_{os.getpid()}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(server, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{server.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mode", choices=("pinned", "routed"), default="pinned")
    p.add_argument("--predictor", action="store_true", help="routed: with the shipped predictor")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--latency-ms", type=float, default=20.0, help="upstream time to answer")
    p.add_argument("--top", type=int, default=30)
    p.add_argument(
        "--pg-url",
        default=None,
        help="a PostgreSQL server (e.g. postgresql://postgres@127.0.0.1:5432/postgres): the "
        "store goes to a throw-away database there instead of SQLite",
    )
    p.add_argument("--redis-url", default=None, help="shared state in Redis (throw-away prefix)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not wrk_available():
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-profile-"))
    try:
        with FakeUpstream(latency_ms=args.latency_ms) as upstream:
            import uvloop

            t0 = time.perf_counter()
            with throwaway_database(args.pg_url) as database_url:
                uvloop.run(serve_and_profile(args, tmp, upstream.base_url, database_url))
            print(f"done in {time.perf_counter() - t0:.0f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
