"""Rate limits in the request path with the in-process state (one replica, no Redis): a
key's limits give 429s with OpenAI's headers, and a backend at its limit never turns an
answer already paid for into an error (an escalation tier at its limit is skipped)."""

from __future__ import annotations

from pathlib import Path

from tests.support.fakes import FakeCaller, Script
from tests.support.harness import app_client, backend, chat_body, settings_for

ADMIN = {"authorization": "Bearer admin-secret-for-tests"}


def config(tmp_path: Path) -> dict[str, object]:
    return {
        "backends": [backend("local"), backend("mini", rpm=1)],
        "policies": {
            "esc": {
                "candidates": ["local", "mini"],
                "objective": {"kind": "cheapest_adequate", "min_success": 0.0},
                "predictor_fallback": "first_candidate",
                "escalation": {
                    "validators": [{"kind": "regex", "pattern": "^never"}],
                    "max_escalations": 1,
                    "order": "candidates",
                },
            }
        },
        "routing": {"default": "esc"},
        "predictor": {"enabled": False},
        "store": {"spool_dir": str(tmp_path / "spool"), "flush_interval_ms": 20},
    }


def test_key_limits_and_a_limited_escalation_tier(tmp_path: Path, sqlite_url: str) -> None:
    caller = FakeCaller({"local": Script(answer_tokens=3), "mini": Script(answer_tokens=3)})
    with app_client(settings_for(config(tmp_path), sqlite_url), caller) as (client, _):
        made = client.post("/admin/keys", json={"tenant": "acme", "rpm": 3}, headers=ADMIN)
        key = {"authorization": f"Bearer {made.json()['key']}"}
        # the one call mini may take this minute
        first = client.post("/v1/chat/completions", json=chat_body(model="mini"), headers=key)
        assert first.status_code == 200
        assert first.headers["x-ratelimit-remaining-requests"] == "2"
        # local's answer fails validation; the escalation tier (mini) is at its rpm: the
        # answer already paid for is served, marked as failing validation
        routed = client.post(
            "/v1/chat/completions", json=chat_body(model="tollgate/esc"), headers=key
        )
        assert routed.status_code == 200, routed.text
        assert routed.headers["x-tollgate-backend"] == "local"
        assert routed.headers["x-tollgate-validation"] == "failed"
        pinned = client.post("/v1/chat/completions", json=chat_body(model="mini"), headers=key)
        assert pinned.status_code == 429 and int(pinned.headers["retry-after"]) >= 1
        over = client.post("/v1/chat/completions", json=chat_body(model="local"), headers=key)
        assert over.status_code == 429
        assert over.json()["error"]["type"] == "requests"
        assert over.headers["x-ratelimit-remaining-requests"] == "0"


def test_a_key_token_window_holds_every_call_a_request_may_pay_for(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A routed request whose policy may escalate once may pay for two calls: the key's token
    window must hold both before it is admitted (the settlement counts every call's tokens),
    while a pinned request holds one call's worth."""
    caller = FakeCaller({"local": Script(answer_tokens=3), "mini": Script(answer_tokens=3)})
    with app_client(settings_for(config(tmp_path), sqlite_url), caller) as (client, _):
        made = client.post("/admin/keys", json={"tenant": "acme", "tpm": 300}, headers=ADMIN)
        key = {"authorization": f"Bearer {made.json()['key']}"}
        body = {**chat_body(model="local"), "max_tokens": 200}
        pinned = client.post("/v1/chat/completions", json=body, headers=key)
        assert pinned.status_code == 200, pinned.text  # ~210 tokens held, then settled
        routed = client.post(
            "/v1/chat/completions", json={**body, "model": "tollgate/esc"}, headers=key
        )
        assert routed.status_code == 429, routed.text  # 2 x ~210 > 300
        assert routed.json()["error"]["type"] == "tokens"
        # a stream is not judged by the validators, so it cannot escalate: one call's worth
        stream = {**body, "model": "tollgate/esc", "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=stream, headers=key) as resp:
            assert resp.status_code == 200
            resp.read()
        small = {**body, "model": "tollgate/esc", "max_tokens": 100}
        ok = client.post("/v1/chat/completions", json=small, headers=key)
        assert ok.status_code == 200, ok.text  # 2 x ~110 fits next to the settled calls
