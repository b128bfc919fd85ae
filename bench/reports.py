"""Report latency at scale: N attempt rows (default 1,000,000) in a fresh PostgreSQL database,
then every report of ``gateway.analytics.reports`` timed (admin scope and one tenant, 30 days
and 7 days).

Synthetic traffic is generated inside PostgreSQL (``generate_series``) so that loading a
million rows takes seconds: 20 tenants, 100 keys, 3 policies, 5 backends over 30 days; one
request in four is retried (its first attempt failed); ~13% of tasks have two requests; 80%
of tasks have an outcome (feedback or validator), the rest are unknown.

    python -m bench.reports                     # 1M rows, prints a table
    python -m bench.reports --rows 200000 --keep   # keep the database for inspection
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text

from gateway.analytics.reports import (
    GROUP_BYS,
    ReportQuery,
    parse_when,
    recent_failures,
    refresh_rollups,
    report,
)
from gateway.pricing import Price
from gateway.store.database import create_engine
from gateway.store.migrate import upgrade_database

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
BACKENDS = ("local-moe", "cheap-api", "mid-api", "premium-api", "embed")
TAGS = {"local": ("local-moe",), "api": ("cheap-api", "mid-api", "premium-api")}
PRICES = {
    "local-moe": Price(Decimal("0.0000001"), Decimal("0.0000002"), "config"),
    "cheap-api": Price(Decimal("0.00000015"), Decimal("0.0000006"), "config"),
    "mid-api": Price(Decimal("0.000001"), Decimal("0.000004"), "config"),
    "premium-api": Price(Decimal("0.0000025"), Decimal("0.00001"), "config"),
    "embed": Price(Decimal("0.00000002"), Decimal("0"), "config"),
}


def fill_sql(rows: int) -> list[str]:
    requests_n = int(rows / 1.25)  # one request in four has two attempts
    price_case = " ".join(
        f"WHEN '{b}' THEN {p.input_per_token} * pt + {p.output_per_token} * ct"
        for b, p in PRICES.items()
    )
    backends = "(ARRAY[" + ",".join(f"'{b}'" for b in BACKENDS) + "])"
    return [
        "INSERT INTO tenants (id, name, created_at) SELECT md5('tenant' || t)::varchar(32), "
        "'tenant-' || t, now() FROM generate_series(0, 19) t",
        "INSERT INTO api_keys (id, tenant_id, name, key_hash, prefix, created_at) "
        "SELECT md5('key' || k)::varchar(32), md5('tenant' || (k % 20))::varchar(32), 'key-' || k, "
        "md5('hash' || k), 'tg-' || k, now() FROM generate_series(0, 99) k",
        f"""
        INSERT INTO requests (id, request_id, task_id, attempt, tenant_id, key_id, endpoint, policy,
            backend, model, status, error_type, http_status, prompt_tokens, completion_tokens,
            usage_source, cost_usd, latency_ms, ttft_ms, streamed, fallback_of, decision,
            created_at, finished_at)
        SELECT md5('a' || r || '.' || a), md5('r' || r), md5('t' || (r * 87 / 100)), a,
            md5('tenant' || (r % 100 % 20)), md5('key' || (r % 100)), 'chat',
            (ARRAY['default', 'tools', 'premium'])[1 + r % 3], b,
            'openai/' || b, CASE WHEN failed THEN 'error' ELSE 'ok' END,
            CASE WHEN failed THEN 'server_error' END, CASE WHEN failed THEN 503 ELSE 200 END,
            CASE WHEN failed THEN NULL ELSE pt END, CASE WHEN failed THEN NULL ELSE ct END,
            CASE WHEN failed THEN NULL ELSE 'upstream' END,
            CASE WHEN failed THEN 0 ELSE (CASE b {price_case} END) END,
            50 + (r * 7919 % 2000) + a * 13, NULL, false, NULL, NULL,
            ts, ts + interval '1 second'
        FROM generate_series(1::bigint, {requests_n}) r
        CROSS JOIN LATERAL generate_series(1, 1 + (r % 4 = 0)::int) a
        CROSS JOIN LATERAL (SELECT
            (r % 4 = 0 AND a = 1) AS failed,
            {backends}[1 + ((r * 2654435761) % 5 + a) % 5] AS b,
            100 + (r * 31 % 900) AS pt, 20 + (r * 17 % 400) AS ct,
            now() - make_interval(secs => (r * 2654435761 % 2592000)) AS ts) x
        ORDER BY ts  -- rows land in time order, as real traffic does
        """,
        """
        INSERT INTO tasks (id, tenant_id, external_id, created_at, last_seen_at)
        SELECT DISTINCT ON (task_id) task_id, tenant_id, task_id, created_at, created_at
        FROM requests
        """,
        """
        INSERT INTO outcomes (id, tenant_id, task_id, request_id, scope, source, success, score,
            comment, detail, backend, cost_usd, created_at, updated_at)
        SELECT md5('o' || id), tenant_id, id, NULL, '',
            CASE WHEN hashtext(id) % 3 = 0 THEN 'validator' ELSE 'feedback' END,
            hashtext(id) % 7 <> 0, NULL, NULL, NULL, NULL, NULL, created_at, created_at
        FROM tasks WHERE hashtext(id) % 5 <> 0
        """,
        "ANALYZE",
    ]


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_SERVER.replace("postgresql://", "postgres://") + "/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def run(
    rows: int, repeat: int, keep: bool, load_only: bool = False, database: str | None = None
) -> list[dict[str, Any]]:
    import asyncpg

    name = database or f"tg_bench_reports_{uuid.uuid4().hex[:8]}"
    if database is None:
        await _admin(f'CREATE DATABASE "{name}"')
    url = f"{PG_SERVER}/{name}"
    results: list[dict[str, Any]] = []
    try:
        await asyncio.to_thread(upgrade_database, url)
        engine = create_engine(url)
        t0 = time.perf_counter()
        loader = await asyncpg.connect(url.replace("postgresql://", "postgres://"))
        try:  # the gateway's engine has a 10 s statement timeout: load over a plain connection
            if database is None:
                for sql in fill_sql(rows):
                    await loader.execute(sql)
            await loader.execute("DELETE FROM report_rollup_days")  # time a full roll-up
            await loader.execute("DELETE FROM report_rollup_state")
        finally:
            await loader.close()
        async with engine.connect() as conn:
            n = (await conn.execute(text("SELECT count(*) FROM requests"))).scalar()
            tenant = (await conn.execute(text("SELECT md5('tenant' || 3)"))).scalar()
        print(f"loaded {n:,} attempt rows in {time.perf_counter() - t0:.1f}s ({name})")
        if load_only:
            await engine.dispose()
            return results
        t0 = time.perf_counter()
        rolled = await refresh_rollups(engine)
        print(
            f"rolled up {len(rolled)} closed days in {time.perf_counter() - t0:.1f}s "
            "(once; later refreshes only touch new or changed days)"
        )
        t0 = time.perf_counter()
        await refresh_rollups(engine)
        print(f"refresh check with nothing to do: {time.perf_counter() - t0:.3f}s")
        tags = dict(TAGS)
        scopes = [("admin", None), ("tenant", tenant)]
        ranges = [("30d", parse_when("31d")), ("7d", parse_when("7d"))]
        for scope, tenant_id in scopes:
            for rname, start in ranges:
                for kind in ("spend", "tasks"):
                    for group_by in GROUP_BYS:
                        q = ReportQuery(group_by, start, None, tenant_id, tags)  # type: ignore[arg-type]
                        times = []
                        for _ in range(repeat):
                            t = time.perf_counter()
                            rep = await report(engine, kind, q, prices=PRICES)  # type: ignore[arg-type]
                            times.append(time.perf_counter() - t)
                        results.append(
                            {
                                "scope": scope,
                                "range": rname,
                                "kind": kind,
                                "group_by": group_by,
                                "rows": len(rep.rows),
                                "tasks": rep.total.tasks,
                                "median_s": statistics.median(times),
                                "max_s": max(times),
                            }
                        )
                        print(
                            f"{scope:6s} {rname:4s} {kind:6s} {group_by:8s} "
                            f"{statistics.median(times):7.3f}s  (max {max(times):.3f}s, "
                            f"{rep.total.tasks:,} tasks)",
                            flush=True,
                        )
                t = time.perf_counter()
                await recent_failures(engine, tenant_id)
                print(f"{scope:6s} {rname:4s} recent failures {time.perf_counter() - t:.3f}s")
        await engine.dispose()
    finally:
        if not keep and database is None:
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--load-only", action="store_true", help="load, keep, time nothing")
    parser.add_argument("--database", help="reuse this already loaded database (kept)")
    parser.add_argument("--out", default="bench/out/reports.json")
    args = parser.parse_args()
    results = asyncio.run(
        run(args.rows, args.repeat, args.keep or args.load_only, args.load_only, args.database)
    )
    if not results:
        return
    worst = max(results, key=lambda r: r["median_s"])
    print(
        f"\nslowest: {worst['scope']} {worst['range']} {worst['kind']} by {worst['group_by']}: "
        f"{worst['median_s']:.3f}s median"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": args.rows, "results": results}, indent=2))


if __name__ == "__main__":
    main()
