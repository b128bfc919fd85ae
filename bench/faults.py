"""Fault injection against real processes: prints one row per case — requests, answers ≥ 500,
budget overshoot, rows lost, upstream calls paid but never recorded, recovery seconds.

    python -m bench.faults                  # every case, at full size
    python -m bench.faults --cases db-outage,replica-kill --scale 0.5

Cases (the processes come from ``bench/fault_stack.py``; nothing shared is touched):
- ``db-outage``: one replica on a private PostgreSQL that is stopped (``pg_ctl -m immediate``)
  for 15 s under load; known keys must keep being served (rows spool, then replay).
- ``redis-kill``: a budgeted key under load while the private Redis is killed (``kill -9``,
  every key lost) and restarted; the budget must not be overspent (``redis.on_failure:
  closed``: 503 with ``retry-after`` while it is down).
- ``hostile-tenant``: one tenant sends malformed input concurrently while another works: no
  5xx for anyone, the other tenant unharmed, no circuit opened.
- ``load-300``: 300 concurrent requests on one replica (budgeted key): no 5xx, every answer
  recorded.
- ``replica-kill``: three replicas behind nginx; one is ``kill -9``-ed mid-load and restarted:
  no row lost, no paid call unrecorded (its journal is recovered), its budget holds released
  within their expiry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from bench.fault_stack import ADMIN_KEY, Nginx, PrivatePostgres, PrivateRedis, Replica, wait_for
from gateway.devtools.fake_upstream import FakeUpstream

PRICE_IN, PRICE_OUT = Decimal("0.000001"), Decimal("0.000002")
HOLD_TTL_S = 20  # the suite's reservation lifetime (server.reservation_ttl_s)


@dataclass
class Row:
    case: str
    requests: int = 0
    ok: int = 0
    s5xx: int = 0
    s503_retry: int = 0  # of s5xx: 503 with retry-after (a dependency down, by design)
    overshoot_usd: Decimal | None = None
    rows_lost: int | None = None
    paid_unrecorded: int | None = None
    recovery_s: float | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> float:
        return self.ok / self.requests if self.requests else 0.0


@dataclass
class Reply:
    status: int
    request_id: str | None
    retry_after: str | None
    tenant: str
    t: float
    error: str | None = None  # a transport failure (status 599): what the client saw


# -- load ------------------------------------------------------------------------------------
def chat(text: str, **kw: Any) -> dict[str, Any]:
    return {"model": "fake", "messages": [{"role": "user", "content": text}], **kw}


async def drive(
    url: str,
    key: str,
    *,
    concurrency: int,
    duration_s: float | None = None,
    total: int | None = None,
    body: Callable[[int], dict[str, Any] | bytes] = lambda i: chat(f"question {i}"),
    tenant: str = "a",
    stop: threading.Event | None = None,
) -> list[Reply]:
    """``concurrency`` clients sending ``body(i)`` until ``duration_s`` or ``total``."""
    replies: list[Reply] = []
    counter = iter(range(10**9))
    start = time.monotonic()
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    def more() -> bool:
        if stop is not None and stop.is_set():
            return False
        if duration_s is not None and time.monotonic() - start >= duration_s:
            return False
        return total is None or len(replies) < total

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            while more():
                i = next(counter)
                if total is not None and i >= total:
                    return
                payload = body(i)
                content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    resp = await client.post(
                        "/v1/chat/completions", content=content, headers=headers
                    )
                    status = resp.status_code
                    rid = resp.headers.get("x-tollgate-request-id")
                    retry = resp.headers.get("retry-after")
                    error = None
                except httpx.HTTPError as exc:  # connection cut: counted as a 5xx
                    status, rid, retry, error = 599, None, None, f"{type(exc).__name__}: {exc}"
                replies.append(Reply(status, rid, retry, tenant, time.monotonic() - start, error))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return replies


def tally(row: Row, replies: list[Reply]) -> None:
    row.requests += len(replies)
    row.ok += sum(r.status == 200 for r in replies)
    row.s5xx += sum(r.status >= 500 for r in replies)
    row.s503_retry += sum(r.status == 503 and bool(r.retry_after) for r in replies)


# -- the stack ---------------------------------------------------------------------------------
def replica_config(upstream: FakeUpstream, spool: Path, **sections: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "backends": [
            {
                "name": "fake",
                "model": "openai/fake-model",
                "api_base": upstream.base_url,
                "input_cost_per_token": str(PRICE_IN),
                "output_cost_per_token": str(PRICE_OUT),
                "max_retries": 0,
                "timeout_s": 60,
            }
        ],
        "predictor": {"enabled": False},
        "store": {"spool_dir": str(spool), "flush_interval_ms": 50},
        "server": {"key_cache_ttl_s": 1, "reservation_ttl_s": HOLD_TTL_S, "access_log": False},
        "circuit_breaker": {"failure_threshold": 5, "window_s": 30, "cooldown_s": 30},
    }
    for name, value in sections.items():
        cfg[name] = {**cfg.get(name, {}), **value} if isinstance(value, dict) else value
    return cfg


def make_key(url: str, tenant: str, budget: float | None = None) -> tuple[str, str]:
    body: dict[str, Any] = {"tenant": tenant}
    if budget is not None:
        body["max_budget_usd"] = budget
    resp = httpx.post(
        url + "/admin/keys", json=body, headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    resp.raise_for_status()
    return resp.json()["key"], resp.json()["id"]


def recorded(pg: PrivatePostgres) -> tuple[set[str], int, Decimal]:
    """(request ids with an attempt row, attempt rows on the fake backend, their cost)."""
    rows = pg.query("SELECT request_id, cost_usd FROM requests WHERE backend = 'fake'")
    cost = sum((Decimal(r["cost_usd"]) for r in rows if r["cost_usd"] is not None), Decimal(0))
    return {r["request_id"] for r in rows}, len(rows), cost


def key_spend(pg: PrivatePostgres, key_id: str) -> Decimal:
    rows = pg.query("SELECT cost_usd FROM requests WHERE key_id = $1", key_id)
    return sum((Decimal(r["cost_usd"]) for r in rows if r["cost_usd"] is not None), Decimal(0))


def drained(replica: Replica) -> bool:
    store = httpx.get(replica.url + "/readyz", timeout=5).json()["store"]
    return bool(store["ok"] and store["pending_rows"] == 0 and store["spool_files"] == 0)


def rows_lost(pg: PrivatePostgres, replies: list[Reply]) -> int:
    ids, _, _ = recorded(pg)
    return sum(1 for r in replies if r.status == 200 and r.request_id not in ids)


class Stack:
    """A private PostgreSQL, a private Redis and one fake upstream, shared by the cases."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pg = PrivatePostgres(workdir)
        self.redis = PrivateRedis(workdir)
        self.upstream = FakeUpstream(port=0, latency_ms=20, completion_tokens=50)
        self.replicas: list[Replica] = []
        self.nginx: Nginx | None = None

    def __enter__(self) -> Stack:
        self.pg.init()
        self.redis.start()
        self.upstream.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_replicas()
        self.upstream.__exit__(None, None, None)
        self.redis.kill()
        self.pg.stop()

    def close_replicas(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
            self.nginx = None
        for replica in self.replicas:
            replica.stop()
        self.replicas = []

    def replica(self, name: str, **sections: Any) -> Replica:
        spool = self.workdir / f"spool-{name}"
        env = {"TOLLGATE_DATABASE_URL": self.pg.url, "TOLLGATE_REDIS_URL": self.redis.url}
        cfg = replica_config(self.upstream, spool, **sections)
        replica = Replica(name, cfg, self.workdir, env)
        replica.start()
        self.replicas.append(replica)
        return replica

    def reset_upstream(self, **knobs: Any) -> None:
        self.upstream.reset()
        self.upstream.configure(**{"latency_ms": 20, "completion_tokens": 50, **knobs})


def after(delay_s: float, fn: Callable[[], Any]) -> threading.Thread:
    def run() -> None:
        time.sleep(delay_s)
        fn()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# -- the cases ---------------------------------------------------------------------------------
def case_db_outage(stack: Stack, scale: float) -> Row:
    row = Row("db-outage (15 s)")
    gw = stack.replicas[0] if stack.replicas else stack.replica("r1")
    plain, _ = make_key(gw.url, "db-known")
    budgeted, _ = make_key(gw.url, "db-known-budget", budget=100)
    for key in (plain, budgeted):  # known keys: seen before the outage
        assert (
            httpx.post(
                gw.url + "/v1/chat/completions",
                json=chat("warm up"),
                headers={"authorization": f"Bearer {key}"},
            ).status_code
            == 200
        )
    outage_s, lead_s, tail_s = 15.0, 3.0, 5.0 * scale + 2
    restarted: dict[str, float] = {}

    def back() -> None:
        stack.pg.start()
        restarted["at"] = time.monotonic()

    after(lead_s, stack.pg.stop)
    after(lead_s + outage_s, back)
    duration = lead_s + outage_s + tail_s

    async def both() -> list[Reply]:
        a, b = await asyncio.gather(
            drive(gw.url, plain, concurrency=max(2, int(8 * scale)), duration_s=duration),
            drive(gw.url, budgeted, concurrency=max(2, int(8 * scale)), duration_s=duration),
        )
        return a + b

    replies = asyncio.run(both())
    tally(row, replies)
    wait_for(lambda: drained(gw), 120, "the spool to drain")
    row.recovery_s = time.monotonic() - restarted["at"]  # database back -> every row in it
    row.rows_lost = rows_lost(stack.pg, replies)
    row.notes.append(f"success {row.success:.1%} for known keys through the outage")
    return row


def case_redis_kill(stack: Stack, scale: float) -> Row:
    row = Row("redis-kill (5 s, closed)")
    gw = stack.replicas[0] if stack.replicas else stack.replica("r1")
    budget = Decimal("0.02")
    key, key_id = make_key(gw.url, f"redis-{uuid.uuid4().hex[:6]}", budget=float(budget))
    after(1.0, stack.redis.kill)
    after(6.0, stack.redis.start)
    replies = asyncio.run(
        drive(
            gw.url,
            key,
            concurrency=max(4, int(16 * scale)),
            duration_s=14,
            body=lambda i: chat(f"spend {i}", max_tokens=60),
        )
    )
    tally(row, replies)
    wait_for(lambda: drained(gw), 60, "the store to catch up")
    row.overshoot_usd = key_spend(stack.pg, key_id) - budget
    ok_after = [r.t for r in replies if r.status in (200, 402, 429) and r.t > 6.0]
    row.recovery_s = (min(ok_after) - 6.0) if ok_after else None
    row.rows_lost = rows_lost(stack.pg, replies)
    return row


def hostile_bodies() -> list[bytes]:
    big = "x " * 600_000
    return [
        json.dumps(
            chat("hi") | {"messages": [{"role": "user", "content": [{"type": "bogus"}]}]}
        ).encode(),
        b'{"model": "fake", "messages": [{"role": "user", "content": "\\ud800 lone"}]}',
        json.dumps(chat("hi", max_tokens=10**30)).encode(),
        b'{"model": "fake", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
        b'{"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e999}',
        json.dumps({"model": "fake", "messages": "not a list"}).encode(),
        b'{"model": "fake", "messages": [',
        json.dumps(chat(big)).encode(),
        json.dumps(chat("hi", n=10**9)).encode(),
        json.dumps(chat("hi", temperature="hot")).encode(),
        json.dumps(chat("hi", max_completion_tokens=-5)).encode(),
        json.dumps({"model": "fake", "messages": [{"role": "wizard", "content": "hi"}]}).encode(),
    ]


def case_hostile_tenant(stack: Stack, scale: float) -> Row:
    row = Row("hostile-tenant")
    gw = stack.replicas[0] if stack.replicas else stack.replica("r1")
    bad_key, _ = make_key(gw.url, "hostile", budget=1)
    good_key, _ = make_key(gw.url, "innocent", budget=1)
    garbage = hostile_bodies()

    async def both() -> tuple[list[Reply], list[Reply]]:
        bad, good = await asyncio.gather(
            drive(
                gw.url,
                bad_key,
                concurrency=max(4, int(24 * scale)),
                total=int(300 * scale) + 24,
                body=lambda i: garbage[i % len(garbage)],
                tenant="hostile",
            ),
            drive(gw.url, good_key, concurrency=4, total=int(100 * scale) + 10, tenant="innocent"),
        )
        return bad, good

    bad, good = asyncio.run(both())
    tally(row, bad + good)
    row.ok = sum(r.status == 200 for r in good)
    row.requests = len(good)  # success is the innocent tenant's
    ready = httpx.get(gw.url + "/readyz", timeout=5).json()
    circuit = ready["backends"]["fake"]["circuit"]
    statuses: dict[int, int] = {}
    for r in bad:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    row.extra = {"hostile_statuses": statuses, "circuit": circuit, "hostile_requests": len(bad)}
    row.notes.append(
        f"hostile: {len(bad)} requests, statuses {dict(sorted(statuses.items()))}; innocent: "
        f"{row.ok}/{len(good)} ok; circuit {circuit}"
    )
    return row


def case_load(stack: Stack, scale: float) -> Row:
    concurrency = max(20, int(300 * scale))
    row = Row(f"load-{concurrency}")
    gw = stack.replicas[0] if stack.replicas else stack.replica("r1")
    key, _ = make_key(gw.url, "load", budget=1000)
    replies = asyncio.run(drive(gw.url, key, concurrency=concurrency, total=concurrency * 2))
    tally(row, replies)
    wait_for(lambda: drained(gw), 60, "the store to catch up")
    row.rows_lost = rows_lost(stack.pg, replies)
    others = sorted({r.status for r in replies if r.status != 200})
    errors = sorted({r.error for r in replies if r.error})
    row.notes.append(
        f"{concurrency} concurrent: statuses other than 200: {others or 'none'}"
        + (f"; transport errors: {errors[:3]}" if errors else "")
    )
    return row


def case_replica_kill(stack: Stack, scale: float) -> Row:
    row = Row("replica-kill (kill -9, 3 behind nginx)")
    stack.close_replicas()
    stack.reset_upstream(latency_ms=400)
    replicas = [stack.replica(f"k{i}") for i in range(3)]
    nginx = stack.nginx = Nginx(stack.workdir, replicas).start()
    key, key_id = make_key(nginx.url, "kill", budget=50)
    victim = replicas[1]
    killed: dict[str, float] = {}

    def kill() -> None:
        victim.kill()
        killed["at"] = time.monotonic()

    after(3.0, kill)
    after(5.0, victim.start)
    replies = asyncio.run(drive(nginx.url, key, concurrency=max(6, int(24 * scale)), duration_s=10))
    tally(row, replies)
    # the dead replica's budget holds lapse by themselves within their expiry: from the load's
    # end only its holds are left (every answered request settled its own)
    from gateway.state.redis import RedisState

    async def in_flight() -> int:
        state = RedisState(stack.redis.url, "tg:")
        try:
            return (await state.budget_spent(f"key:{key_id}"))[1]
        finally:
            await state.close()

    wait_for(lambda: asyncio.run(in_flight()) == 0, HOLD_TTL_S + 30, "the holds to lapse", 0.2)
    released = time.monotonic() - killed["at"]
    wait_for(lambda: victim.proc is not None and drained(victim), 180, "the victim to restart")
    for replica in replicas:
        wait_for(lambda r=replica: drained(r), 60, f"{replica.name} to catch up")  # type: ignore[misc]
    rows = stack.pg.query("SELECT status FROM requests WHERE key_id = $1", key_id)
    calls = stack.upstream.stats()["total_requests"]
    interrupted = sum(r["status"] == "interrupted" for r in rows)
    row.paid_unrecorded = max(0, calls - len(rows))
    row.rows_lost = rows_lost(stack.pg, replies)
    row.recovery_s = released
    row.extra.update(upstream_calls=calls, attempt_rows=len(rows), released_s=released)
    row.notes.append(
        f"upstream calls {calls}, attempt rows {len(rows)} ({interrupted} recovered from the "
        f"dead replica's journal as interrupted); the {row.s5xx} answers >= 500 are requests "
        "that were in flight on the killed replica (nginx 502)"
    )
    row.notes.append(
        f"holds of the killed replica released {released:.1f} s after the kill "
        f"(expiry {HOLD_TTL_S} s)"
    )
    stack.close_replicas()
    return row


CASES: dict[str, Callable[[Stack, float], Row]] = {
    "db-outage": case_db_outage,
    "redis-kill": case_redis_kill,
    "hostile-tenant": case_hostile_tenant,
    "load-300": case_load,
    "replica-kill": case_replica_kill,
}


@contextlib.contextmanager
def fault_stack(workdir: Path | None = None) -> Iterator[Stack]:
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tg-faults-")))
            import os
            import shutil

            if os.geteuid() == 0:
                shutil.chown(workdir, "postgres", "postgres")
                os.chmod(workdir, 0o777)
        yield stack.enter_context(Stack(workdir))


def run(cases: list[str], scale: float = 1.0, workdir: Path | None = None) -> list[Row]:
    rows = []
    with fault_stack(workdir) as stack:
        for name in cases:
            try:
                rows.append(CASES[name](stack, scale))
            except Exception as exc:  # one broken case must not hide the others' rows
                rows.append(Row(name, notes=[f"FAILED: {type(exc).__name__}: {exc}"]))
    return rows


def print_table(rows: list[Row]) -> None:
    def f(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.1f}"
        return str(v)

    head = [
        "case",
        "requests",
        "ok",
        "5xx",
        "503+retry-after",
        "overshoot $",
        "rows lost",
        "paid-unrecorded",
        "recovery s",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(
            f"| {r.case} | {r.requests} | {r.success:.1%} | {r.s5xx} | {r.s503_retry} | "
            f"{f(r.overshoot_usd)} | {f(r.rows_lost)} | {f(r.paid_unrecorded)} | "
            f"{f(r.recovery_s)} |"
        )
    for r in rows:
        for note in r.notes:
            print(f"- {r.case}: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--scale", type=float, default=1.0, help="load size (concurrency, counts)")
    args = parser.parse_args(argv)
    rows = run([c.strip() for c in args.cases.split(",") if c.strip()], args.scale)
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
