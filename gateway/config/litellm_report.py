"""What an import of a LiteLLM proxy config could not carry over, and what to do instead.

This module owns the import's report (``gateway.config.litellm_import`` owns the mapping):
:class:`Unmapped`, one setting left behind with the reason and the Tollgate way to get it;
:class:`ImportReport`, the notes and the environment variables the new config reads; the
reasons for per-deployment ``litellm_params`` without an equivalent; and
:func:`report_settings`, the notes on the top-level settings the mapping does not read
(``litellm_settings`` budgets and callbacks, ``general_settings``, ``environment_variables``,
Redis, …). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.config.schema import ENV_REF

# litellm_params keys with no Tollgate equivalent -> why, and what to use instead
NOT_MAPPED_PARAMS = {
    "rpm": "per-deployment rate limits are not enforced by Tollgate (budgets are per key/tenant)",
    "tpm": "per-deployment rate limits are not enforced by Tollgate (budgets are per key/tenant)",
    "stream_timeout": "Tollgate has one timeout per backend (timeout_s)",
    "input_cost_per_second": "per-second prices: use self_hosted (gpu_hour_usd + throughput)",
    "output_cost_per_second": "per-second prices: use self_hosted (gpu_hour_usd + throughput)",
    "weight": "deployments of a group are tried in order, not weighted",
    "order": "deployments of a group are tried in the order they are listed",
}


@dataclass(frozen=True)
class Unmapped:
    """One setting of the LiteLLM config that the Tollgate config does not carry."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class ImportReport:
    """The notes of one import, in the order they were found, and the variables it reads."""

    unmapped: list[Unmapped] = field(default_factory=list)
    env_needed: list[str] = field(default_factory=list)

    def note(self, path: str, reason: str) -> None:
        self.unmapped.append(Unmapped(path, reason))

    def need_env(self, name: str) -> None:
        if name not in self.env_needed:
            self.env_needed.append(name)


def env_ref(value: Any) -> str | None:
    """The variable an ``os.environ/NAME`` reference names, else None."""
    if isinstance(value, str):
        match = ENV_REF.match(value.strip())
        if match:
            return match.group(1)
    return None


def report_settings(
    data: dict[str, Any], router: dict[str, Any], settings: dict[str, Any], report: ImportReport
) -> None:
    """Note every top-level setting the mapping does not carry, with what to do instead:
    ``router_settings`` and ``litellm_settings`` keys other than the mapped ones,
    ``general_settings``, ``environment_variables`` and unknown top-level keys."""
    done_router = {
        "fallbacks", "context_window_fallbacks", "content_policy_fallbacks",
        "default_fallbacks", "num_retries", "timeout", "allowed_fails", "cooldown_time",
        "model_group_alias", "routing_strategy",
    }  # fmt: skip
    for key in router:
        if key in done_router:
            continue
        if key.startswith("redis"):
            report.note(
                f"router_settings.{key}",
                "set TOLLGATE_REDIS_URL=redis://[:password@]host:port/0 in the gateway's "
                "environment (shared budgets, breakers and counters)",
            )
        else:
            report.note(f"router_settings.{key}", "not mapped")
    done_settings = {
        "fallbacks", "context_window_fallbacks", "content_policy_fallbacks",
        "default_fallbacks", "num_retries", "request_timeout",
    }  # fmt: skip
    for key, value in settings.items():
        if key in done_settings:
            continue
        if key in ("max_budget", "budget_duration", "max_end_user_budget"):
            amount = value if key != "budget_duration" else "<usd>"
            report.note(
                f"litellm_settings.{key}",
                "budgets belong to keys and tenants in Tollgate: "
                f"`tollgate keys create --tenant <name> --max-budget-usd {amount}`",
            )
        elif key in ("success_callback", "failure_callback", "callbacks"):
            report.note(
                f"litellm_settings.{key}",
                "every attempt is recorded in Tollgate's store; traces go to OTLP when "
                "OTEL_EXPORTER_OTLP_ENDPOINT is set; access log: server.access_log",
            )
        elif key == "drop_params":
            report.note(
                f"litellm_settings.{key}",
                "Tollgate forwards request parameters unchanged (a backend that rejects one "
                "answers 400)",
            )
        else:
            report.note(f"litellm_settings.{key}", "not mapped")
    general = data.get("general_settings") or {}
    for key, value in general.items() if isinstance(general, dict) else ():
        where = f"general_settings.{key}"
        if key == "master_key":
            report.note(
                where,
                "the admin key comes from TOLLGATE_ADMIN_KEY; clients use virtual keys "
                "(`tollgate keys create --tenant <name>`)",
            )
        elif key == "database_url":
            ref = env_ref(value)
            report.note(
                where,
                f"set TOLLGATE_DATABASE_URL={'$' + ref if ref else '<url>'} (not copied: a "
                "database URL may hold a password)",
            )
        else:
            report.note(where, "not mapped")
    env = data.get("environment_variables")
    if isinstance(env, dict) and env:
        report.note(
            "environment_variables",
            f"set {', '.join(sorted(map(str, env)))} in the gateway's environment "
            "(values are not copied)",
        )
    for key in data:
        if key not in (
            "model_list", "router_settings", "litellm_settings", "general_settings",
            "environment_variables",
        ):  # fmt: skip
            report.note(str(key), "not mapped")
