"""A bug surfacing in a backend call (InternalError, or any non-UpstreamFailure exception) is
answered 500 once: no retry, no fallback, and it never opens the backend's circuit breaker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.backends.upstream import InternalError
from gateway.config import BackendConfig
from tests.support.fakes import FakeCaller
from tests.support.harness import chat_body, config_dict, create_key, settings_for


class BuggyCaller(FakeCaller):
    """Raises ``bug`` from the chat call of backend ``cheap`` while ``broken`` is set."""

    def __init__(self, bug: Exception) -> None:
        super().__init__()
        self.bug = bug
        self.broken = True

    async def chat(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]:
        if self.broken and backend.name == "cheap":
            self.calls[backend.name] += 1
            raise self.bug
        return await super().chat(backend, body)


def test_bugs_are_not_retried_and_never_open_the_breaker(tmp_path: Path, sqlite_url: str) -> None:
    for bug in (InternalError("TypeError inside litellm's APIConnectionError"), KeyError("x")):
        caller = BuggyCaller(bug)
        # threshold 3, max_retries 1: counted as backend failures, 2 requests would open it
        settings = settings_for(config_dict(tmp_path), sqlite_url)
        app = create_app(settings, caller=caller)
        with TestClient(app, raise_server_exceptions=False) as client:
            auth = {"authorization": f"Bearer {create_key(client)}"}
            for _ in range(4):
                resp = client.post(
                    "/v1/chat/completions", json=chat_body("tollgate/default"), headers=auth
                )
                assert resp.status_code == 500, resp.text
                assert resp.json()["error"]["type"] == "api_error"
            assert caller.calls["cheap"] == 4, "a bug must not be retried"
            assert caller.calls["premium"] == 0, "a bug must not fall back to another backend"
            caller.broken = False
            resp = client.post(
                "/v1/chat/completions", json=chat_body("tollgate/default"), headers=auth
            )
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-tollgate-backend"] == "cheap", "the breaker must stay closed"
