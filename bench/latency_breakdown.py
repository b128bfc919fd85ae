"""Where a pinned request's added latency goes below saturation: before or after the upstream.

This module owns ``python -m bench.latency_breakdown``. It starts a *timestamping upstream* (a
small aiohttp server in its own process, same fixed latency as the fake upstream, an OpenAI chat
answer with usage) and ``tollgate serve --workers N`` in front of it, configured as in
``bench/overhead.py`` (pinned backend ``fake``; Redis and a throw-away PostgreSQL database when
N > 1). Then it sends an open-loop load at ``--rate`` req/s (aiohttp, each request timed from
its scheduled send, as ``bench/overhead.py``'s open loop) to the upstream directly and through
the gateway, in interleaved rounds.

The upstream writes the time it received each request and the time it answered into the
answer (``system_fingerprint``: ``CLOCK_MONOTONIC``, which every process on the host shares),
and the gateway relays the upstream's bytes unchanged, so each request splits into

* ``pre``: scheduled send -> upstream received it (client, gateway request side, upstream
  connection);
* ``post``: upstream answered -> client has the whole answer (gateway response side: read,
  usage, record, headers, send);

and ``added`` = gateway minus direct, per part (medians of the per-request values). The fixed
upstream latency is in neither part. Needs no ``wrk``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import loadgen  # noqa: E402
from bench.overhead import (  # noqa: E402
    HOST,
    VENV_BIN,
    Processes,
    Store,
    base_env,
    tollgate_config,
    wait_ready,
)
from bench.wrk import chat_body, run_wrk  # noqa: E402
from gateway.devtools.fake_upstream import free_port  # noqa: E402

# --------------------------------------------------------------------------- the upstream


def serve_upstream(port: int, latency_ms: float) -> None:
    """The timestamping upstream (runs in its own process)."""
    import orjson
    import uvloop
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        t_recv = time.monotonic()
        body = orjson.loads(await request.read())
        await asyncio.sleep(latency_ms / 1000)
        answer = {
            "id": "chatcmpl-" + secrets.token_hex(8),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "system_fingerprint": f"{t_recv:.6f}:{time.monotonic():.6f}",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "The fox jumps over the dog."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 21, "completion_tokens": 8, "total_tokens": 29},
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    uvloop.install()
    web.run_app(app, host=HOST, port=port, access_log=None, print=None)


# --------------------------------------------------------------------------- instrumented gateway

STAGES = ("recv", "pipe_in", "up_start", "up_end", "fin_in", "fin_out", "pipe_out", "sent")


def serve_instrumented(config: str, port: int) -> None:
    """One gateway process (``create_app`` under uvicorn, uvloop + httptools, no access log, as
    ``tollgate serve``) whose request path is timed at the ``STAGES`` by wrapping: the ASGI app
    (received / last body byte sent), ``Pipeline.serve``, the fast path's HTTP call and the
    finish step. ``GET /_timings`` answers the times of every request so far (JSON)."""
    import contextvars

    import uvicorn

    from gateway.app import create_app
    from gateway.backends.openai_http import OpenAIHTTPCaller
    from gateway.config import load_settings
    from gateway.http import openai as openai_api
    from gateway.serve.finish import Finish
    from gateway.serve.pipeline import Pipeline

    now, cpu = time.monotonic, time.thread_time
    current: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("marks")
    rows: list[dict[str, Any]] = []

    def timed(cls: Any, name: str, before: str, after: str) -> None:
        orig = getattr(cls, name)

        async def wrapper(*a: Any, **kw: Any) -> Any:
            marks = current.get(None)
            if marks is not None and before not in marks:
                marks[before], marks[before + "_cpu"] = now(), cpu()
            try:
                return await orig(*a, **kw)
            finally:
                if marks is not None:
                    marks[after], marks[after + "_cpu"] = now(), cpu()

        setattr(cls, name, wrapper)

    timed(Pipeline, "serve", "pipe_in", "pipe_out")
    timed(OpenAIHTTPCaller, "_post", "up_start", "up_end")
    timed(Finish, "__call__", "fin_in", "fin_out")
    timed(openai_api, "_authenticate", "auth_in", "auth_out")
    app = create_app(load_settings(config, host=HOST, port=port))

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/_timings":
            body = json.dumps(rows).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            await app(scope, receive, send)
            return
        marks: dict[str, Any] = {"recv": now(), "recv_cpu": cpu()}
        current.set(marks)

        async def timed_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                for k, v in message.get("headers", []):
                    if k == b"x-tollgate-request-id":
                        marks["rid"] = v.decode()
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                marks["sent"], marks["sent_cpu"] = now(), cpu()

        await app(scope, receive, timed_send)
        rows.append(marks)

    uvicorn.run(
        outer,
        host=HOST,
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=30,
    )


# --------------------------------------------------------------------------- load


async def open_loop(url: str, model: str, rate: float, duration_s: float) -> list[tuple[Any, ...]]:
    """(total, pre, post) ms of every answered request, then its request id and its four
    monotonic times (scheduled, upstream received, upstream answered, done); requests sent on
    schedule (``bench.loadgen.open_loop``)."""
    import orjson

    rows: list[tuple[Any, ...]] = []

    def answered(at: float, done: float, headers: Mapping[str, str], raw: bytes) -> None:
        up_recv, up_send = map(float, orjson.loads(raw)["system_fingerprint"].split(":"))
        rid = headers.get("x-tollgate-request-id", "")
        rows.append(
            (
                (done - at) * 1000,
                (up_recv - at) * 1000,
                (done - up_send) * 1000,
                rid,
                at,
                up_recv,
                up_send,
                done,
            )
        )

    body = chat_body(model).encode()
    await loadgen.open_loop(
        url, body, {"content-type": "application/json"}, rate, duration_s, answered
    )
    return rows


def med(rows: list[tuple[Any, ...]], i: int, q: float = 0.5) -> float:
    p = loadgen.percentile((r[i] for r in rows), q)
    return float("nan") if p is None else p


# --------------------------------------------------------------------------- run


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-breakdown-"))
    logs = REPO / "bench" / "out" / "breakdown-logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = Processes()
    store = Store(tmp, args.pg_url if args.workers > 1 else None)
    await store.create()
    results: list[dict[str, Any]] = []
    try:
        env = base_env()
        up_port = free_port()
        up_cmd = [sys.executable, "-m", "bench.latency_breakdown", "--upstream-port", str(up_port)]
        up_cmd += ["--upstream-latency-ms", str(args.upstream_latency_ms)]
        up = procs.spawn(up_cmd, env, logs / "upstream.log")
        base = f"http://{HOST}:{up_port}/v1"
        await wait_ready(f"{base}/models", up, logs / "upstream.log", 30)
        cfg = tollgate_config(base, tmp, False, f"tgbreak:{secrets.token_hex(4)}:")
        tg_env = {**env, "TOLLGATE_DATABASE_URL": store.url}
        if args.workers > 1:
            tg_env["TOLLGATE_REDIS_URL"] = args.redis_url
        port = free_port()
        cmd = [str(VENV_BIN / "tollgate"), "serve", "--config", str(cfg), "--host", HOST]
        cmd += ["--port", str(port), "--workers", str(args.workers), "--log-level", "warning"]
        if args.instrument:  # one instrumented process instead of tollgate serve
            cmd = [sys.executable, "-m", "bench.latency_breakdown", "--instrumented-config"]
            cmd += [str(cfg), "--gateway-port", str(port)]
        gw = procs.spawn(cmd, tg_env, logs / "tollgate.log")
        await wait_ready(f"http://{HOST}:{port}/readyz", gw, logs / "tollgate.log", 300)
        targets = {
            "direct": (f"{base}/chat/completions", "fake-model"),
            "pinned": (f"http://{HOST}:{port}/v1/chat/completions", "fake"),
        }
        for url, model in targets.values():  # warm-up: connections, lazy imports
            await asyncio.to_thread(run_wrk, url, model, connections=8, duration_s=3)
        for rnd in range(args.rounds):
            order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
            for name in order:
                url, model = targets[name]
                rows = await open_loop(url, model, args.rate, args.duration)
                results.append({"round": rnd, "target": name, "rows": rows})
                print(
                    f"[{time.strftime('%H:%M:%S')}] round {rnd + 1} {name:>6}: {len(rows)} ok, "
                    f"p50 {med(rows, 0):.2f} pre {med(rows, 1):.2f} post {med(rows, 2):.2f} ms",
                    file=sys.stderr,
                    flush=True,
                )
        if args.instrument:
            import httpx

            async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
                got = (await client.get(f"http://{HOST}:{port}/_timings")).json()
            stages = {m["rid"]: m for m in got if "rid" in m}
            for r in results:
                r["stages"] = [stages.get(row[3]) for row in r["rows"]]
    finally:
        procs.stop_all()
        await store.drop()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def stage_report(results: list[dict[str, Any]]) -> None:
    """Medians of each segment of the instrumented gateway's requests (client -> upstream ->
    client), in ms."""
    segments: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}

    def add(name: str, a: float | None, b: float | None) -> None:
        if a is not None and b is not None:
            segments.setdefault(name, []).append((b - a) * 1000)

    def add_cpu(name: str, a: str, b: str) -> None:
        if m.get(a + "_cpu") is not None and m.get(b + "_cpu") is not None:
            cpu.setdefault(name, []).append((m[b + "_cpu"] - m[a + "_cpu"]) * 1000)

    for r in results:
        if r["target"] != "pinned":
            continue
        for row, m in zip(r["rows"], r.get("stages") or [], strict=False):
            if not m:
                continue
            _, _, _, _, at, up_recv, up_send, done = row
            g = m.get
            add("client sched -> ASGI app called", at, g("recv"))
            add("ASGI app -> handler (middleware, FastAPI routing, body)", g("recv"), g("auth_in"))
            add_cpu("ASGI app -> handler (middleware, FastAPI routing, body)", "recv", "auth_in")
            add("handler -> Pipeline.serve (auth, model_dump)", g("auth_in"), g("pipe_in"))
            add_cpu("handler -> Pipeline.serve (auth, model_dump)", "auth_in", "pipe_in")
            add("Pipeline.serve -> upstream call (pipeline pre-steps)", g("pipe_in"), g("up_start"))
            add_cpu("Pipeline.serve -> upstream call (pipeline pre-steps)", "pipe_in", "up_start")
            add("upstream call -> upstream received (aiohttp send)", g("up_start"), up_recv)
            add("upstream answered -> call returned (aiohttp read, parse)", up_send, g("up_end"))
            add("call returned -> finish step begins (usage, record)", g("up_end"), g("fin_in"))
            add_cpu("call returned -> finish step begins (usage, record)", "up_end", "fin_in")
            add("finish step", g("fin_in"), g("fin_out"))
            add_cpu("finish step", "fin_in", "fin_out")
            add("finish end -> Pipeline.serve returned", g("fin_out"), g("pipe_out"))
            add_cpu("finish end -> Pipeline.serve returned", "fin_out", "pipe_out")
            add("Pipeline.serve returned -> response sent", g("pipe_out"), g("sent"))
            add_cpu("Pipeline.serve returned -> response sent", "pipe_out", "sent")
            add("response sent -> client has it", g("sent"), done)
    print(
        f"\n{'segment (instrumented gateway, pinned)':<60} {'p50 ms':>7} {'p90 ms':>7} "
        f"{'CPU p50':>7} {'n':>6}"
    )
    for name, values in segments.items():
        p50, p90 = loadgen.percentile(values, 0.5), loadgen.percentile(values, 0.9)
        cpu_p50 = loadgen.percentile(cpu.get(name, []), 0.5)
        used = " " * 7 if cpu_p50 is None else f"{cpu_p50:7.3f}"
        print(f"{name:<60} {p50:7.3f} {p90:7.3f} {used} {len(values):6d}")
    print("CPU p50: the gateway thread's CPU time over the segment (time.thread_time)")


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import os

    la = os.getloadavg()
    which = "(one instrumented process)" if args.instrument else f"--workers {args.workers}"
    print(
        f"\nPinned-path latency breakdown, open loop {args.rate:g} req/s, {args.rounds} rounds of "
        f"{args.duration:g} s, upstream latency {args.upstream_latency_ms:g} ms, tollgate "
        f"{which}, load average {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f}\n"
    )
    head = f"{'target':>6} {'n':>6} {'p50':>7} {'p90':>7} {'pre p50':>8} {'post p50':>9}"
    head += f" {'+p50':>6} {'+pre':>6} {'+post':>6}"
    print(head)
    print("-" * len(head))
    for name in ("direct", "pinned"):
        mine = [r for r in results if r["target"] == name]
        rows = [row for r in mine for row in r["rows"]]
        adds: list[list[float]] = [[], [], []]
        for r in mine:
            base = [d for d in results if d["target"] == "direct" and d["round"] == r["round"]]
            for i in range(3):
                adds[i].append(med(r["rows"], i) - med(base[0]["rows"], i))
        cols = [statistics.median(a) for a in adds]
        extra = "" if name == "direct" else "".join(f" {c:6.2f}" for c in cols)
        print(
            f"{name:>6} {len(rows):6d} {med(rows, 0):7.2f} {med(rows, 0, 0.9):7.2f} "
            f"{med(rows, 1):8.2f} {med(rows, 2):9.2f}{extra}"
        )
    print(
        "\npre = scheduled send -> upstream received; post = upstream answered -> client has the "
        "answer (ms, medians); +x = pinned minus direct, median over rounds of per-round medians"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=300.0, help="open-loop req/s")
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--upstream-latency-ms", type=float, default=20.0)
    p.add_argument(
        "--instrument",
        action="store_true",
        help="one instrumented gateway process (stage times printed) instead of tollgate serve",
    )
    p.add_argument("--upstream-port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--instrumented-config", default="", help=argparse.SUPPRESS)
    p.add_argument("--gateway-port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = p.parse_args(argv)
    if args.upstream_port:
        serve_upstream(args.upstream_port, args.upstream_latency_ms)
        return 0
    if args.instrumented_config:
        serve_instrumented(args.instrumented_config, args.gateway_port)
        return 0
    import uvloop

    results = uvloop.run(run(args))
    report(results, args)
    if args.instrument:
        stage_report(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
