"""Policy backtests: replay recorded traffic under the current and a candidate policy set.

The package owns ``tollgate policy backtest`` minus its printing (``gateway.cli.policy``), one
thing per module:

* ``candidate``: the candidate policy file, validated against the config's backends;
* ``results``: replayed rows, a side's aggregates (:class:`Summary`) and the difference of the
  two sides (:class:`BacktestResult`);
* ``dataset``: **dataset replays** scored with recorded outcomes and costs (pure);
  ``dataset_source``: loading and sampling the datasets (held-out refits are
  ``predictors.fitting``);
* ``store``: **store replays** of logged requests, estimated rows flagged (pure);
  ``store_load``: reading logged requests from the store;
* ``on_dataset`` and ``on_store``: the two use cases of the command, short of printing.

What replays share with ``route explain`` and learning lives beside the package:
``gateway.analytics.facts`` (backend facts), ``gateway.analytics.predictions`` (the config's
predictor and its P(success) for many prompts), ``gateway.analytics.prices``. Callers import
the public names from here.
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
from gateway.analytics.backtest.on_dataset import backtest_on_dataset
from gateway.analytics.backtest.on_store import backtest_on_store
from gateway.analytics.backtest.results import (
    ESTIMATED,
    ESTIMATED_TEXT,
    NO_BACKEND,
    BacktestError,
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
from gateway.analytics.backtest.store_load import (
    StoreLoad,
    check_store_exists,
    load_logged_requests,
)
from gateway.analytics.facts import backend_facts, credentials_ok, estimate_tokens
from gateway.analytics.predictions import (
    config_predictor,
    predict_prompts,
    predict_vectors,
)

__all__ = [
    "ESTIMATED",
    "ESTIMATED_TEXT",
    "NO_BACKEND",
    "STORED_CONDITIONS",
    "BacktestError",
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
    "backtest_on_dataset",
    "backtest_on_store",
    "check_store_exists",
    "config_predictor",
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
    "sample_ids",
    "score_choice",
    "stored_prediction",
]
