"""Reading a store replay's input: the most recent logged requests whose first attempt stored a
decision with a prediction, each with every attempt's cost and tokens and its task's outcome
(``gateway.analytics.reports.verdicts``), and what was skipped."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.analytics.backtest.store import LoggedRequest, stored_prediction
from gateway.analytics.reports import verdicts
from gateway.store.models import requests as R
from gateway.store.models import tenants
from policies.rules import DEFAULT_RULE


@dataclass
class StoreLoad:
    """What :func:`load_logged_requests` read: the replayable requests and what it skipped."""

    requests: list[LoggedRequest]
    skipped_no_decision: int = 0
    skipped_no_prediction: int = 0
    outcomes_table: bool = True


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def load_logged_requests(engine: AsyncEngine, limit: int | None = None) -> StoreLoad:
    """The most recent ``limit`` logged requests (all without a limit), oldest first."""
    async with engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        if "requests" not in tables:
            raise ValueError("no Tollgate store there (no requests table): run tollgate db upgrade")
        first = (
            select(
                R.c.request_id,
                R.c.task_id,
                R.c.key_id,
                R.c.policy,
                R.c.backend,
                R.c.decision,
                R.c.created_at,
                tenants.c.name.label("tenant"),
            )
            .select_from(R.outerjoin(tenants, tenants.c.id == R.c.tenant_id))
            .where(R.c.attempt == 1)
            .order_by(R.c.created_at.desc(), R.c.request_id)
        )
        if limit is not None:
            first = first.limit(limit)
        heads = list(reversed((await conn.execute(first)).mappings().all()))
        load = StoreLoad([], outcomes_table="outcomes" in tables)
        keep = []
        for h in heads:
            decision = h["decision"]
            if not isinstance(decision, Mapping) or not decision.get("backend"):
                load.skipped_no_decision += 1
                continue
            if stored_prediction(decision) is None:
                load.skipped_no_prediction += 1
                continue
            keep.append(h)
        ids = [str(h["request_id"]) for h in keep]
        attempts: dict[str, list[Any]] = {}
        for part in _chunks(ids):
            rows = await conn.execute(
                select(
                    R.c.request_id,
                    R.c.attempt,
                    R.c.backend,
                    R.c.status,
                    R.c.prompt_tokens,
                    R.c.completion_tokens,
                    R.c.cost_usd,
                    R.c.decision,
                )
                .where(R.c.request_id.in_(part))
                .order_by(R.c.request_id, R.c.attempt)
            )
            for row in rows.mappings():
                attempts.setdefault(str(row["request_id"]), []).append(row)
        verdict: dict[str, bool] = {}
        if load.outcomes_table:
            v = verdicts(None)
            task_ids = sorted({str(h["task_id"]) for h in keep})
            for part in _chunks(task_ids):
                found = await conn.execute(
                    select(v.c.task_id, v.c.success).where(v.c.task_id.in_(part))
                )
                verdict.update({str(t): bool(ok) for t, ok in found.all()})
    for h in keep:
        decision = dict(h["decision"])
        tries = attempts.get(str(h["request_id"]), [])
        prompt = next((r["prompt_tokens"] for r in tries if r["prompt_tokens"] is not None), None)
        ok = [r for r in tries if answered(r) and r["completion_tokens"] is not None]
        done = ok or [r for r in tries if r["completion_tokens"] is not None]
        completion = done[-1]["completion_tokens"] if done else None
        prediction = stored_prediction(decision)
        assert prediction is not None
        load.requests.append(
            LoggedRequest(
                request_id=str(h["request_id"]),
                task_id=str(h["task_id"]),
                tenant=h["tenant"],
                key_id=h["key_id"],
                policy=str(decision.get("policy") or h["policy"]),
                rule=str(decision.get("rule") or DEFAULT_RULE),
                backend=str(decision["backend"]),
                decision=decision,
                prediction=prediction,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_usd=sum(
                    (Decimal(r["cost_usd"]) for r in tries if r["cost_usd"] is not None), Decimal(0)
                ),
                unpriced=any(r["cost_usd"] is None for r in tries),
                success=verdict.get(str(h["task_id"])),
                served_by=next((str(r["backend"]) for r in reversed(tries) if answered(r)), None),
                rejected=tuple(str(r["backend"]) for r in tries if r["status"] == "rejected"),
            )
        )
    return load


def answered(row: Any) -> bool:
    """An attempt whose answer the client may have got: ``ok``, and not a cascade's check (its
    answer was only compared with the first one, ``gateway.serve.cascade``)."""
    note = row["decision"]
    step = note.get("cascade") if isinstance(note, dict) else None
    return bool(row["status"] == "ok") and not (
        isinstance(step, dict) and step.get("action") == "check"
    )


def check_store_exists(url: str) -> None:
    """A SQLite store must exist already: reading it must not create an empty one. Raises
    ValueError naming the (redacted) URL."""
    import os

    from sqlalchemy.engine import make_url

    from gateway.store.database import redact_url, to_async_url

    parsed = make_url(to_async_url(url))
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not os.path.exists(parsed.database):
            raise ValueError(
                f"no store at {redact_url(to_async_url(url))}: the file does not exist"
            )
