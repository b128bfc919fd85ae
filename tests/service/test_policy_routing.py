"""Policies in the request path: each objective and constraint changes the backend served,
predictor fallbacks, shadow decisions, escalation on validator rejection, and hot reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.settings import Settings
from tests.support.fakes import FakeCaller, FakePredictor, Script
from tests.support.harness import app_client, backend, chat_body, create_key, settings_for


def portfolio(
    tmp_path: Path, policies: dict[str, Any], rules: list[Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "backends": [
            backend(
                "local",
                input_cost_per_token="0.0000001",
                output_cost_per_token="0.0000001",
                tags=["local"],
                context_window=50,
                capabilities=["streaming"],
            ),
            backend(
                "mini",
                input_cost_per_token="0.000001",
                output_cost_per_token="0.000002",
                capabilities=["streaming", "tools", "json_mode"],
            ),
            backend(
                "frontier",
                input_cost_per_token="0.00001",
                output_cost_per_token="0.00003",
                capabilities=["streaming", "tools", "json_mode", "vision"],
            ),
        ],
        "policies": policies,
        "routing": {"default": next(iter(policies)), "rules": rules or []},
        "predictor": {"enabled": True, "timeout_ms": 30},
        "store": {"spool_dir": str(tmp_path / "spool"), "flush_interval_ms": 20},
        **extra,
    }


def policy(objective: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {
        "candidates": ["local", "mini", "frontier"],
        "objective": objective,
        "predictor_fallback": "frontier",
        **kw,
    }


CHEAPEST = policy(
    {"kind": "cheapest_adequate", "min_success": 0.7, "on_no_adequate": "most_capable"}
)
P = {"local": 0.5, "mini": 0.8, "frontier": 0.95}
#: mini answers first, local checks it, frontier is the escalation tier
CASCADE = {
    "kind": "cascade",
    "first": "mini",
    "check": "local",
    "escalate_to": "frontier",
    "accept_confidence": 0.6,
}


def served(client: Any, key: str, **body: Any) -> Any:
    resp = client.post(
        "/v1/chat/completions",
        json=chat_body(model="auto", **body),
        headers={"authorization": f"Bearer {key}", **body.pop("headers", {})},
    )
    assert resp.status_code == 200, resp.text
    return resp


def test_cheapest_adequate_picks_cheapest_above_threshold(tmp_path: Path, sqlite_url: str) -> None:
    with app_client(
        settings_for(portfolio(tmp_path, {"d": CHEAPEST}), sqlite_url), predictor=FakePredictor(P)
    ) as (client, _):
        key = create_key(client)
        resp = served(client, key)
        assert resp.headers["x-tollgate-backend"] == "mini"
        assert resp.headers["x-tollgate-predicted-success"] == "0.800"
        assert resp.headers["x-tollgate-rule"] == "default"
        rid = resp.headers["x-tollgate-request-id"]
        (row,) = client.get(
            f"/v1/requests/{rid}", headers={"authorization": f"Bearer {key}"}
        ).json()["attempts"]
        assert row["backend"] == "mini"


def test_raising_min_success_moves_up_and_fallbacks_follow(tmp_path: Path, sqlite_url: str) -> None:
    strict = policy({"kind": "cheapest_adequate", "min_success": 0.9, "on_no_adequate": "error"})
    caller = FakeCaller({"frontier": Script(fail=[500, 500])})
    with app_client(
        settings_for(portfolio(tmp_path, {"d": strict}), sqlite_url),
        caller,
        predictor=FakePredictor(P),
    ) as (client, fake):
        key = create_key(client)
        resp = client.post(
            "/v1/chat/completions",
            json=chat_body(model="auto"),
            headers={"authorization": f"Bearer {key}"},
        )
        # only frontier is adequate and it fails: with on_no_adequate=error no inadequate
        # backend is used as a fallback
        assert resp.status_code == 502
        assert fake.calls == {"frontier": 2}


def test_min_cost_per_success_and_max_quality_within(tmp_path: Path, sqlite_url: str) -> None:
    pols = {
        "per-success": policy({"kind": "min_cost_per_success", "min_success": 0.0}),
        "quality": policy({"kind": "max_quality_within", "cost_cap_usd": 0.0001}),
    }
    rules = [{"match": {"headers": {"x-mode": "quality"}}, "policy": "quality"}]
    with app_client(
        settings_for(portfolio(tmp_path, pols, rules), sqlite_url),
        predictor=FakePredictor({"local": 0.05, "mini": 0.8, "frontier": 0.95}),
    ) as (client, _):
        key = create_key(client)
        # cost/success: local 1e-7*3+1e-7*256 / .05 ~ 5.2e-4; mini (3e-6+5.12e-4)/.8 ~ 6.4e-4
        resp = served(client, key)
        assert resp.headers["x-tollgate-policy"].startswith("per-success@")
        assert resp.headers["x-tollgate-backend"] == "local"
        # within 1e-4 per request only local fits (mini's 256 typical output tokens cost 5e-4);
        # with max_tokens=10 mini (2.3e-5) and frontier (3.3e-4 > cap) -> mini is the best
        resp = served(client, key, max_tokens=10, headers={"x-mode": "quality"})
        assert resp.headers["x-tollgate-rule"] == "rules[0]"
        assert resp.headers["x-tollgate-backend"] == "mini"


def test_constraints_remove_candidates(tmp_path: Path, sqlite_url: str) -> None:
    cheap_first = policy({"kind": "cheapest_adequate", "min_success": 0.0})
    with app_client(
        settings_for(portfolio(tmp_path, {"d": cheap_first}), sqlite_url),
        predictor=FakePredictor(P),
    ) as (client, _):
        key = create_key(client)
        assert served(client, key).headers["x-tollgate-backend"] == "local"
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        assert served(client, key, tools=[tool]).headers["x-tollgate-backend"] == "mini"
        # context window: local holds 50 tokens, this prompt + max_tokens does not fit
        long = " ".join(["word"] * 60)
        assert served(client, key, text=long).headers["x-tollgate-backend"] == "mini"
        image = [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]
        resp = client.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": "auto", "messages": [{"role": "user", "content": image}]},
        )
        assert resp.headers["x-tollgate-backend"] == "frontier"
        # a tag the request requires (data must stay local): only local qualifies
        resp = served(client, key, headers={"x-tollgate-require-tags": "local"})
        assert resp.headers["x-tollgate-backend"] == "local"
        resp = client.post(
            "/v1/chat/completions",
            json=chat_body(model="auto", tools=[tool]),
            headers={"authorization": f"Bearer {key}", "x-tollgate-require-tags": "local"},
        )
        assert resp.status_code == 400 and "cannot serve" in resp.json()["error"]["message"]


def test_open_circuit_and_missing_credentials_remove_candidates(
    tmp_path: Path, sqlite_url: str
) -> None:
    cfg = portfolio(tmp_path, {"d": policy({"kind": "cheapest_adequate", "min_success": 0.0})})
    cfg["backends"][0]["api_key"] = "os.environ/TOLLGATE_TEST_UNSET_KEY"
    with app_client(settings_for(cfg, sqlite_url), predictor=FakePredictor(P)) as (client, _):
        key = create_key(client)
        resp = served(client, key)
        assert resp.headers["x-tollgate-backend"] == "mini"


def test_predictor_timeout_applies_declared_fallback(tmp_path: Path, sqlite_url: str) -> None:
    with app_client(
        settings_for(portfolio(tmp_path, {"d": CHEAPEST}), sqlite_url),
        predictor=FakePredictor(P, delay_s=1.0),
    ) as (client, _):
        key = create_key(client)
        resp = served(client, key)
        assert resp.headers["x-tollgate-backend"] == "frontier"
        assert resp.headers["x-tollgate-decision"] == "predictor_unavailable"


def test_tenant_rules_and_shadow_policy(tmp_path: Path, sqlite_url: str) -> None:
    pols = {
        "d": CHEAPEST,
        "vip": policy({"kind": "cheapest_adequate", "min_success": 0.9}),
        "shadow-cheap": policy({"kind": "cheapest_adequate", "min_success": 0.0}),
    }
    rules = [{"name": "vip-tenant", "match": {"tenants": ["bigco"]}, "policy": "vip"}]
    cfg = portfolio(
        tmp_path, pols, rules, shadow=[{"policy": "shadow-cheap", "when_serving": ["d"]}]
    )
    with app_client(settings_for(cfg, sqlite_url), predictor=FakePredictor(P)) as (client, _):
        small, big = create_key(client, "smallco"), create_key(client, "bigco")
        assert served(client, big).headers["x-tollgate-backend"] == "frontier"
        resp = served(client, small)
        assert resp.headers["x-tollgate-backend"] == "mini"
        rid = resp.headers["x-tollgate-request-id"]
        client.get(f"/v1/requests/{rid}", headers={"authorization": f"Bearer {small}"})
        import sqlite3

        con = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
        (decision,) = con.execute(
            "select decision from requests where request_id=?", (rid,)
        ).fetchone()
        import json

        stored = json.loads(decision)
        assert stored["backend"] == "mini" and stored["shadow"][0]["decision"]["backend"] == "local"
        assert stored["prediction"]["p_success"]["frontier"] == 0.95


def test_predicted_answer_length_moves_a_cost_aware_choice(tmp_path: Path, sqlite_url: str) -> None:
    # $0.04 per success: frontier's +0.15 P(success) is not worth its typical 256-token
    # answer (+$0.0072), but is worth it when the predictor expects a quarter of that
    pols = {"d": policy({"kind": "min_cost_per_success", "success_value_usd": "0.04"})}
    cfg = settings_for(portfolio(tmp_path, pols), sqlite_url)
    with app_client(cfg, predictor=FakePredictor(P)) as (client, _):
        assert served(client, create_key(client)).headers["x-tollgate-backend"] == "mini"
    short = FakePredictor(P, output_ratio={"frontier": 0.25})
    with app_client(cfg, predictor=short) as (client, _):
        key = create_key(client)
        resp = served(client, key)
        assert resp.headers["x-tollgate-backend"] == "frontier"
        # the client's max_tokens bounds the answer: the ratio no longer applies
        assert served(client, key, max_tokens=256).headers["x-tollgate-backend"] == "mini"
        rid = resp.headers["x-tollgate-request-id"]
        client.get(f"/v1/requests/{rid}", headers={"authorization": f"Bearer {key}"})
    import json
    import sqlite3

    con = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    (decision,) = con.execute("select decision from requests where request_id=?", (rid,)).fetchone()
    stored = json.loads(decision)
    assert stored["prediction"]["output_ratio"] == {"frontier": 0.25}
    rows = {c["name"]: c for c in stored["candidates"]}
    assert float(rows["frontier"]["expected_cost_usd"]) < 0.25 * 256 * 0.00003 + 0.001


def test_escalation_on_validator_rejection_counts_in_task_cost(
    tmp_path: Path, sqlite_url: str
) -> None:
    esc = policy(
        {"kind": "cheapest_adequate", "min_success": 0.0},
        escalation={
            "validators": [{"kind": "regex", "pattern": "^w0 w1 w2 w3"}],
            "max_escalations": 2,
            "order": "candidates",
        },
    )
    caller = FakeCaller({"local": Script(answer_tokens=2), "mini": Script(answer_tokens=3)})
    with app_client(
        settings_for(portfolio(tmp_path, {"d": esc}), sqlite_url),
        caller,
        predictor=FakePredictor(P),
    ) as (client, _):
        key = create_key(client)
        resp = client.post(
            "/v1/chat/completions",
            json=chat_body(model="auto"),
            headers={"authorization": f"Bearer {key}", "x-tollgate-task-id": "t1"},
        )
        assert resp.status_code == 200
        assert resp.headers["x-tollgate-backend"] == "frontier"
        assert resp.headers["x-tollgate-validation"] == "passed"
        assert resp.headers["x-tollgate-escalations"] == "2"
        rows = client.get(
            f"/v1/requests/{resp.headers['x-tollgate-request-id']}",
            headers={"authorization": f"Bearer {key}"},
        ).json()
        assert [(a["backend"], a["status"]) for a in rows["attempts"]] == [
            ("local", "rejected"),
            ("mini", "rejected"),
            ("frontier", "ok"),
        ]
        from decimal import Decimal

        assert Decimal(resp.headers["x-tollgate-cost-usd"]) == sum(
            Decimal(a["cost_usd"]) for a in rows["attempts"]
        )


def test_hot_reload_swaps_valid_and_rejects_invalid(tmp_path: Path, sqlite_url: str) -> None:
    cfg = portfolio(tmp_path, {"d": CHEAPEST})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    base = settings_for(cfg, sqlite_url)
    settings = Settings(
        config=base.config,
        config_path=str(path),
        database_url=sqlite_url,
        admin_key="admin-secret-for-tests",
    )
    admin = {"authorization": "Bearer admin-secret-for-tests"}
    with app_client(settings, predictor=FakePredictor(P)) as (client, _):
        key = create_key(client)
        assert served(client, key).headers["x-tollgate-backend"] == "mini"
        cfg["policies"]["d"]["objective"]["min_success"] = 0.9
        path.write_text(yaml.safe_dump(cfg))
        result = client.post("/admin/reload", headers=admin).json()
        assert result["ok"] and result["changed"]
        assert served(client, key).headers["x-tollgate-backend"] == "frontier"
        cfg["policies"]["d"]["objective"]["min_success"] = 9  # invalid
        path.write_text(yaml.safe_dump(cfg))
        bad = client.post("/admin/reload", headers=admin)
        assert bad.status_code == 422
        assert "policies.d.objective.min_success" in bad.json()["errors"][0]
        assert served(client, key).headers["x-tollgate-backend"] == "frontier"  # old one kept


def test_validator_verdict_is_recorded_as_the_task_outcome(tmp_path: Path, sqlite_url: str) -> None:
    esc = policy(
        {"kind": "cheapest_adequate", "min_success": 0.0},
        escalation={
            "validators": [{"kind": "regex", "pattern": "^w0 w1 w2 w3"}],
            "max_escalations": 1,
            "order": "candidates",
        },
    )
    caller = FakeCaller({"local": Script(answer_tokens=2), "mini": Script(answer_tokens=3)})
    with app_client(
        settings_for(portfolio(tmp_path, {"d": esc}), sqlite_url),
        caller,
        predictor=FakePredictor(P),
    ) as (client, _):
        key = create_key(client)
        resp = client.post(
            "/v1/chat/completions",
            json=chat_body(model="auto"),
            headers={"authorization": f"Bearer {key}", "x-tollgate-task-id": "v1"},
        )
        # one escalation allowed: local then mini, both rejected -> the answer is returned
        # with validation failed, and the task's validator outcome is a failure
        assert resp.headers["x-tollgate-validation"] == "failed"
        import sqlite3
        import time

        con = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
        for _ in range(50):
            rows = con.execute("select source, success from outcomes").fetchall()
            if rows:
                break
            time.sleep(0.05)
        assert rows == [("validator", 0)]


def test_cascade_checks_and_escalates_on_the_verdict_over_the_answer(
    tmp_path: Path, sqlite_url: str
) -> None:
    """The cascade objective in the request path: mini answers first; the artifact's verdict
    over its answer (here: a closed-form letter earns a check, agreement with the check
    keeps it, disagreement or prose escalates) decides; every call is an attempt of the task."""
    import json
    import sqlite3

    import numpy as np

    from predictors.verdict import FEATURES, VerdictModel

    w = np.zeros(len(FEATURES), np.float32)
    w[FEATURES.index("first_closed")] = 2.0
    w[FEATURES.index("agree")] = 3.0
    predictor = FakePredictor(P)
    predictor.verdict = VerdictModel(w, -2.0)  # type: ignore[attr-defined]
    objective = {**CASCADE, "skip_check_above": 0.9, "escalate_below": 0.2}
    cfg = settings_for(portfolio(tmp_path, {"c": policy(objective)}), sqlite_url)
    caller = FakeCaller({"mini": Script(text="B"), "local": Script(text="B")})
    with app_client(cfg, caller, predictor) as (client, fake):
        key = create_key(client)
        agreed = served(client, key)  # verdict 0.5: check; local agrees: 0.95, keep mini's
        assert agreed.headers["x-tollgate-backend"] == "mini"
        assert agreed.headers["x-tollgate-cascade"] == "check,accept"
        assert agreed.headers["x-tollgate-attempts"] == "2"
        assert agreed.json()["choices"][0]["message"]["content"] == "B"
        fake.scripts["local"] = Script(text="C")  # disagreement: 0.5 < 0.6, escalate
        disagreed = served(client, key)
        assert disagreed.headers["x-tollgate-backend"] == "frontier"
        assert disagreed.headers["x-tollgate-cascade"] == "check,escalate"
        assert disagreed.headers["x-tollgate-attempts"] == "3"
        fake.scripts["mini"] = Script(text="I think it depends on the context")  # prose: 0.12
        prose = served(client, key)
        assert prose.headers["x-tollgate-cascade"] == "escalate"
        assert prose.headers["x-tollgate-attempts"] == "2"
        # a stream is served by the first tier as it answers: no verdict
        streamed = client.post(
            "/v1/chat/completions",
            json=chat_body(model="auto", stream=True),
            headers={"authorization": f"Bearer {key}"},
        )
        assert streamed.headers["x-tollgate-backend"] == "mini"
        assert streamed.headers["x-tollgate-cascade"] == "skipped:stream"
        streamed_id = streamed.headers["x-tollgate-request-id"]
        assert fake.calls == {"mini": 4, "local": 2, "frontier": 2}
        rid = disagreed.headers["x-tollgate-request-id"]
        cost = float(disagreed.headers["x-tollgate-cost-usd"])
        client.get(f"/v1/requests/{rid}", headers={"authorization": f"Bearer {key}"})
    con = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    rows = con.execute(
        "select backend, status, cost_usd, decision from requests where request_id=? "
        "order by attempt",
        (rid,),
    ).fetchall()
    assert [r[0] for r in rows] == ["mini", "local", "frontier"]
    assert all(r[1] == "ok" for r in rows)
    assert sum(float(r[2]) for r in rows) == cost  # every call counts toward the task
    first, check, escalation = (json.loads(r[3]) for r in rows)
    assert first["cascade"]["first"] == "mini" and first["cascade"]["check"] == "local"
    assert check["cascade"]["action"] == "check" and check["cascade"]["verdict"] == 0.5
    assert escalation["cascade"]["action"] == "escalate"
    (stored,) = con.execute(
        "select decision from requests where request_id=?", (streamed_id,)
    ).fetchone()
    assert json.loads(stored)["cascade"]["skipped"] == "stream"  # the plan did not run


def test_a_cascade_reserves_budget_for_its_check_and_escalation(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A cascade may pay for three calls (first, check, escalation): its budget hold covers
    them, so a key whose budget fits one call is refused the cascade up front (429) and
    still served by a one-call policy."""
    cascade = policy(dict(CASCADE))
    one = policy({"kind": "cheapest_adequate", "min_success": 0.7})
    cfg = settings_for(portfolio(tmp_path, {"c": cascade, "d": one}), sqlite_url)
    with app_client(cfg, predictor=FakePredictor(P)) as (client, fake):
        # one call's worst case: 3 prompt tokens at frontier's $0.00001 + 100 at $0.00003
        key = create_key(client, budget=0.005)
        auth = {"authorization": f"Bearer {key}"}
        refused = client.post(
            "/v1/chat/completions", json=chat_body(model="tollgate/c", max_tokens=100), headers=auth
        )
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "budget_exceeded"
        assert sum(fake.calls.values()) == 0
        one_call = client.post(
            "/v1/chat/completions", json=chat_body(model="tollgate/d", max_tokens=100), headers=auth
        )
        assert one_call.status_code == 200, one_call.text


def test_a_refused_check_keeps_the_answer_already_paid_for(tmp_path: Path, sqlite_url: str) -> None:
    """The check backend rejects the request (400): the first answer, already paid for, is
    judged alone and served, not thrown away for the check's error."""
    import numpy as np

    from predictors.verdict import FEATURES, VerdictModel

    w = np.zeros(len(FEATURES), np.float32)
    w[FEATURES.index("first_closed")] = 2.0
    predictor = FakePredictor(P)
    predictor.verdict = VerdictModel(w, -1.5)  # type: ignore[attr-defined]  # "B": 0.62
    objective = {**CASCADE, "skip_check_above": 0.9}
    cfg = settings_for(portfolio(tmp_path, {"c": policy(objective)}), sqlite_url)
    caller = FakeCaller({"mini": Script(text="B"), "local": Script(fail=[400])})
    with app_client(cfg, caller, predictor) as (client, fake):
        resp = served(client, create_key(client))
        assert resp.headers["x-tollgate-backend"] == "mini"
        assert resp.headers["x-tollgate-cascade"] == "check,accept"  # 0.62 >= 0.6 alone
        assert fake.calls == {"mini": 1, "local": 1}
