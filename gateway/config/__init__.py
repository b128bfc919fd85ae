"""The config layer: the strict schema and its loader (``schema``), YAML positions
(``yamlsource``), and a process's start-up settings (``startup.load_settings``). Callers import
the public names from ``gateway.config``."""

from gateway.config.schema import (
    AUTO_POLICY,
    DEFAULT_RUBRIC,
    BackendConfig,
    Config,
    ConfigError,
    ConfigIssue,
    JudgeConfig,
    config_files,
    format_loc,
    load_config,
    load_config_text,
)
from gateway.config.startup import load_settings

__all__ = [
    "AUTO_POLICY",
    "DEFAULT_RUBRIC",
    "BackendConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "JudgeConfig",
    "config_files",
    "format_loc",
    "load_config",
    "load_config_text",
    "load_settings",
]
