"""The local tier in the HTTP reports: ``/v1/spend`` (by backend, with a start) and the
dashboard's data carry the self-hosted backends' account — their spend beside API spend, GPU
cost and utilisation over the window, what their tokens would have cost at API prices — for
the admin; a tenant's view never shows the shared GPUs' cost."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from tests.service.test_spillover import config
from tests.support.fakes import FakeCaller, Script
from tests.support.harness import app_client, chat_body, create_key, settings_for

ADMIN = {"authorization": "Bearer admin-secret-for-tests"}


def test_spend_report_shows_the_local_tier_beside_api_spend(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/t.db"
    fake = FakeCaller({"local": Script(answer_tokens=40), "api": Script(answer_tokens=40)})
    with app_client(settings_for(config(tmp_path, ["local", "api"]), db), fake) as (client, _):
        key = create_key(client, tenant="acme")
        auth = {"authorization": f"Bearer {key}"}
        for model in ("local", "local", "local", "api"):
            resp = client.post("/v1/chat/completions", json=chat_body(model), headers=auth)
            assert resp.status_code == 200, resp.text
        spend = client.get("/v1/spend", params={"start": "1h"}, headers=ADMIN).json()
        tier = spend["local_tier"]
        assert tier["reference"] == "api"
        assert [b["backend"] for b in tier["backends"]] == ["local"]
        local = tier["backends"][0]
        assert local["completion_tokens"] == 120 and local["prompt_tokens"] > 0
        assert Decimal(tier["api_spend_usd"]) > 0 and Decimal(tier["local_spend_usd"]) > 0
        # an hour of one GPU at $3.60, whatever the traffic: utilisation = spend / GPU cost
        assert Decimal("3.59") < Decimal(local["gpu_cost_usd"]) <= Decimal("3.61")
        assert local["utilisation"] == round(
            float(Decimal(local["spend_usd"]) / Decimal(local["gpu_cost_usd"])), 4
        )
        assert Decimal(local["at_api_prices_usd"]) > 0
        assert (
            client.get("/v1/dashboard/data", params={"start": "1h"}, headers=ADMIN).json()[
                "local_tier"
            ]["backends"][0]["backend"]
            == "local"
        )
        # a tenant's view, a window with no start, another grouping: no GPU account
        assert (
            "local_tier" not in client.get("/v1/spend", params={"start": "1h"}, headers=auth).json()
        )
        assert "local_tier" not in client.get("/v1/spend", headers=ADMIN).json()
        by_day = client.get("/v1/spend", params={"start": "1h", "group_by": "day"}, headers=ADMIN)
        assert "local_tier" not in by_day.json()
