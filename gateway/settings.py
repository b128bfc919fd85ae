"""Process settings: the one module that reads the process environment (``os.environ``).

Everything else receives what it needs from here: the app factory a ``Settings`` value, the
CLIs the config path and database URL, the predictors their data and cache directories (they
take paths as parameters and never read the environment themselves), and third-party
libraries the variables they read at import time (:func:`apply_process_env`). It imports
nothing from the gateway at run time, so every layer may use it; loading the config file a
``Settings`` holds is ``gateway.config.load_settings``.

Environment (all optional): ``TOLLGATE_CONFIG`` (config file), ``TOLLGATE_DATABASE_URL``
(``sqlite:///…`` or ``postgresql://…``; mapped to the async driver), ``TOLLGATE_REDIS_URL``
(unset = in-process state), ``TOLLGATE_ADMIN_KEY`` (guards the admin API), ``TOLLGATE_HOST`` and
``TOLLGATE_PORT`` (the bind address; set by ``tollgate serve`` for its worker processes),
``TOLLGATE_DATA_DIR`` (the routing datasets, default ``../shared/data``), ``TOLLGATE_CACHE_DIR``
(machine-local caches, default ``~/.cache/tollgate``), ``TOLLGATE_CLOCK_OFFSET_S`` (seconds
added to the clock budget windows are read with; for tests), and the variables backend API keys are
named by in the config (``os.environ/NAME``).

OpenTelemetry (``gateway.telemetry``) reads the standard variables: traces are exported over
OTLP/HTTP when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set
(and neither ``OTEL_SDK_DISABLED=true`` nor ``OTEL_TRACES_EXPORTER=none``); also
``OTEL_EXPORTER_OTLP[_TRACES]_HEADERS``, ``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL``,
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

if TYPE_CHECKING:  # a Settings holds a Config; loading one is gateway.config's job
    from gateway.config import Config

DEFAULT_CONFIG = "config.yaml"
DEFAULT_DATABASE_URL = "sqlite:///var/tollgate.db"
# Read by libraries at import time: litellm fetches its cost map from the network and logs at
# INFO unless told otherwise; Hugging Face libraries look models up online.
PROCESS_DEFAULTS = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # prices from the map bundled with the pin
    "LITELLM_LOG": "ERROR",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def apply_process_env() -> None:
    """Give the process the library settings above, unless the environment sets them already.

    Call it before importing litellm (the backend adapters do, at their top) or loading a
    Hugging Face model: those libraries read these variables when they load. Idempotent."""
    for name, value in PROCESS_DEFAULTS.items():
        os.environ.setdefault(name, value)


def env_secret(name: str) -> str | None:
    """The value of the secret the config names ``os.environ/NAME`` (None if unset or empty);
    read when needed, never stored."""
    return os.environ.get(name) or None


def config_path_from_env(explicit: str | None = None) -> str:
    """The config file: ``explicit`` (a CLI flag), else ``$TOLLGATE_CONFIG``, else config.yaml."""
    return explicit or os.environ.get("TOLLGATE_CONFIG") or DEFAULT_CONFIG


def database_url_from_env() -> str | None:
    """``$TOLLGATE_DATABASE_URL`` when set: it overrides the config's ``store.url``."""
    return os.environ.get("TOLLGATE_DATABASE_URL") or None


def database_url(store_url: str | None) -> str:
    """The store to use: the environment's URL, else the config's, else the embedded SQLite."""
    return database_url_from_env() or store_url or DEFAULT_DATABASE_URL


def data_dir_from_env(explicit: str | Path | None = None) -> Path | None:
    """The routing datasets' directory: ``explicit``, else ``$TOLLGATE_DATA_DIR``, else None
    (the predictors' own default, ``<project>/../shared/data``)."""
    chosen = explicit or os.environ.get("TOLLGATE_DATA_DIR")
    return Path(chosen) if chosen else None


