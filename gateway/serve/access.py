"""Model access: the backends and policies a key and its tenant may use, checked the same way
for pinned and routed requests.

A key or tenant with ``allowed_backends`` reaches only those backends; with
``allowed_policies`` it may name (or be routed by ``auto`` to) only those policies, and — when
it has no backend list — reach only the candidates of those policies. Both the key's and the
tenant's lists apply (the intersection). A routed request only considers allowed candidates
(``RequestFacts.allowed_backends``); a pinned request to a backend it may not use, a policy it
may not use, or a policy none of whose candidates it may use gets a 403; ``GET /v1/models``
lists only what the caller may use. Backends' own
``allowed_tenants`` / ``denied_tenants`` (config) hold for pinned requests too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.auth import Principal
from gateway.config import BackendConfig, Config
from gateway.errors import PermissionDenied
from gateway.snapshot import POLICY_PREFIX
from gateway.store.keys import Limits

CODE = "permission_denied"


def _scopes(principal: Principal) -> list[tuple[str, Limits]]:
    return [("API key", principal.key_limits), ("tenant", principal.tenant_limits)]


def allowed_backends(principal: Principal, config: Config) -> frozenset[str] | None:
    """The backends the caller may use (None: every backend)."""
    sets: list[frozenset[str]] = []
    for _, limits in _scopes(principal):
        if limits.allowed_backends is not None:
            sets.append(frozenset(limits.allowed_backends))
        elif limits.allowed_policies is not None:
            sets.append(
                frozenset(
                    name
                    for policy in limits.allowed_policies
                    if policy in config.policies
                    for name in config.policies[policy].candidates
                )
            )
    return frozenset.intersection(*sets) if sets else None


def check_backend(principal: Principal, backend: BackendConfig, config: Config) -> None:
    """403 unless the caller may send requests to ``backend`` pinned by name."""
    tenant = principal.tenant_name
    if backend.allowed_tenants is not None and tenant not in backend.allowed_tenants:
        raise PermissionDenied(
            f"backend {backend.name!r} is not open to tenant {tenant!r}", param="model", code=CODE
        )
    if tenant in backend.denied_tenants:
        raise PermissionDenied(
            f"backend {backend.name!r} denies tenant {tenant!r}", param="model", code=CODE
        )
    allowed = allowed_backends(principal, config)
    if allowed is not None and backend.name not in allowed:
        raise PermissionDenied(
            f"this API key may not use backend {backend.name!r}; it may use: {_names(allowed)}",
            param="model",
            code=CODE,
        )


@dataclass(frozen=True)
class Checked:
    """A passed ``check_policy``: the policy and the backends it let the caller use (None:
    every backend), so a later step of the same request need not check again."""

    policy: str
    allowed: frozenset[str] | None


def check_policy(
    principal: Principal, policy: str, candidates: Iterable[str], config: Config
) -> frozenset[str] | None:
    """403 unless the caller may be routed by ``policy`` to at least one of its candidates;
    returns the backends it may use (None: every backend)."""
    for who, limits in _scopes(principal):
        if limits.allowed_policies is not None and policy not in limits.allowed_policies:
            raise PermissionDenied(
                f"this {who} may not use policy {policy!r}; it may use: "
                f"{_names(limits.allowed_policies)}",
                param="model",
                code=CODE,
            )
    allowed = allowed_backends(principal, config)
    if allowed is not None and not allowed.intersection(candidates):
        raise PermissionDenied(
            f"this API key may use none of policy {policy!r}'s backends "
            f"({', '.join(candidates)}); it may use: {_names(allowed)}",
            param="model",
            code=CODE,
        )
    return allowed


def listed(principal: Principal, config: Config, model: str) -> bool:
    """Whether ``GET /v1/models`` shows ``model`` (a backend, ``tollgate/<policy>`` or an alias
    of either) to the caller: only what it may use."""
    target = config.aliases.get(model, model)
    if target.startswith(POLICY_PREFIX):
        name = target.removeprefix(POLICY_PREFIX)
        if name not in config.policies:
            return True  # tollgate/auto: the routing rules choose
        try:
            check_policy(principal, name, config.policies[name].candidates, config)
        except PermissionDenied:
            return False
        return True
    backend = config.backend(target)
    if backend is not None:
        try:
            check_backend(principal, backend, config)
        except PermissionDenied:
            return False
    return True


def unknown_names(
    config: Config, backends: Iterable[str] | None, policies: Iterable[str] | None
) -> list[tuple[str, str]]:
    """(field, problem) for each access-list name the config does not define."""
    known_b = {b.name for b in config.backends}
    problems = [
        ("allowed_backends", f"unknown backend {name!r}; backends: {_names(known_b)}")
        for name in backends or ()
        if name not in known_b
    ]
    problems += [
        ("allowed_policies", f"unknown policy {name!r}; policies: {_names(config.policies)}")
        for name in policies or ()
        if name not in config.policies
    ]
    return problems


def _names(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none"
