"""The request pipeline's finish step: plain and streamed requests end in the same step, which
runs exactly once per request (budget settled once, the served answer offered to the success
side once), and the circuit breaker hears each served attempt once."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.fakes import FakeCaller, Script
from tests.support.harness import app_client, chat_body, config_dict, create_key, settings_for


class Spy:
    """Records the calls the pipeline makes to the breaker, the budget ledger and the
    success side of one running app."""

    def __init__(self, client: TestClient) -> None:
        rt = client.app.state.runtime  # type: ignore[attr-defined]
        pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
        self.breaker: list[tuple[str, bool]] = []
        self.settled: list[Decimal] = []
        self.served: list[tuple[str, bool]] = []
        record, settle, served = (
            rt.state.breaker_record,
            rt.budgets.settle,
            pipeline.outcomes.served,
        )

        async def breaker_record(backend: str, ok: bool, cfg: Any) -> bool:
            self.breaker.append((backend, ok))
            return bool(await record(backend, ok, cfg))

        async def budget_settle(reservation: Any, actual: Decimal) -> None:
            self.settled.append(actual)
            await settle(reservation, actual)

        def on_served(ctx: Any, answer: Any, *, ok: bool) -> None:
            self.served.append((ctx.request_id, ok))
            served(ctx, answer, ok=ok)

        rt.state.breaker_record = breaker_record
        rt.budgets.settle = budget_settle
        pipeline.outcomes.served = on_served

    def clear(self) -> None:
        self.breaker.clear()
        self.settled.clear()
        self.served.clear()


@pytest.fixture
def gateway(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[TestClient, FakeCaller, str, Spy]]:
    caller = FakeCaller({"cheap": Script(answer_tokens=6)})
    with app_client(settings_for(config_dict(tmp_path), sqlite_url), caller) as (client, fake):
        key = create_key(client, budget=1.0)  # a budget: every request reserves and settles
        yield client, fake, key, Spy(client)


def test_a_successful_stream_tells_the_breaker_once(
    gateway: tuple[TestClient, FakeCaller, str, Spy],
) -> None:
    client, _, key, spy = gateway
    auth = {"authorization": f"Bearer {key}"}
    with client.stream(
        "POST", "/v1/chat/completions", json=chat_body(stream=True), headers=auth
    ) as resp:
        assert resp.status_code == 200
        text = "".join(resp.iter_text())
    assert text.endswith("data: [DONE]\n\n")
    assert spy.breaker == [("cheap", True)]  # it used to be told twice
    spy.clear()
    plain = client.post("/v1/chat/completions", json=chat_body(), headers=auth)
    assert plain.status_code == 200
    assert spy.breaker == [("cheap", True)]


def test_plain_streamed_and_failed_requests_finish_exactly_once(
    gateway: tuple[TestClient, FakeCaller, str, Spy],
) -> None:
    client, fake, key, spy = gateway
    auth = {"authorization": f"Bearer {key}"}

    plain = client.post("/v1/chat/completions", json=chat_body(), headers=auth)
    cost = Decimal(plain.headers["x-tollgate-cost-usd"])
    assert spy.settled == [cost] and cost > 0
    assert spy.served == [(plain.headers["x-tollgate-request-id"], True)]
    spy.clear()

    with client.stream(
        "POST", "/v1/chat/completions", json=chat_body(stream=True), headers=auth
    ) as resp:
        rid = resp.headers["x-tollgate-request-id"]
        "".join(resp.iter_text())
    (attempt,) = client.get(f"/v1/requests/{rid}", headers=auth).json()["attempts"]
    assert spy.settled == [Decimal(attempt["cost_usd"])] == [cost]  # same tokens, same cost
    assert spy.served == [(rid, True)]
    spy.clear()

    # every attempt fails: nothing is served, the reservation is still settled, once
    fake.scripts["cheap"].fail = [500, 500]
    failed = client.post("/v1/chat/completions", json=chat_body(), headers=auth)
    assert failed.status_code == 502
    assert spy.settled == [Decimal(0)] and spy.served == []
    spy.clear()

    # the stream cannot even start: the same
    fake.scripts["cheap"].fail = [500, 500]
    failed = client.post("/v1/chat/completions", json=chat_body(stream=True), headers=auth)
    assert failed.status_code == 502
    assert spy.settled == [Decimal(0)] and spy.served == []


def test_a_stream_cut_by_the_client_is_recorded_and_settled_once(
    tmp_path: Path, sqlite_url: str
) -> None:
    caller = FakeCaller({"cheap": Script(answer_tokens=40, token_delay_s=0.02)})
    with app_client(settings_for(config_dict(tmp_path), sqlite_url), caller) as (client, fake):
        key = create_key(client, budget=1.0)
        spy = Spy(client)
        auth = {"authorization": f"Bearer {key}"}
        with client.stream(
            "POST", "/v1/chat/completions", json=chat_body(stream=True), headers=auth
        ) as resp:
            rid = resp.headers["x-tollgate-request-id"]
            for line in resp.iter_lines():
                if "w3" in line:
                    break  # leave mid-stream
        deadline = 200
        while not spy.settled and deadline:
            client.get("/healthz")
            deadline -= 1
        (attempt,) = client.get(f"/v1/requests/{rid}", headers=auth).json()["attempts"]
        assert attempt["status"] in ("ok", "cancelled")
        assert len(spy.settled) == 1 and spy.settled[0] == Decimal(attempt["cost_usd"])
        assert len(spy.served) == 1 and fake.streams_closed == 1
