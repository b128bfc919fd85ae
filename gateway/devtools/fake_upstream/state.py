"""The fake upstream's behaviour and memory: its configuration knobs (validated, merged at
start-up and through ``POST /_control/config``), the seeded RNG behind ``fail_rate``, the
failure queues, and the statistics ``GET /_control/stats`` reports."""

from __future__ import annotations

import copy
import math
import random
from collections import deque
from typing import Any

Scope = dict[str, Any]

#: Behaviour knobs and their start-up defaults (all settable at start-up and at run time).
DEFAULT_CONFIG: dict[str, Any] = {
    "latency_ms": 0.0,  # time to first token
    "token_interval_ms": 0.0,  # between streamed tokens
    "completion_tokens": 16,  # length of the natural answer, in words
    "fail_next": [],  # HTTP statuses returned, in order, by the next len(list) requests
    "fail_rate": 0.0,  # probability of answering fail_rate_status (seeded RNG)
    "fail_rate_status": 500,
    "seed": 0,
    "hang": False,  # never answer (until the client leaves or hang_max_s passes -> 504)
    "hang_max_s": 600.0,
    "omit_usage": False,  # never send usage, not even when include_usage is asked for
    "retry_after_s": 1,  # value of the retry-after header sent with 429
    "stall_after_tokens": None,  # streams stop sending after N tokens (until client leaves)
    "drop_after_tokens": None,  # streams drop the TCP connection after N tokens
    "embedding_dim": 16,
    "model_ids": ["fake-model"],  # listed by GET /v1/models (plus every key of ``models``)
    "models": {},  # per-model overrides: {model: {key of MODEL_KEYS: value}}
    "history_size": 20,  # how many recent request bodies /_control/stats keeps
}

#: Keys a per-model override may set.
MODEL_KEYS = frozenset(
    {
        "latency_ms",
        "token_interval_ms",
        "completion_tokens",
        "fail_next",
        "fail_rate",
        "fail_rate_status",
        "hang",
        "omit_usage",
        "retry_after_s",
        "stall_after_tokens",
        "drop_after_tokens",
        "embedding_dim",
    }
)


class RequestError(Exception):
    """An OpenAI-shaped error to send back with ``status``."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


def _check_num(key: str, value: Any, *, lo: float = 0.0, hi: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise RequestError(400, f"config.{key} must be a number in [{lo}, {hi}]", key)


def _check_int(key: str, value: Any, *, lo: int = 0, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise RequestError(400, f"config.{key} must be an integer >= {lo}", key)


def _check_status(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise RequestError(400, f"config.{key} must hold HTTP error statuses (400-599)", key)


def _validate_keys(update: dict[str, Any], allowed: frozenset[str] | set[str], where: str) -> None:
    for key, value in update.items():
        if key not in allowed:
            raise RequestError(400, f"unknown {where} key {key!r}", key)
        if key in ("latency_ms", "token_interval_ms", "hang_max_s"):
            _check_num(key, value)
        elif key == "fail_rate":
            _check_num(key, value, hi=1.0)
        elif key in ("completion_tokens", "history_size", "seed", "retry_after_s"):
            _check_int(key, value)
        elif key == "embedding_dim":
            _check_int(key, value, lo=1)
        elif key in ("stall_after_tokens", "drop_after_tokens"):
            _check_int(key, value, optional=True)
        elif key == "fail_rate_status":
            _check_status(key, value)
        elif key == "fail_next":
            if not isinstance(value, list):
                raise RequestError(400, "config.fail_next must be a list of statuses", key)
            for status in value:
                _check_status(key, status)
        elif key in ("hang", "omit_usage"):
            if not isinstance(value, bool):
                raise RequestError(400, f"config.{key} must be a boolean", key)
        elif key == "model_ids":
            if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
                raise RequestError(400, "config.model_ids must be a list of strings", key)
        elif key == "models":
            if not isinstance(value, dict):
                raise RequestError(400, "config.models must be an object", key)
            for model, override in value.items():
                if override is None:
                    continue
                if not isinstance(override, dict):
                    raise RequestError(400, f"config.models.{model} must be an object", key)
                _validate_keys(override, MODEL_KEYS, f"models.{model}")


def merge_config(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated with ``update`` (validated; ``models`` merges per model, a
    model set to ``null`` loses its override)."""
    _validate_keys(update, set(DEFAULT_CONFIG), "config")
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if key == "models":
            models = merged.setdefault("models", {})
            for model, override in value.items():
                if override is None:
                    models.pop(model, None)
                else:
                    models[model] = copy.deepcopy(override)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class FakeState:
    """Behaviour, RNG and statistics of one fake upstream process."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.initial = merge_config(DEFAULT_CONFIG, config or {})
        self.config: dict[str, Any] = {}
        self.rng = random.Random(0)
        self.stats: dict[str, Any] = {}
        self.history: deque[dict[str, Any]] = deque()
        self._ids = 0
        self.reset()

    def reset(self, *, config: bool = True, stats: bool = True) -> None:
        if config:
            self.config = copy.deepcopy(self.initial)
            self.rng = random.Random(self.config["seed"])
        if stats:
            self.stats = {
                "total_requests": 0,
                "endpoints": {},
                "models": {},
                "streams_started": 0,
                "streams_completed": 0,
                "streams_aborted": 0,
                "streams_dropped": 0,
                "in_flight": 0,
                "failures_injected": {},
                "hangs": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
            }
            self.history = deque(maxlen=self.config["history_size"])

    def update(self, update: dict[str, Any]) -> None:
        self.config = merge_config(self.config, update)
        if "seed" in update:
            self.rng = random.Random(self.config["seed"])
        if "history_size" in update:
            self.history = deque(self.history, maxlen=self.config["history_size"])

    def next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-fake{self._ids:010d}"

    def effective(self, model: str) -> dict[str, Any]:
        override = self.config["models"].get(model)
        if not override:
            return self.config
        cfg = dict(self.config)
        cfg.update(override)
        return cfg

    def injected_failure(self, model: str) -> int | None:
        override = self.config["models"].get(model)
        queue = override["fail_next"] if override and "fail_next" in override else None
        if queue is None:
            queue = self.config["fail_next"]
        if queue:
            return int(queue.pop(0))
        cfg = self.effective(model)
        if cfg["fail_rate"] > 0 and self.rng.random() < cfg["fail_rate"]:
            return int(cfg["fail_rate_status"])
        return None

    def record(self, endpoint: str, model: str, scope: Scope, body: Any) -> None:
        stats = self.stats
        stats["total_requests"] += 1
        stats["endpoints"][endpoint] = stats["endpoints"].get(endpoint, 0) + 1
        if model:
            stats["models"][model] = stats["models"].get(model, 0) + 1
        if self.history.maxlen:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            self.history.append(
                {
                    "endpoint": endpoint,
                    "model": model,
                    "authorization": headers.get("authorization"),
                    "headers": headers,
                    "body": body,
                }
            )

    def snapshot(self) -> dict[str, Any]:
        out = copy.deepcopy(self.stats)
        out["requests"] = list(self.history)
        return out


# --------------------------------------------------------------------------- answers
