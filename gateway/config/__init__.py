"""The config layer: the strict schema (``schema``), loading a file and its includes
(``loader``, ``policy_file``), located problems (``issues``), YAML positions (``yamlsource``),
and a process's start-up settings (``startup.load_settings``). Callers import the public names
from ``gateway.config``."""

from gateway.config.issues import ConfigError, ConfigIssue, format_loc
from gateway.config.loader import config_files, load_config, load_config_text
from gateway.config.schema import AUTO_POLICY, DEFAULT_RUBRIC, BackendConfig, Config, JudgeConfig
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
