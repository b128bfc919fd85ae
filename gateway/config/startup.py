"""What a process starts from: the config file that the caller or the environment names,
loaded, combined with the environment's overrides into the ``Settings`` the app factory takes.

It lives in the config layer, above ``gateway.settings`` (which reads the environment and
imports nothing from the gateway), because building a ``Settings`` means loading a config.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config.loader import load_config
from gateway.settings import DEFAULT_CONFIG, Settings, config_path_from_env


def load_settings(
    config_path: str | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load ``config_path`` (else ``$TOLLGATE_CONFIG``, else config.yaml) and apply the
    environment's overrides (``environ``: the process environment unless given)."""
    if environ is None:
        path = config_path_from_env(config_path)
    else:
        path = config_path or environ.get("TOLLGATE_CONFIG") or DEFAULT_CONFIG
    config = load_config(path)
    return Settings.from_config(config, config_path=path, host=host, port=port, environ=environ)
