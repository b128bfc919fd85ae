"""Budgets with windows and scopes through the app (issue 13), with an injected clock: a daily
tenant budget refuses past its limit and admits again when the day rolls over, seeding a new
process's ledger from the store counts only the current window, policy and tag budgets apply
only to their requests, the admin API sets them, and a policy with ``budget_aware`` moves to
the cheapest adequate backend as the budget runs low (recorded in the decision)."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.support.fakes import FakeCaller, FakePredictor, Script
from tests.support.harness import (
    app_client,
    backend,
    chat_body,
    config_dict,
    create_key,
    settings_for,
)

ADMIN = {"authorization": "Bearer admin-secret-for-tests"}
# FakeCaller: 3 prompt words, 8 answer words at 1e-6 / 2e-6 USD -> $0.000019 a request; the
# reservation with max_tokens 8 is the same, so a $0.0001 budget admits exactly 5
COST = Decimal("0.000019")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def post(
    client: Any, key: str, model: str = "cheap", headers: dict[str, str] | None = None, **body: Any
) -> Any:
    return client.post(
        "/v1/chat/completions",
        json=chat_body(model=model, max_tokens=8, **body),
        headers={"authorization": f"Bearer {key}", **(headers or {})},
    )


def admitted_until_refused(client: Any, key: str, limit: int = 50, **kw: Any) -> int:
    for n in range(limit):
        resp = post(client, key, **kw)
        if resp.status_code != 200:
            assert resp.status_code == 429, resp.text
            assert resp.json()["error"]["code"] == "budget_exceeded"
            return n
    raise AssertionError("never refused")


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_daily_tenant_budget_rolls_over_in_its_time_zone(
    db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("sqlite_url" if db == "sqlite" else "pg_url")
    budgets = {
        "timezone": "Europe/Paris",
        "limits": [{"scope": "tenant", "name": "acme", "max_usd": "0.0001", "window": "day"}],
    }
    cfg = config_dict(tmp_path, budgets=budgets)
    # 22:30 UTC on Nov 30 is 23:30 in Paris: the Paris day ends in 30 minutes
    clock = Clock(datetime(2026, 11, 30, 22, 30, tzinfo=UTC))
    with app_client(settings_for(cfg, url)) as (client, _):
        client.app.state.runtime.budgets.clock = clock
        key = create_key(client, "acme")
        other = create_key(client, "globex")
        assert admitted_until_refused(client, key) == 5
        assert post(client, other).status_code == 200  # another tenant: not this budget
        listing = client.get("/admin/budgets", headers=ADMIN).json()
        (row,) = listing["data"]
        assert listing["timezone"] == "Europe/Paris" and row["source"] == "config"
        assert Decimal(row["spent_usd"]) == 5 * COST
        assert row["ledger_scope"].endswith(":day:2026-11-30")
        clock.now += timedelta(minutes=31)  # 00:01 in Paris: a new day
        assert admitted_until_refused(client, key) == 5
    # a new process (empty in-process ledger) seeds from the store since the window start;
    # the rows above carry the real time, so this reads the real clock: today (in Paris) the
    # budget is spent, tomorrow it is untouched
    with app_client(settings_for(cfg, url)) as (client, _):
        key = create_key(client, "acme")
        assert post(client, key).status_code == 429
    with app_client(settings_for(cfg, url)) as (client, _):
        tomorrow = Clock(datetime.now(UTC) + timedelta(days=1))
        client.app.state.runtime.budgets.clock = tomorrow
        key = create_key(client, "acme")
        assert post(client, key).status_code == 200


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_policy_and_tag_budgets_apply_to_their_requests_only(
    db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("sqlite_url" if db == "sqlite" else "pg_url")
    cfg = config_dict(tmp_path, budgets={"db_cache_s": 0})
    with app_client(settings_for(cfg, url)) as (client, _):
        key = create_key(client, "acme")
        put = client.put(
            "/admin/budgets",
            json={"scope": "policy", "name": "default", "max_usd": "0.0001", "window": "month"},
            headers=ADMIN,
        )
        assert put.status_code == 201, put.text
        assert admitted_until_refused(client, key, model="tollgate/default") == 5
        assert post(client, key, model="cheap").status_code == 200  # pinned: no policy
        # a tag budget: only requests carrying the tag (header or metadata.tags) count
        put = client.put(
            "/admin/budgets",
            json={"scope": "tag", "name": "feature-x", "max_usd": "0.00006"},
            headers=ADMIN,
        )
        assert put.status_code == 201
        assert post(client, key, headers={"x-tollgate-tags": "feature-x,b"}).status_code == 200
        assert post(client, key, metadata={"tags": ["feature-x"]}).status_code == 200
        assert post(client, key, headers={"x-tollgate-tags": "feature-x"}).status_code == 200
        refused = post(client, key, headers={"x-tollgate-tags": "feature-x"})
        assert refused.status_code == 429 and "tag feature-x" in refused.json()["error"]["message"]
        assert post(client, key, headers={"x-tollgate-tags": "other"}).status_code == 200
        # raise it: admitted again on this replica at once
        put = client.put(
            "/admin/budgets",
            json={"scope": "tag", "name": "feature-x", "max_usd": "1"},
            headers=ADMIN,
        )
        assert put.status_code == 200
        assert post(client, key, headers={"x-tollgate-tags": "feature-x"}).status_code == 200
        listing = client.get("/admin/budgets", headers=ADMIN).json()["data"]
        tag_row = next(r for r in listing if r["scope"] == "tag")
        assert Decimal(tag_row["spent_usd"]) == 4 * COST and tag_row["window"] == "total"
        assert client.delete("/admin/budgets/tag/feature-x", headers=ADMIN).status_code == 200
        assert client.delete("/admin/budgets/tag/feature-x", headers=ADMIN).status_code == 404
        bad = client.put(
            "/admin/budgets", json={"scope": "team", "name": "x", "max_usd": 1}, headers=ADMIN
        )
        assert bad.status_code == 400 and bad.json()["error"]
        assert client.get("/admin/budgets").status_code == 401


def test_budget_aware_policy_prefers_cheaper_adequate_backends_as_budget_runs_low(
    tmp_path: Path, sqlite_url: str
) -> None:
    backends = [
        backend("cheap"),
        backend("premium", input_cost_per_token="0.00001", output_cost_per_token="0.00002"),
    ]
    cfg = config_dict(
        tmp_path,
        backends,
        policies={
            "quality": {
                "candidates": ["cheap", "premium"],
                "objective": {"kind": "max_quality_within", "cost_cap_usd": 1},
                "predictor_fallback": "cheap",
                "budget_aware": {"below_fraction": 0.5, "objective": "cheapest_adequate"},
            }
        },
        routing={"default": "quality"},
        predictor={"enabled": True, "timeout_ms": 50},
        budgets={"limits": [{"scope": "tenant", "name": "acme", "max_usd": "0.001"}]},
    )
    caller = FakeCaller({"premium": Script(answer_tokens=8)})
    predictor = FakePredictor({"cheap": 0.8, "premium": 0.95})
    with app_client(settings_for(cfg, sqlite_url), caller, predictor) as (client, _):
        key = create_key(client, "acme")
        chosen = []
        for _ in range(8):
            resp = post(client, key, model="auto")
            assert resp.status_code == 200, resp.text
            chosen.append(resp.headers["x-tollgate-backend"])
        # premium costs $0.00019 a request: after 3 (57% spent) the budget is below half
        assert chosen[:3] == ["premium"] * 3 and set(chosen[3:]) == {"cheap"}, chosen
        time.sleep(0.3)
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
            (raw,) = db.execute(
                "SELECT decision FROM requests WHERE request_id = ?",
                (resp.headers["x-tollgate-request-id"],),
            ).fetchone()
        decision = json.loads(raw)
        assert 0 < decision["budget_low"] < 0.5
        assert decision["reason"].startswith("budget low")
