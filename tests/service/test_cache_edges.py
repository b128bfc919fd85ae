"""The response cache behind the other API edges (issue 13): the Anthropic Messages and
Responses endpoints go through the chat pipeline, so their repeated requests are cache hits
too — plain and streamed, re-framed in their own API's shape — and the backend is called once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.harness import app_client, config_dict, create_key, settings_for


@pytest.mark.parametrize(
    ("path", "body", "stream_event"),
    [
        (
            "/v1/messages",
            {"model": "cheap", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
            "event: message_stop",
        ),
        ("/v1/responses", {"model": "cheap", "input": "hello"}, "event: response.completed"),
    ],
)
def test_other_edges_are_served_from_the_cache(
    tmp_path: Path, path: str, body: dict[str, Any], stream_event: str
) -> None:
    cfg = config_dict(tmp_path, cache={"mode": "exact", "ttl_s": 60})
    with app_client(settings_for(cfg, f"sqlite:///{tmp_path}/db.sqlite")) as (client, fake):
        key = create_key(client)
        headers = {"authorization": f"Bearer {key}", "x-api-key": key}
        first = client.post(path, json=body, headers=headers)
        again = client.post(path, json=body, headers=headers)
        streamed = client.post(path, json={**body, "stream": True}, headers=headers)
        assert [r.status_code for r in (first, again, streamed)] == [200] * 3
        assert [r.headers["x-tollgate-cache"] for r in (first, again, streamed)] == [
            "miss",
            "hit",
            "hit",
        ]
        assert again.headers["x-tollgate-cost-usd"] == "0"
        assert stream_event in streamed.text
        assert sum(fake.calls.values()) == 1  # the backend was called once
