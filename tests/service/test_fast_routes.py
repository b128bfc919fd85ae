"""Service tests: the OpenAI POST routes answer the same with and without the fast route
(gateway.http.fast_routes) in front of FastAPI, valid requests and refused ones alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.http import fast_routes
from tests.support.harness import app_client, config_dict, create_key, settings_for

JSON = {"content-type": "application/json"}

# (path, raw body, extra headers, with a valid key): the answers must not depend on the path
CASES: list[tuple[str, bytes, dict[str, str], bool]] = [
    (
        "/v1/chat/completions",
        b'{"model": "cheap", "messages": [{"role": "user", "content": "a b c"}], "max_tokens": 8}',
        JSON,
        True,
    ),
    (
        "/v1/chat/completions",
        b'{"model": "cheap", "messages": [{"role": "user", "content": "a b c"}]}',
        {"content-type": "application/json; charset=utf-8"},
        True,
    ),
    (
        "/v1/chat/completions",
        b'{"model": "cheap", "messages": [{"role": "user", "content": "a b"}]}',
        {"content-type": "text/plain"},
        True,
    ),
    (
        "/v1/chat/completions",
        b'{"model": "cheap", "messages": [{"role": "user", "content": "a b"}]}',
        {},
        True,
    ),
    ("/v1/chat/completions", b'{"model": "cheap", "messages": ', JSON, True),
    ("/v1/chat/completions", b'{"model": "cheap"}', JSON, True),
    ("/v1/chat/completions", b'{"model": "cheap", "messages": "hello"}', JSON, True),
    ("/v1/chat/completions", b"[1, 2]", JSON, True),
    ("/v1/chat/completions", b"", JSON, True),
    ("/v1/chat/completions", b'{"model": "cheap", "messages": [], "x": NaN}', JSON, True),
    (
        "/v1/chat/completions",
        b'{"model": "no-such-model", "messages": [{"role": "user", "content": "a"}]}',
        JSON,
        True,
    ),
    (
        "/v1/chat/completions",
        b'{"model": "cheap", "messages": [{"role": "user", "content": "a"}]}',
        JSON,
        False,
    ),
    ("/v1/completions", b'{"model": "cheap", "prompt": "x y"}', JSON, True),
    ("/v1/completions", b'{"model": "cheap"}', JSON, True),
    ("/v1/embeddings", b'{"model": "cheap", "input": ["a b", "c"]}', JSON, True),
    ("/v1/embeddings", b'{"model": "cheap", "input": 3.5}', JSON, True),
]


def _answers(tmp_path: Path, sqlite_url: str) -> list[tuple[int, Any, str | None]]:
    out = []
    with app_client(settings_for(config_dict(tmp_path), sqlite_url)) as (client, _):
        key = create_key(client)
        for path, body, headers, keyed in CASES:
            h = dict(headers)
            if keyed:
                h["authorization"] = f"Bearer {key}"
            resp = client.post(path, content=body, headers=h)
            data = resp.json()
            for k in ("id", "created"):  # the fake backend's per-call values
                if isinstance(data, dict):
                    data.pop(k, None)
            assert resp.headers.get("x-tollgate-request-id")
            out.append((resp.status_code, data, resp.headers.get("x-tollgate-backend")))
    return out


def test_fast_route_answers_as_fastapi(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[str] = []
    routes = {
        path: (model, _counting(endpoint, taken, path))
        for path, (model, endpoint) in fast_routes.ROUTES.items()
    }
    monkeypatch.setattr(fast_routes, "ROUTES", routes)
    fast = _answers(tmp_path / "fast", sqlite_url)
    # the valid JSON requests went the fast way; the others were left to FastAPI
    assert taken == [
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v1/chat/completions",  # unknown model: refused by the pipeline, not the schema
        "/v1/chat/completions",  # no key: refused by authentication
        "/v1/completions",
        "/v1/embeddings",
    ]
    monkeypatch.setattr(fast_routes, "ROUTES", {})  # every request through FastAPI
    slow = _answers(tmp_path / "slow", sqlite_url)
    assert [a[0] for a in fast] == [a[0] for a in slow]
    assert fast == slow
    statuses = [a[0] for a in fast]
    assert statuses[:2] == [200, 200] and statuses[-4] == 200 and statuses[-2] == 200
    assert {400, 401, 404, 422} & set(statuses)  # refusals are in the comparison too


def _counting(endpoint: Any, taken: list[str], path: str) -> Any:
    async def wrapped(*args: Any) -> Any:
        taken.append(path)
        return await endpoint(*args)

    return wrapped
