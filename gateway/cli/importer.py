"""``tollgate import``: bring in the configuration of another gateway (today: a LiteLLM proxy
``config.yaml``). Reads and writes the files; the mapping is ``gateway.config.litellm_import``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

app = typer.Typer(help="Import configuration from other gateways.", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True, highlight=False)

HEADER = """\
# Imported from the LiteLLM proxy config {source} by `tollgate import litellm-config`.
# Check it with `tollgate config check`; what could not be carried over was printed by the
# import (and is listed at the end of this file).
"""


@app.command("litellm-config")
def litellm_config(
    file: Annotated[Path, typer.Argument(help="the LiteLLM proxy config (model_list, ...)")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="write the Tollgate config here")
    ] = None,
) -> None:
    """Turn a LiteLLM proxy config into a Tollgate config; report what could not be mapped."""
    from gateway.config import ConfigError, load_config_text
    from gateway.config.litellm_import import import_litellm_config

    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        err.print(f"[red]error[/red] cannot read {file}: {exc}")
        raise typer.Exit(2) from None
    try:
        result = import_litellm_config(data)
    except ValueError as exc:
        err.print(f"[red]error[/red] {file}: {exc}")
        raise typer.Exit(2) from None
    text = HEADER.format(source=file.name) + yaml.safe_dump(
        result.config, sort_keys=False, allow_unicode=True
    )
    if result.unmapped:
        text += "\n# Not mapped:\n" + "".join(f"#   {u}\n" for u in result.unmapped)
    try:
        load_config_text(text, str(out or "<import>"))
    except ConfigError as exc:  # a bug of the importer: never write a config that fails
        for issue in exc.issues:
            err.print(f"[red]error[/red] the imported config is invalid: {issue}")
        raise typer.Exit(1) from None
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        err.print(f"wrote {out} ({len(result.config['backends'])} backends)")
    if result.env_needed:
        err.print("the config reads these environment variables: " + ", ".join(result.env_needed))
    if result.unmapped:
        err.print(f"[yellow]not mapped ({len(result.unmapped)}):[/yellow]")
        for item in result.unmapped:
            err.print(f"  {item}", markup=False)
