"""The LiteLLM proxy's limits and settings outside a deployment's model, for
``gateway.config.litellm_import``: a deployment's rate limits (its backend's ``rpm``/``tpm``),
which budgets become limits of Tollgate's ``budgets:`` section (and in which window), and what
every other proxy-wide setting (``router_settings``, ``litellm_settings``, ``general_settings``,
``environment_variables``) becomes — a line of the import report saying what to do instead.

Budgets: Tollgate caps a key, a tenant, a policy or a request tag over a total, daily or
calendar-month window. A LiteLLM deployment budget maps when its model group is that one
deployment with no fallbacks (the group becomes a policy, and the budget that policy's), in a
window Tollgate has (none → total, a day → day, a month → month). A proxy-wide, per-provider
or per-deployment-of-several budget has no Tollgate scope: the report gives the command.
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.config.budgets import MAX_BUDGET_USD

ENV_REF = re.compile(r"^os\.environ/([A-Za-z_][A-Za-z0-9_]*)$")
DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w|mo)\s*$")
BUDGET_KEYS = ("max_budget", "budget_duration")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

Note = Callable[[str, str], None]


def env_ref(value: Any) -> str | None:
    """``NAME`` of a LiteLLM ``os.environ/NAME`` reference, else None."""
    if isinstance(value, str):
        match = ENV_REF.match(value.strip())
        if match:
            return match.group(1)
    return None


def budget_window(duration: Any) -> str | None:
    """Tollgate's window for a LiteLLM ``budget_duration``: none → ``total``, one day (``1d``,
    ``24h``) → ``day``, one month (``1mo``, ``30d``, ``31d``) → ``month`` (a calendar month;
    LiteLLM's period is rolling); None for any other period (no Tollgate window for it)."""
    if duration is None:
        return "total"
    match = DURATION.match(str(duration))
    if match is None:
        return None
    count, unit = int(match.group(1)), match.group(2)
    if unit == "mo":
        return "month" if count == 1 else None
    seconds = count * _SECONDS[unit]
    if seconds == 86400:
        return "day"
    if seconds in (30 * 86400, 31 * 86400):
        return "month"
    return None


def budget_amount(value: Any) -> str | None:
    """A budget's USD amount as written (Tollgate budgets are Decimal), if a budget can hold it:
    a finite number from 0 to ``MAX_BUDGET_USD`` (``inf`` or ``1e400`` would be written into a
    config that then fails to load)."""
    if isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return str(value) if amount.is_finite() and 0 <= amount <= MAX_BUDGET_USD else None


def deployment_budget(params: dict[str, Any]) -> tuple[str, str] | None:
    """(amount, window) of a deployment's budget when Tollgate can enforce it as a policy
    budget (a valid amount, a period Tollgate has a window for)."""
    amount = budget_amount(params.get("max_budget"))
    window = budget_window(params.get("budget_duration"))
    return (amount, window) if amount is not None and window is not None else None


def rate_limits(where: str, params: dict[str, Any], note: Note) -> dict[str, int]:
    """A deployment's ``rpm``/``tpm`` as its backend's: LiteLLM skips a deployment at its limit
    and so does Tollgate (every replica together)."""
    out: dict[str, int] = {}
    for key in ("rpm", "tpm"):
        limit = params.get(key)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1:
            out[key] = limit
        elif limit is not None:
            note(f"{where}.{key}", f"not a positive whole number: {limit!r}")
    return out


def report_deployment_budget(where: str, params: dict[str, Any], alone: bool, note: Note) -> None:
    """Say why a deployment's budget did not become a policy budget."""
    if "max_budget" not in params:
        note(f"{where}.budget_duration", "a budget_duration without a max_budget: nothing to cap")
    elif not alone:
        note(
            f"{where}.max_budget",
            f"max_budget {params['max_budget']} of one deployment of several (or of a group with "
            "fallbacks, or one another group falls back to): Tollgate budgets cap a key, tenant, "
            "policy or tag, not one backend; "
            "cap the group's policy instead (`tollgate budgets set --scope policy ...`)",
        )
    elif budget_amount(params["max_budget"]) is None:
        note(f"{where}.max_budget", f"not a USD amount: {params['max_budget']!r}")
    else:
        note(
            f"{where}.budget_duration",
            f"{params.get('budget_duration')!r}: Tollgate's budget windows are total, day and "
            "month only",
        )


def _proxy_budget(settings: dict[str, Any]) -> str:
    amount = budget_amount(settings.get("max_budget")) or "<usd>"
    window = budget_window(settings.get("budget_duration")) or "<total|day|month>"
    return (
        "Tollgate has no gateway-wide budget: cap each tenant "
        f"(`tollgate budgets set --scope tenant --name <tenant> --max-usd {amount} "
        f"--window {window}`) or key (`tollgate keys create --tenant <name> --max-budget-usd "
        f"{amount} --budget-window {window}`)"
    )


def report_settings(
    data: dict[str, Any], router: dict[str, Any], settings: dict[str, Any], note: Note
) -> None:
    """Report every proxy-wide setting that ``litellm_import`` did not map, with what to do."""
    done_router = {
        "fallbacks", "context_window_fallbacks", "content_policy_fallbacks",
        "default_fallbacks", "num_retries", "timeout", "allowed_fails", "cooldown_time",
        "model_group_alias", "routing_strategy",
    }  # fmt: skip
    for key in router:
        if key in done_router:
            continue
        if key.startswith("redis"):
            note(
                f"router_settings.{key}",
                "set TOLLGATE_REDIS_URL=redis://[:password@]host:port/0 in the gateway's "
                "environment (shared budgets, breakers and counters)",
            )
        elif key == "provider_budget_config":
            note(
                f"router_settings.{key}",
                "per-provider budgets: Tollgate budgets cap a key, tenant, policy or tag "
                "(`tollgate budgets set`)",
            )
        else:
            note(f"router_settings.{key}", "not mapped")
    done_settings = {
        "fallbacks", "context_window_fallbacks", "content_policy_fallbacks",
        "default_fallbacks", "num_retries", "request_timeout",
    }  # fmt: skip
    for key in settings:
        if key in done_settings:
            continue
        where = f"litellm_settings.{key}"
        if key == "max_budget":
            note(where, _proxy_budget(settings))
        elif key == "budget_duration":
            if "max_budget" not in settings:
                note(where, "a budget_duration without a max_budget: nothing to cap")
        elif key == "max_end_user_budget":
            note(where, "per end-user budgets: cap keys or tenants (`tollgate budgets set`)")
        elif key in ("success_callback", "failure_callback", "callbacks"):
            note(
                where,
                "every attempt is recorded in Tollgate's store; traces go to OTLP when "
                "OTEL_EXPORTER_OTLP_ENDPOINT is set; access log: server.access_log",
            )
        elif key == "drop_params":
            note(
                where,
                "Tollgate forwards request parameters unchanged (a backend that rejects one "
                "answers 400)",
            )
        else:
            note(where, "not mapped")
    general = data.get("general_settings") or {}
    for key, value in general.items() if isinstance(general, dict) else ():
        where = f"general_settings.{key}"
        if key == "master_key":
            note(
                where,
                "the admin key comes from TOLLGATE_ADMIN_KEY; clients use virtual keys "
                "(`tollgate keys create --tenant <name>`)",
            )
        elif key == "database_url":
            ref = env_ref(value)
            note(
                where,
                f"set TOLLGATE_DATABASE_URL={'$' + ref if ref else '<url>'} (not copied: a "
                "database URL may hold a password)",
            )
        else:
            note(where, "not mapped")
    env = data.get("environment_variables")
    if isinstance(env, dict) and env:
        note(
            "environment_variables",
            f"set {', '.join(sorted(map(str, env)))} in the gateway's environment "
            "(values are not copied)",
        )
    for key in data:
        if key not in (
            "model_list", "router_settings", "litellm_settings", "general_settings",
            "environment_variables",
        ):  # fmt: skip
            note(str(key), "not mapped")
