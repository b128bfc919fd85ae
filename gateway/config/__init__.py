"""The config layer: the strict schema and its loader (``schema``) and YAML positions
(``yamlsource``). Callers import the public names from ``gateway.config``."""

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
]
