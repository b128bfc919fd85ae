"""What the ``tollgate`` commands read before they start, one way for all of them.

The config file is ``--config``, else ``$TOLLGATE_CONFIG``, else ``config.yaml``; the store is
``$TOLLGATE_DATABASE_URL``, else the config's ``store.url``, else the embedded SQLite file; the
data and cache directories come from their options or the environment. ``gateway.settings``
(the one module that reads the environment) resolves each; this module loads the config and,
when it has errors, prints them with file, line and YAML path and ends the command.
``with_keystore`` opens the store's key table for the key and tenant commands.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from gateway.settings import config_path_from_env, database_url, database_url_from_env

if TYPE_CHECKING:
    from gateway.config import Config, ConfigError

err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="config file (default: $TOLLGATE_CONFIG or config.yaml)"),
]


def print_issues(exc: ConfigError, path: str) -> None:
    """Every problem of a rejected config, then how many there were."""
    for issue in exc.issues:
        err.print(f"[red]error[/red] {issue}", highlight=False)
    err.print(f"{len(exc.issues)} error(s) in {path}")


def load_config_or_exit(path: str | None, *, code: int = 2) -> tuple[str, Config]:
    """(the path read, the config) for a command that needs the config; exits with ``code``
    after printing the problems when it is rejected."""
    from gateway.config import ConfigError, load_config

    path = config_path_from_env(path)
    try:
        return path, load_config(path)
    except ConfigError as exc:
        print_issues(exc, path)
        raise typer.Exit(code) from None


def optional_config(path: str | None) -> Config | None:
    """The config for a command that can do without one: ``None`` when no file was named and
    the default one does not exist; a named file that is missing is an error."""
    resolved = config_path_from_env(path)
    if not os.path.exists(resolved):
        if path is not None:
            err.print(f"[red]error[/red] config file not found: {path}")
            raise typer.Exit(2)
        return None
    return load_config_or_exit(resolved)[1]


def store_url(cfg: Config | None) -> str:
    """The store a command reads, given its config (or none)."""
    return database_url(cfg.store.url if cfg is not None else None)


def store_url_for(path: str | None) -> str:
    """The store for a command that needs nothing else from the config: the environment's URL
    without reading any file, else the config's (when there is one), else the default."""
    return database_url_from_env() or store_url(optional_config(path))


async def with_store(url: str, fn: Any) -> Any:
    """``fn(engine)`` on the store at ``url`` (its schema checked current), then closed."""
    from gateway.store.database import create_engine
    from gateway.store.schema_version import ensure_current

    engine = create_engine(url)
    try:
        await ensure_current(engine, url)
        return await fn(engine)
    finally:
        await engine.dispose()


async def with_keystore(url: str, fn: Any) -> Any:
    """``fn(KeyStore)`` on the store at ``url`` (its schema checked current), then closed."""
    from gateway.store.keys import KeyStore

    return await with_store(url, lambda engine: fn(KeyStore(engine)))
