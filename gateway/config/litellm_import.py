"""Importing a LiteLLM proxy config: a pure transform from its parsed YAML to a Tollgate config.

Owns the mapping only (no I/O; ``gateway.cli.importer`` reads and writes the files):

- ``model_list`` → ``backends``. A model group (one ``model_name``) with one deployment and no
  fallbacks becomes one backend; a group with several deployments or with fallbacks becomes a
  policy of the same name whose candidates are its deployments and then its fallbacks' (tried in
  that order: the predictor is off in an imported config, so ``predictor_fallback:
  first_candidate`` orders the chain), and an alias keeps the group's name working as ``model``.
- ``router_settings``/``litellm_settings`` ``fallbacks`` and ``context_window_fallbacks`` (a
  context-window error moves on to the next backend in Tollgate) → those policies;
  ``num_retries``, ``timeout``/``request_timeout`` → each backend's ``max_retries``/``timeout_s``;
  ``allowed_fails``/``cooldown_time`` → ``circuit_breaker``; ``model_group_alias`` → ``aliases``;
  a deployment's ``rpm``/``tpm`` → its backend's (at its limit it is skipped, as in LiteLLM).
- ``api_key: os.environ/NAME`` is kept; a literal key is never copied (the backend reads a new
  variable instead, and the report says which). Literal secrets anywhere are dropped.

- a deployment's ``max_budget``/``budget_duration``, when its group is that deployment alone
  with no fallbacks → a policy for the group and a limit of that policy in ``budgets:``
  (``gateway.config.litellm_settings`` says which budgets map, and in which window).

Everything else is listed in ``ImportResult.unmapped`` with what to do instead (other budgets,
rate limits, callbacks, …): ``gateway.config.litellm_settings`` reports the proxy-wide settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gateway.config.litellm_settings import (
    BUDGET_KEYS,
    deployment_budget,
    env_ref,
    rate_limits,
    report_deployment_budget,
    report_settings,
)

SECRET_WORDS = re.compile(r"(key|secret|token|password|credential)", re.IGNORECASE)
_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]+")

# litellm_params keys mapped to a backend field (the rest go to params, unless listed below)
_PARAM_FIELDS = {"model", "api_base", "api_key", "api_version", "timeout", "max_retries"}
_PARAM_FIELDS |= {"rpm", "tpm"}  # the backend's own rate limits (litellm_settings.rate_limits)
_PRICE_FIELDS = ("input_cost_per_token", "output_cost_per_token")
_NOT_MAPPED_PARAMS = {
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
class ImportResult:
    config: dict[str, Any]
    unmapped: list[Unmapped] = field(default_factory=list)
    env_needed: list[str] = field(default_factory=list)  # variables the config reads


def safe_name(name: str) -> str:
    """A Tollgate name for a LiteLLM model name (``openai/gpt-4o`` → ``openai-gpt-4o``)."""
    out = _UNSAFE.sub("-", name).strip("-._:")
    return out or "model"


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    taken.add(candidate)
    return candidate


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class _Importer:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.unmapped: list[Unmapped] = []
        self.env: list[str] = []
        self.group_policy: dict[str, str] = {}  # model group → the policy made for it
        router = data.get("router_settings") or {}
        settings = data.get("litellm_settings") or {}
        self.router = router if isinstance(router, dict) else {}
        self.settings = settings if isinstance(settings, dict) else {}
        self.retries = self.router.get("num_retries", self.settings.get("num_retries"))
        self.timeout = self.router.get("timeout", self.settings.get("request_timeout"))

    def note(self, path: str, reason: str) -> None:
        self.unmapped.append(Unmapped(path, reason))

    def need_env(self, name: str) -> None:
        if name not in self.env:
            self.env.append(name)

    # -- one deployment --------------------------------------------------------------------
    def backend(self, index: int, entry: dict[str, Any], name: str) -> dict[str, Any] | None:
        where = f"model_list[{index}]"
        params = entry.get("litellm_params")
        if not isinstance(params, dict) or not isinstance(params.get("model"), str):
            self.note(where, "no litellm_params.model: skipped")
            return None
        if "*" in params["model"] or "*" in str(entry.get("model_name", "")):
            self.note(where, "wildcard model routing: list each model as its own backend")
            return None
        out: dict[str, Any] = {"name": name, "model": params["model"]}
        for key in ("api_base", "api_version"):
            if isinstance(params.get(key), str):
                ref = env_ref(params[key])
                if ref:
                    self.note(f"{where}.litellm_params.{key}", f"read from ${ref}: write the value")
                else:
                    out[key] = params[key]
        self._api_key(where, params.get("api_key"), name, out)
        timeout = _number(params.get("timeout", self.timeout))
        if timeout is not None and timeout > 0:
            out["timeout_s"] = timeout
        retries = params.get("max_retries", self.retries)
        if isinstance(retries, int) and not isinstance(retries, bool):
            out["max_retries"] = max(0, min(10, retries))
        raw_info = entry.get("model_info")
        info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
        self._prices(where, params, info, out)
        out.update(rate_limits(f"{where}.litellm_params", params, self.note))
        self._model_info(where, info, out)
        extra: dict[str, Any] = {}
        for key, value in params.items():
            if key in _PARAM_FIELDS or key in _PRICE_FIELDS or key in BUDGET_KEYS:
                continue  # budgets: never a request parameter (``run`` maps or reports them)
            if key in _NOT_MAPPED_PARAMS:
                self.note(f"{where}.litellm_params.{key}", _NOT_MAPPED_PARAMS[key])
            elif env_ref(value) or (SECRET_WORDS.search(key) and isinstance(value, str)):
                self.note(
                    f"{where}.litellm_params.{key}",
                    "a secret outside api_key is not copied: set it in the provider's own "
                    "environment variable (litellm reads it from there)",
                )
            else:
                extra[key] = value
        if extra:
            out["params"] = extra
        return out

    def _api_key(self, where: str, key: Any, name: str, out: dict[str, Any]) -> None:
        if key is None:
            return
        ref = env_ref(key)
        if ref is None:
            ref = re.sub(r"[^A-Z0-9]+", "_", f"{name}_API_KEY".upper())
            self.note(
                f"{where}.litellm_params.api_key",
                f"a literal key is never copied into the config: set ${ref} to it",
            )
        out["api_key"] = f"os.environ/{ref}"
        self.need_env(ref)

    def _prices(
        self, where: str, params: dict[str, Any], info: dict[str, Any], out: dict[str, Any]
    ) -> None:
        prices = {k: params.get(k, info.get(k)) for k in _PRICE_FIELDS}
        given = [k for k, v in prices.items() if v is not None]
        if len(given) == 2:
            numbers = [_number(prices[k]) for k in _PRICE_FIELDS]
            if all(n is not None and n >= 0 for n in numbers):
                for k in _PRICE_FIELDS:
                    out[k] = str(prices[k])  # kept as written: Tollgate prices are Decimal
                return
        if given:
            self.note(
                f"{where}.litellm_params.{given[0]}",
                "Tollgate needs both input and output prices (valid numbers): priced from "
                "litellm's cost map instead",
            )

    def _model_info(self, where: str, info: dict[str, Any], out: dict[str, Any]) -> None:
        caps = {"streaming"}
        mode = info.get("mode")
        if mode == "embedding":
            caps = {"embeddings"}
        elif mode == "completion":
            caps.add("completions")
        elif mode not in (None, "chat"):
            self.note(f"{where}.model_info.mode", f"mode {mode!r} is not served by Tollgate")
        for flag, cap in (
            ("supports_function_calling", "tools"),
            ("supports_vision", "vision"),
            ("supports_response_schema", "json_mode"),
        ):
            if info.get(flag) is True:
                caps.add(cap)
        if caps != {"streaming"}:
            out["capabilities"] = sorted(caps)
        context = info.get("max_input_tokens")
        if isinstance(context, int) and context > 0:
            out["context_window"] = context
        max_out = info.get("max_output_tokens", info.get("max_tokens"))
        if isinstance(max_out, int) and max_out > 0:
            out["max_output_tokens"] = max_out

    # -- the whole file ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        groups: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        model_list = self.data.get("model_list")
        if not isinstance(model_list, list) or not model_list:
            raise ValueError("the file has no model_list: is it a LiteLLM proxy config?")
        for index, entry in enumerate(model_list):
            if not isinstance(entry, dict) or not isinstance(entry.get("model_name"), str):
                self.note(f"model_list[{index}]", "no model_name: skipped")
                continue
            groups.setdefault(entry["model_name"], []).append((index, entry))
        fallbacks = self._fallbacks(set(groups))
        budgets = self._budgets(groups, fallbacks)
        taken: set[str] = set()
        group_backends: dict[str, list[str]] = {}
        backends: list[dict[str, Any]] = []
        for group, members in groups.items():
            base = safe_name(group)
            several = len(members) > 1 or group in fallbacks or group in budgets
            names = []
            for n, (index, entry) in enumerate(members, start=1):
                name = _unique(f"{base}-{n}" if several else base, taken)
                made = self.backend(index, entry, name)
                if made is not None:
                    backends.append(made)
                    names.append(name)
            if names:
                group_backends[group] = names
        if not backends:
            raise ValueError("no model_list entry could be imported")
        config: dict[str, Any] = {"backends": backends}
        policies, aliases = self._policies(groups, group_backends, fallbacks, budgets, taken)
        if policies:
            config["policies"] = policies
            config["routing"] = {"default": next(iter(policies))}
        limits = [
            {"scope": "policy", "name": self.group_policy[g], "max_usd": usd, "window": window}
            for g, (usd, window) in budgets.items()
            if g in self.group_policy
        ]
        if limits:
            config["budgets"] = {"limits": limits}
        config["predictor"] = {"enabled": False}  # no predictor profiles for imported backends
        for group, names in group_backends.items():
            if group not in policies and names[0] != group and group not in taken:
                aliases.setdefault(group, names[0])  # the LiteLLM name keeps working as `model`
        self._aliases(aliases, group_backends, taken)
        if aliases:
            config["aliases"] = aliases
        breaker = self._breaker()
        if breaker:
            config["circuit_breaker"] = breaker
        report_settings(self.data, self.router, self.settings, self.note)
        return config

    def _fallbacks(self, groups: set[str]) -> dict[str, list[str]]:
        """Group → the groups to try after it, from every fallback list LiteLLM reads."""
        out: dict[str, list[str]] = {}
        for section, settings in (
            ("router_settings", self.router),
            ("litellm_settings", self.settings),
        ):
            for key in ("fallbacks", "context_window_fallbacks"):
                items = settings.get(key) or []
                if not isinstance(items, list):
                    self.note(f"{section}.{key}", "expected a list of {group: [fallbacks]}")
                    continue
                for i, item in enumerate(items):
                    for group, targets in (item or {}).items() if isinstance(item, dict) else ():
                        where = f"{section}.{key}[{i}].{group}"
                        if group not in groups:
                            self.note(where, "not a model_name of model_list")
                            continue
                        for target in targets if isinstance(targets, list) else [targets]:
                            if target not in groups:
                                self.note(where, f"fallback {target!r} is not in model_list")
                            elif target != group and target not in out.setdefault(group, []):
                                out[group].append(target)
            for key in ("content_policy_fallbacks", "default_fallbacks"):
                if settings.get(key):
                    self.note(
                        f"{section}.{key}",
                        "not mapped: Tollgate returns a request the backend refused as the "
                        "client's error; list fallbacks per model group instead",
                    )
        return out

    def _budgets(
        self, groups: dict[str, list[tuple[int, dict[str, Any]]]], fallbacks: dict[str, list[str]]
    ) -> dict[str, tuple[str, str]]:
        """Group → (USD, window) of the budgets that become its policy's; the rest reported."""
        out: dict[str, tuple[str, str]] = {}
        targets = {t for chain in fallbacks.values() for t in chain}  # called outside its policy
        for group, members in groups.items():
            alone = len(members) == 1 and group not in fallbacks and group not in targets
            for index, entry in members:
                params = entry.get("litellm_params")
                if not isinstance(params, dict) or not set(BUDGET_KEYS) & set(params):
                    continue
                budget = deployment_budget(params) if "max_budget" in params else None
                if alone and budget is not None:
                    out[group] = budget
                else:
                    where = f"model_list[{index}].litellm_params"
                    report_deployment_budget(where, params, alone, self.note)
        return out

    def _policies(
        self,
        groups: dict[str, list[tuple[int, dict[str, Any]]]],
        group_backends: dict[str, list[str]],
        fallbacks: dict[str, list[str]],
        budgets: dict[str, tuple[str, str]],
        taken: set[str],
    ) -> tuple[dict[str, Any], dict[str, str]]:
        policies: dict[str, Any] = {}
        aliases: dict[str, str] = {}
        policy_names: set[str] = {"auto"}  # tollgate/auto is reserved
        for group, names in group_backends.items():
            if len(groups[group]) == 1 and group not in fallbacks and group not in budgets:
                continue
            chain = list(names)
            for target in fallbacks.get(group, []):
                chain += [n for n in group_backends.get(target, []) if n not in chain]
            policy = self.group_policy[group] = _unique(safe_name(group), policy_names)
            policies[policy] = {
                "description": f"LiteLLM model group {group!r}: its deployments, then its "
                "fallbacks, in order",
                "candidates": chain,
                "objective": {
                    "kind": "cheapest_adequate",
                    "min_success": 0.0,
                    "on_no_adequate": "most_capable",
                },
                "predictor_fallback": "first_candidate",
            }
            if group not in taken:
                aliases[group] = f"tollgate/{policy}"
        if (self.router.get("routing_strategy") or "simple-shuffle") != "simple-shuffle" or any(
            len(m) > 1 for m in groups.values()
        ):
            self.note(
                "router_settings.routing_strategy",
                f"{self.router.get('routing_strategy') or 'simple-shuffle'}: a group's "
                "deployments are tried in order (the next one on failure), not load-balanced",
            )
        return policies, aliases

    def _aliases(
        self, aliases: dict[str, str], group_backends: dict[str, list[str]], taken: set[str]
    ) -> None:
        extra = self.router.get("model_group_alias") or {}
        for alias, target in extra.items() if isinstance(extra, dict) else ():
            group = target.get("model") if isinstance(target, dict) else target
            where = f"router_settings.model_group_alias.{alias}"
            if group not in group_backends or alias in taken:
                self.note(where, f"target {group!r} is not an imported model group")
                continue
            aliases[str(alias)] = aliases.get(group, group_backends[group][0])

    def _breaker(self) -> dict[str, Any]:
        breaker: dict[str, Any] = {}
        fails = self.router.get("allowed_fails")
        if isinstance(fails, int) and fails >= 0:
            breaker["failure_threshold"] = fails + 1  # LiteLLM cools down after more than this
        cooldown = _number(self.router.get("cooldown_time"))
        if cooldown is not None and cooldown > 0:
            breaker["cooldown_s"] = cooldown
        return breaker


def import_litellm_config(data: Any) -> ImportResult:
    """The Tollgate config (a plain dict, ready for YAML) for a parsed LiteLLM proxy config,
    with every setting that could not be carried over. Raises ValueError when nothing can be."""
    if not isinstance(data, dict):
        raise ValueError("a LiteLLM config is a YAML mapping with a model_list")
    importer = _Importer(data)
    config = importer.run()
    return ImportResult(config, importer.unmapped, importer.env)
