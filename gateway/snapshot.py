"""One config snapshot: a validated config and everything derived from it (resolved prices,
circuit-breaker settings, the predictor's learned profiles), built once per config — at
start-up and by each reload — and never changed afterwards.

A request takes the current snapshot once, at its start, and reads only that one to its end
(routing, pricing, dispatch, the finish step): a reload swaps in a new snapshot for the
requests that start later and changes nothing for those in flight. Also owns model-name
resolution (backend, alias or ``tollgate/<policy>``) against the snapshot's config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from gateway.backends.upstream import BackendCaller
from gateway.config import AUTO_POLICY, BackendConfig, Config
from gateway.errors import ModelNotFound, NoBackendAvailable
from gateway.pricing import Price, resolve_price
from gateway.state import BreakerSettings
from gateway.store.calibrations import StoredCalibration

POLICY_PREFIX = "tollgate/"


def unavailable_reason(backend: BackendConfig) -> str | None:
    """Why a backend cannot be called right now (missing credentials), or None. Read live:
    it depends on the environment, not on the config."""
    return backend.missing_credentials()


@dataclass(frozen=True)
class Route:
    """What the request's ``model`` field resolved to: a policy (``auto``: the routing rules
    choose) or one pinned backend."""

    policy: str | None
    chain: tuple[BackendConfig, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    config: Config
    prices: Mapping[str, Price | None]  # by backend name, for this config's backends only
    breaker: BreakerSettings
    learned_profiles: frozenset[str]  # profiles the predictor learned (named after backends)

    def price(self, backend: BackendConfig) -> Price | None:
        """The price of one of this snapshot's backends (None: unpriced)."""
        return self.prices[backend.name]

    def resolve(self, model: str) -> Route:
        cfg = self.config
        target = cfg.aliases.get(model, model)
        if target == AUTO_POLICY and cfg.policies and cfg.backend(target) is None:
            target = POLICY_PREFIX + AUTO_POLICY  # "auto" works without declaring the alias
        if target.startswith(POLICY_PREFIX):
            name = target.removeprefix(POLICY_PREFIX)
            if name not in cfg.policies and not (name == AUTO_POLICY and cfg.policies):
                raise ModelNotFound(
                    f"unknown policy {name!r}; "
                    f"policies: {', '.join(sorted(cfg.policies)) or 'none'}",
                    param="model",
                )
            return Route(name)
        backend = cfg.backend(target)
        if backend is None:
            names = sorted(
                [b.name for b in cfg.backends]
                + list(cfg.aliases)
                + [POLICY_PREFIX + p for p in cfg.policies]
                + ([POLICY_PREFIX + AUTO_POLICY] if cfg.policies else [])
            )
            raise ModelNotFound(
                f"the model {model!r} does not exist on this gateway; use a backend, alias or "
                f"policy: {', '.join(names)} (GET /v1/models lists them)",
                param="model",
            )
        return Route(None, (backend,))

    @staticmethod
    def callable_chain(route: Route) -> list[BackendConfig]:
        chain = [b for b in route.chain if unavailable_reason(b) is None]
        if not chain:
            reasons = "; ".join(f"{b.name}: {unavailable_reason(b)}" for b in route.chain)
            raise NoBackendAvailable(f"no backend can serve this request ({reasons})")
        return chain


def build_snapshot(
    config: Config,
    caller: BackendCaller,
    predictor: Any = None,
    calibrations: Mapping[str, StoredCalibration] | None = None,
) -> Snapshot:
    """Resolve everything a request reads from ``config`` (``predictor``: the running
    predictor service, whose learned profiles do not change while it runs; ``calibrations``:
    the latest stored calibration of each calibrated self-hosted backend)."""
    cb = config.circuit_breaker
    cal = calibrations or {}
    return Snapshot(
        config=config,
        prices=MappingProxyType(
            {b.name: resolve_price(b, caller, cal.get(b.name)) for b in config.backends}
        ),
        breaker=BreakerSettings(cb.failure_threshold, cb.window_s, cb.cooldown_s, cb.probe_lease_s),
        learned_profiles=frozenset(getattr(predictor, "profiles", None) or ()),
    )
