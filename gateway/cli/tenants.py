"""``tollgate tenants``: a tenant's rate limits and model access (``set``, ``show``); and the
limit options ``keys create`` shares with it, checked against the config's backends and
policies."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.console import Console

from gateway.cli.options import ConfigOpt, optional_config, store_url, store_url_for, with_keystore

app = typer.Typer(help="Rate limits and model access of tenants.", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

RpmOpt = Annotated[
    int | None,
    typer.Option(
        "--rpm", min=1, max=2_000_000_000, help="requests per minute (every replica together)"
    ),
]
TpmOpt = Annotated[
    int | None,
    typer.Option(
        "--tpm",
        min=1,
        max=2_000_000_000,
        help="tokens per minute: prompt + output, reserved up front",
    ),
]
BackendsOpt = Annotated[
    list[str] | None,
    typer.Option("--allow-backend", help="a backend it may use (repeat; default: every one)"),
]
PoliciesOpt = Annotated[
    list[str] | None,
    typer.Option("--allow-policy", help="a policy it may use (repeat; default: every one)"),
]


def limits_from_options(
    config: str | None,
    rpm: int | None,
    tpm: int | None,
    backends: list[str] | None,
    policies: list[str] | None,
) -> tuple[str, Any]:
    """(the store URL, the limits); exits 2 when a named backend or policy is not in the
    config (when there is one)."""
    from gateway.store.keys import Limits

    cfg = optional_config(config)
    if cfg is not None:
        from gateway.serve.access import unknown_names

        problems = unknown_names(cfg, backends, policies)
        for field, message in problems:
            option = "--allow-backend" if field == "allowed_backends" else "--allow-policy"
            err.print(f"[red]error[/red] {option}: {message}", highlight=False)
        if problems:
            raise typer.Exit(2)
    url = store_url(cfg)  # the environment's URL first (gateway.settings.database_url)
    return url, Limits.of(rpm, tpm, backends or None, policies or None)


def describe(limits: Any) -> str:
    """One line: rpm, tpm and access lists ("" when there are none)."""
    parts = []
    if limits.rpm is not None:
        parts.append(f"rpm {limits.rpm}")
    if limits.tpm is not None:
        parts.append(f"tpm {limits.tpm}")
    if limits.allowed_backends is not None:
        parts.append("backends " + ",".join(limits.allowed_backends))
    if limits.allowed_policies is not None:
        parts.append("policies " + ",".join(limits.allowed_policies))
    return "; ".join(parts)


@app.command("set")
def tenants_set(
    tenant: Annotated[str, typer.Argument(help="tenant name (created if new)")],
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    allow_backend: BackendsOpt = None,
    allow_policy: PoliciesOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Replace a tenant's limits (an option left out: no limit); every key of the tenant
    follows them within the key-cache TTL."""
    url, limits = limits_from_options(config, rpm, tpm, allow_backend, allow_policy)
    asyncio.run(with_keystore(url, lambda ks: ks.set_tenant_limits(tenant, limits)))
    out.print(f"tenant {tenant}: {describe(limits) or 'no limits'}", highlight=False)


@app.command("show")
def tenants_show(
    tenant: Annotated[str, typer.Argument(help="tenant name")],
    config: ConfigOpt = None,
) -> None:
    """Print a tenant's limits."""
    url = store_url_for(config)
    limits = asyncio.run(with_keystore(url, lambda ks: ks.tenant_limits(tenant)))
    if limits is None:
        err.print(f"[red]error[/red] no tenant {tenant!r}")
        raise typer.Exit(1)
    out.print(f"tenant {tenant}: {describe(limits) or 'no limits'}", highlight=False)