def cache_root_from_env() -> Path | None:
    """``$TOLLGATE_CACHE_DIR`` when set (else None: the predictors' ``~/.cache/tollgate``)."""
    chosen = os.environ.get("TOLLGATE_CACHE_DIR")
    return Path(chosen) if chosen else None


def export_worker_env(config_path: str | None, host: str, port: int) -> None:
    """Hand ``tollgate serve --workers N``'s settings to its worker processes, which read them
    back with ``gateway.config.load_settings()`` (they inherit this environment)."""
    if config_path:
        os.environ["TOLLGATE_CONFIG"] = config_path
    os.environ["TOLLGATE_HOST"] = host
    os.environ["TOLLGATE_PORT"] = str(port)


@dataclass(frozen=True)
class TelemetrySettings:
    """Where and how to export traces (from the standard ``OTEL_*`` variables)."""

    traces_endpoint: str
    protocol: str = "http/protobuf"
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # may hold a token
    service_name: str = "tollgate"
    resource_attributes: dict[str, str] = field(default_factory=dict)


def _otel_pairs(raw: str | None) -> dict[str, str]:
    """``k1=v1,k2=v2`` (values URL-encoded), the format of OTEL_*_HEADERS/ATTRIBUTES."""
    pairs: dict[str, str] = {}
    for item in (raw or "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            pairs[key.strip()] = unquote(value.strip())
    return pairs


def telemetry_from_env(env: Mapping[str, str]) -> TelemetrySettings | None:
    """Trace export settings, or None when no OTLP endpoint is configured (tracing off)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() not in ("otlp", ""):
        return None
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if not endpoint:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if not base:
            return None
        endpoint = base.rstrip("/") + "/v1/traces"  # the spec's per-signal path
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    ) or "http/protobuf"
    headers = _otel_pairs(env.get("OTEL_EXPORTER_OTLP_HEADERS"))
    headers.update(_otel_pairs(env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")))
    return TelemetrySettings(
        traces_endpoint=endpoint,
        protocol=protocol.strip(),
        headers=headers,
        service_name=env.get("OTEL_SERVICE_NAME", "").strip() or "tollgate",
        resource_attributes=_otel_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES")),
    )


@dataclass(frozen=True)
class Settings:
    """Everything the app factory needs: a loaded config plus the environment's overrides
    (build one with ``from_config``, or ``gateway.config.load_settings`` from a file)."""

    config: Config
    config_path: str | None = None
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    admin_key: str | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = 4000
    telemetry: TelemetrySettings | None = None  # None: no tracing (nothing on the hot path)
    # TOLLGATE_CLOCK_OFFSET_S: shifts the clock budget windows are read with (tests roll a
    # daily budget over without waiting for midnight); 0 in production
    clock_offset_s: float = 0.0

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        config_path: str | None = None,
        host: str | None = None,
        port: int | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Settings for ``config``, with the environment's overrides (``environ``: the process
        environment unless given)."""
        env = os.environ if environ is None else environ
        return cls(
            config=config,
            config_path=str(Path(config_path)) if config_path else None,
            database_url=env.get("TOLLGATE_DATABASE_URL")
            or config.store.url
            or DEFAULT_DATABASE_URL,
            redis_url=env.get("TOLLGATE_REDIS_URL") or config.redis.url,
            admin_key=env.get("TOLLGATE_ADMIN_KEY") or None,
            # TOLLGATE_HOST/PORT: the bind address `tollgate serve --workers N` hands its workers
            host=host or env.get("TOLLGATE_HOST") or config.server.host,
            port=port or int(env.get("TOLLGATE_PORT") or 0) or config.server.port,
            telemetry=telemetry_from_env(env),
            clock_offset_s=float(env.get("TOLLGATE_CLOCK_OFFSET_S") or 0),
        )

    def with_config(self, config: Config) -> Settings:
        return replace(self, config=config)
