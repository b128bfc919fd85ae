"""Policy backtests: replay recorded traffic under the current and a candidate policy set.

The package owns ``tollgate policy backtest`` minus its printing (``gateway.cli.policy``), one
thing per module:

* ``candidate``: the candidate policy file, validated against the config's backends;
* ``facts``: prices and the policy engine's backend facts for the config's backends;
* ``results``: replayed rows, a side's aggregates (:class:`Summary`) and the difference of the
  two sides (:class:`BacktestResult`);
* ``dataset``: **dataset replays** scored with recorded outcomes and costs (pure);
  ``dataset_source``: loading and sampling the datasets; ``predictions``: the predictor's
  P(success) for many prompts (held-out refits are ``predictors.fitting``);
* ``store``: **store replays** of logged requests, estimated rows flagged (pure);
  ``store_load``: reading logged requests from the store.

Callers import the public names from here.
"""

from gateway.analytics.backtest.candidate import CandidatePolicies, load_candidate
from gateway.analytics.backtest.dataset import (
    DatasetQuery,
    Recorded,
    Scorer,
    dataset_queries,
    map_backends,
    replay_dataset,
    replay_one,
    score_choice,
)
from gateway.analytics.backtest.dataset_source import load_dataset, sample_ids
from gateway.analytics.backtest.facts import (
    backend_facts,
    credentials_ok,
    estimate_tokens,
    resolve_prices,
)
from gateway.analytics.backtest.predictions import predict_prompts, predict_vectors
from gateway.analytics.backtest.results import (
    ESTIMATED,
    NO_BACKEND,
    BacktestResult,
    Replayed,
    Side,
    Summary,
)
from gateway.analytics.backtest.store import (
    STORED_CONDITIONS,
    LoggedRequest,
    replay_select,
    replay_store,
    stored_prediction,
)
from gateway.analytics.backtest.store_load import StoreLoad, load_logged_requests

__all__ = [
    "ESTIMATED",
    "NO_BACKEND",
    "STORED_CONDITIONS",
    "BacktestResult",
    "CandidatePolicies",
    "DatasetQuery",
    "LoggedRequest",
    "Recorded",
    "Replayed",
    "Scorer",
    "Side",
    "StoreLoad",
    "Summary",
    "backend_facts",
    "credentials_ok",
    "dataset_queries",
    "estimate_tokens",
    "load_candidate",
    "load_dataset",
    "load_logged_requests",
    "map_backends",
    "predict_prompts",
    "predict_vectors",
    "replay_dataset",
    "replay_one",
    "replay_select",
    "replay_store",
    "resolve_prices",
    "sample_ids",
    "score_choice",
    "stored_prediction",
]
