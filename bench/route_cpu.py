"""CPU per routing decision, in-process: ``python bench/route_cpu.py``.

This module owns a micro-benchmark of the gateway's routed-only work: for each request it
parses the body, counts the prompt's tokens (litellm, the first backend's tokenizer), asks
``BudgetLedger.may_apply`` and runs ``Router.route`` (facts, access, breakers, prediction,
policy decision, shadow decisions, the stored record) on the shipped ``config.yaml`` (chat
backends only, pointed at an unreachable address: nothing is called), in-process state and a
fixed-answer predictor (no worker process, so no IPC), with distinct prompts. It prints the
process CPU per request (median of ``--runs``). It complements ``bench/routed_load.py``, whose
CPU columns on a shared 2-core machine move by more than such changes: compare two trees by
running this alternately with ``PYTHONPATH=<tree>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@dataclass(frozen=True)
class FixedPrediction:
    complexity: float
    p_success: dict[str, float]
    output_ratio: dict[str, float] = field(default_factory=dict)


class FixedPredictor:
    """The same P(success) per profile for every prompt, at once."""

    version = "bench-fixed-1"

    def __init__(self, p_success: dict[str, float]) -> None:
        self.p_success = p_success

    async def predict(self, prompt: str, timeout_s: float) -> FixedPrediction:
        return FixedPrediction(0.5, dict(self.p_success))


def bench_config(tmp: Path) -> dict[str, Any]:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["backends"] = [
        {**b, "api_base": "http://127.0.0.1:9/v1", "api_key": "os.environ/ROUTE_CPU_KEY"}
        for b in cfg["backends"]
        if "embeddings" not in (b.get("capabilities") or [])
    ]
    cfg["predictor"] = {"enabled": False}  # the fixed predictor is handed in instead
    cfg.setdefault("store", {})["spool_dir"] = str(tmp / "spool")
    cfg.setdefault("server", {})["anonymous_tenant"] = "bench"
    return cfg


async def measure(runtime: Any, n: int, prompts: list[str]) -> float:
    from gateway.auth import Principal
    from gateway.serve.request import parse_request
    from gateway.serve.routing import Router

    principal = Principal(tenant_id="t", tenant_name="bench", key_id=None)
    snap = runtime.snapshot
    budgeted_kw = "budgeted" in Router.route.__code__.co_varnames  # older trees lack it
    c0 = time.process_time()
    for i in range(n):
        body = {
            "model": "auto",
            "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
        }
        request = parse_request("chat", body, {}, streamable=True)
        tokens = request.count_prompt(runtime.caller, snap.config.backends[0])
        budgeted = await runtime.budgets.may_apply(principal, snap.config.budgets)
        extra = {"budgeted": budgeted} if budgeted_kw else {}
        await Router(runtime, snap).route(
            "auto", principal, request, request_id=f"r{i}", prompt_tokens=tokens, **extra
        )
    return (time.process_time() - c0) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000, help="per run")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)

    from fastapi.testclient import TestClient

    from gateway.app import create_app
    from gateway.config import Config
    from gateway.settings import Settings

    os.environ["ROUTE_CPU_KEY"] = "unused"
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-route-cpu-"))
    cfg = bench_config(tmp)
    profiles = {
        b.get("profile") or b["name"]: 0.3 + 0.15 * i for i, b in enumerate(cfg["backends"])
    }
    settings = Settings(config=Config.model_validate(cfg), database_url=f"sqlite:///{tmp}/t.db")
    words = (REPO / "README.md").read_text().split()
    prompts = [" ".join(words[i % 400 : i % 400 + 20 + i % 200]) + f" #{i}" for i in range(5000)]
    app = create_app(settings, predictor=FixedPredictor(profiles))
    with TestClient(app) as client:
        runtime, portal = app.state.runtime, client.portal
        assert portal is not None  # the app's event loop, running while the client is open
        portal.call(measure, runtime, 300, prompts)  # warm-up: imports, tokenizers
        runs = [portal.call(measure, runtime, args.requests, prompts) for _ in range(args.runs)]
    print(
        f"parse + count_prompt + Router.route: median {statistics.median(runs):.1f} us CPU per "
        f"request (runs: {', '.join(f'{r:.0f}' for r in runs)})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
