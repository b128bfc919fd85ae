"""Process settings: where the config lives and what the environment overrides.

Environment (all optional): ``TOLLGATE_CONFIG`` (config file), ``TOLLGATE_DATABASE_URL``
(``sqlite:///…`` or ``postgresql://…``; mapped to the async driver), ``TOLLGATE_REDIS_URL``
(unset = in-process state), ``TOLLGATE_ADMIN_KEY`` (guards the admin API), ``TOLLGATE_HOST`` and
``TOLLGATE_PORT`` (the bind address; set by ``tollgate serve`` for its worker processes).

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
from urllib.parse import unquote

from gateway.config import Config, load_config

DEFAULT_CONFIG = "config.yaml"
DEFAULT_DATABASE_URL = "sqlite:///var/tollgate.db"


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
    """Everything the app factory needs; built from a config file plus the environment."""

    config: Config
    config_path: str | None = None
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    admin_key: str | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = 4000
    telemetry: TelemetrySettings | None = None  # None: no tracing (nothing on the hot path)

    @classmethod
    def from_env(
        cls,
        config_path: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        environ: dict[str, str] | None = None,
    ) -> Settings:
        env = os.environ if environ is None else environ
        path = config_path or env.get("TOLLGATE_CONFIG") or DEFAULT_CONFIG
        config = load_config(path)
        return cls.from_config(config, config_path=path, host=host, port=port, environ=env)

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        config_path: str | None = None,
        host: str | None = None,
        port: int | None = None,
        environ: dict[str, str] | os._Environ[str] | None = None,
    ) -> Settings:
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
        )

    def with_config(self, config: Config) -> Settings:
        return replace(self, config=config)
