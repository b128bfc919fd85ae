"""``tollgate policy backtest --on store``: the whole use case short of printing.

Reads the logged requests (``store_load``), replays them under the candidate policy set with
the config's backends (``store.replay_store``) and writes down what the reader must know to
trust the numbers: what was skipped, what is estimated, what cannot be re-evaluated.
"""

from __future__ import annotations

from gateway.analytics.backtest.candidate import CandidatePolicies
from gateway.analytics.backtest.results import ESTIMATED_TEXT, BacktestError, BacktestResult
from gateway.analytics.backtest.store import replay_store
from gateway.analytics.backtest.store_load import check_store_exists, load_logged_requests
from gateway.analytics.facts import backend_facts
from gateway.analytics.prices import calibrated_prices
from gateway.config import Config


async def backtest_on_store(
    cfg: Config, candidate: CandidatePolicies, url: str, limit: int | None = None
) -> BacktestResult:
    """Replay the last ``limit`` logged requests (all without a limit) of the store at ``url``:
    what happened vs the candidate. Raises :class:`BacktestError` (no store there)."""
    from gateway.store.database import create_engine, redact_url, to_async_url

    try:
        check_store_exists(url)
        engine = create_engine(url)
        try:
            load = await load_logged_requests(engine, limit)
            prices = await calibrated_prices(engine, cfg)  # as the gateway priced them
        finally:
            await engine.dispose()
    except ValueError as exc:
        raise BacktestError(str(exc)) from None
    notes = []
    if load.skipped_no_decision:
        notes.append(
            f"{load.skipped_no_decision} request(s) skipped: no policy decision (a pinned backend)"
        )
    if load.skipped_no_prediction:
        notes.append(
            f"{load.skipped_no_prediction} request(s) skipped: no stored prediction "
            "(predictor timed out or disabled)"
        )
    if not load.outcomes_table:
        notes.append("the store has no outcomes table: every outcome is unknown")
    notes += [
        "current = what happened: recorded cost of every attempt; success from the outcomes "
        "table (unknown when absent, never counted as a success)",
        f"candidate rows on a backend that was not called are {ESTIMATED_TEXT}",
        "routing rules on headers, prompt text, tools or JSON mode cannot be re-evaluated "
        "(the store keeps none of them): they are taken to match when the logged request "
        "matched a rule of the same name",
        "backend health: as the logged decision saw it (unhealthy / open circuit); p95 unknown",
    ]
    return replay_store(
        load.requests,
        backend_facts(cfg, prices),
        candidate.policy_set,
        current_rules=cfg.policy_set,
        source="store",
        notes=[*candidate.notes, *notes],
        meta={"store": redact_url(to_async_url(url)), "requests": len(load.requests)},
    )
