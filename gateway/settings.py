"""Process settings: where the config lives and what the environment overrides.

Environment (all optional): ``TOLLGATE_CONFIG`` (config file), ``TOLLGATE_DATABASE_URL``
(``sqlite:///…`` or ``postgresql://…``; mapped to the async driver), ``TOLLGATE_REDIS_URL``
(unset = in-process state), ``TOLLGATE_ADMIN_KEY`` (guards the admin API).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from gateway.config import Config, load_config

DEFAULT_CONFIG = "config.yaml"
DEFAULT_DATABASE_URL = "sqlite:///var/tollgate.db"


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
            host=host or config.server.host,
            port=port or config.server.port,
        )

    def with_config(self, config: Config) -> Settings:
        return replace(self, config=config)
