"""Deployment configuration: the strict pydantic schema of ``config.yaml``.

Every model forbids unknown keys; cross-reference checks report each problem at its own path
(``_LocErrors``), which ``gateway.config.loader`` turns into the YAML path and line of the
offending key (``config.yaml:14: backends[1].api_key: ...``). Secrets are never written in the
file: a backend's ``api_key`` is a reference ``os.environ/NAME`` resolved at call time.
"""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from gateway.config.budgets import BudgetsConfig
from gateway.config.cache import CacheConfig
from gateway.config.sections import (
    BreakerConfig,
    PredictorConfig,
    RedisConfig,
    ServerConfig,
    StoreConfig,
    Strict,
)
from gateway.settings import env_secret
from policies import Policy, PolicySet
from policies.routing_specs import Routing, Shadow

ENV_REF = re.compile(r"^os\.environ/([A-Za-z_][A-Za-z0-9_]*)$")
NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
Capability = Literal["tools", "json_mode", "vision", "streaming", "embeddings", "completions"]


class EnvSecret(Strict):
    """A secret named by an environment variable; the value is read when needed, never stored."""

    env: str

    def value(self) -> str | None:
        return env_secret(self.env)

    def __repr__(self) -> str:
        return f"EnvSecret(env={self.env!r})"


def _parse_secret(value: Any) -> Any:
    if value is None or isinstance(value, EnvSecret):
        return value
    if isinstance(value, str):
        match = ENV_REF.match(value.strip())
        if match:
            return EnvSecret(env=match.group(1))
        raise ValueError(
            "secrets are not written in the config file: use os.environ/NAME and set NAME "
            "in the gateway's environment"
        )
    raise ValueError("expected a string of the form os.environ/NAME")


SelfHostedEngine = Literal["vllm", "sglang", "llamacpp", "tgi", "trtllm", "openai"]


class SelfHostedCost(Strict):
    """A backend on our own GPUs: what they cost, how fast it serves, and when it is full.

    Priced from GPU cost / throughput: the latest ``tollgate calibrate`` measurement when one is
    stored, else the throughputs declared here (USD per output token = gpu_hour_usd * gpus /
    3600 / output_tokens_per_second, likewise input); with neither it is unpriced, never free.
    Its live load is read from the engine (``gateway.backends.engines``); over a limit below it
    is taken out of routing until the load drains (``gateway.capacity``, docs/self-hosted.md).
    """

    engine: SelfHostedEngine = Field(
        default="openai", description="where the live load is read; openai: in-flight count only"
    )
    gpu_hour_usd: Decimal = Field(gt=0, description="USD per GPU-hour")
    gpus: int = Field(default=1, ge=1, le=4096)
    output_tokens_per_second: float | None = Field(default=None, gt=0)
    input_tokens_per_second: float | None = Field(default=None, gt=0)
    metrics_url: str | None = Field(default=None, description="default: the api_base host")
    poll_interval_s: float = Field(default=1.0, ge=0.1, le=60)
    max_waiting: int | None = Field(default=4, ge=0, description="queued requests; null: off")
    max_kv_cache_usage: float | None = Field(default=0.95, gt=0, le=1)
    max_in_flight: int | None = Field(
        default=None, ge=1, description="null: the calibrated operating concurrency"
    )
    resume_fraction: float = Field(default=0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _throughputs(self) -> SelfHostedCost:
        if (self.output_tokens_per_second is None) != (self.input_tokens_per_second is None):
            raise ValueError(
                "declare both output_tokens_per_second and input_tokens_per_second, or neither "
                "(then `tollgate calibrate` measures them)"
            )
        return self


class BackendConfig(Strict):
    """One model endpoint the gateway can call (through litellm)."""

    name: Annotated[str, Field(pattern=NAME, max_length=128)]
    model: Annotated[str, Field(min_length=1, description="litellm model string")]
    api_base: str | None = None
    api_key: EnvSecret | None = None
    api_version: str | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="extra litellm params")
    input_cost_per_token: Decimal | None = Field(default=None, ge=0)
    output_cost_per_token: Decimal | None = Field(default=None, ge=0)
    self_hosted: SelfHostedCost | None = None
    context_window: int | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    capabilities: frozenset[Capability] = frozenset({"streaming"})
    tags: frozenset[str] = frozenset()
    timeout_s: float = Field(default=60.0, gt=0)
    transport: Literal["auto", "litellm", "openai_http"] = Field(
        default="auto",
        description="auto: plain HTTP for openai/ and hosted_vllm/ models with an api_base "
        "(gateway.backends.selector), litellm for the rest",
    )
    max_connections: int | None = Field(
        default=None, ge=1, le=10_000, description="keep-alive pool size (openai_http path)"
    )
    max_retries: int = Field(default=2, ge=0, le=10)
    retry_backoff_s: float = Field(default=0.25, ge=0)
    profile: str | None = Field(default=None, description="predictor profile this backend maps to")
    typical_output_tokens: int = Field(default=256, ge=1, description="for expected-cost estimates")
    allowed_tenants: frozenset[str] | None = None
    denied_tenants: frozenset[str] = frozenset()
    rpm: int | None = Field(default=None, ge=1, description="requests per minute, all replicas")
    tpm: int | None = Field(default=None, ge=1, description="tokens per minute, all replicas")

    _check_secret = field_validator("api_key", mode="before")(_parse_secret)

    @model_validator(mode="after")
    def _prices_consistent(self) -> BackendConfig:
        given = (self.input_cost_per_token is None, self.output_cost_per_token is None)
        if given[0] != given[1]:
            raise ValueError("set both input_cost_per_token and output_cost_per_token, or neither")
        if self.self_hosted is not None and self.input_cost_per_token is not None:
            raise ValueError("give either self_hosted GPU pricing or per-token prices, not both")
        sh = self.self_hosted
        if sh is not None and sh.engine != "openai" and not (self.api_base or sh.metrics_url):
            raise ValueError(
                f"self_hosted.engine {sh.engine} reads its load from the api_base host: "
                "set api_base or self_hosted.metrics_url"
            )
        if self.transport == "openai_http" and not self.api_base:
            raise ValueError("transport openai_http needs an api_base")
        return self

    def missing_credentials(self) -> str | None:
        """Why this backend cannot be called now (its key's variable is unset), or None."""
        if self.api_key is not None and self.api_key.value() is None:
            return f"environment variable {self.api_key.env} is not set"
        return None

    @property
    def is_local(self) -> bool:
        """True when the endpoint is on this host (a self-hosted server needing no API key)."""
        if self.api_base is None:
            return False
        host = re.sub(r"^[a-z]+://", "", self.api_base).split("/")[0].rsplit(":", 1)[0]
        host = host.strip("[]")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


DEFAULT_RUBRIC = """\
You grade one answer of an AI assistant to a user's request. The answer succeeds when it
does what the request asks: it is correct, complete enough to be used as it is, follows the
instructions and format the request gives, and does not invent facts. Minor style issues do
not make it fail; a wrong, evasive, truncated or off-topic answer does."""


class JudgeConfig(Strict):
    """The optional judge: a backend that grades a sample of served answers
    (``gateway.outcomes.judge``).

    Its verdicts are task outcomes with source ``judge``; what its calls cost is recorded with
    each verdict and reported apart from traffic spend (evaluation overhead).
    """

    backend: str = Field(description="the configured backend that grades answers")
    sample: float = Field(
        default=0.05, ge=0, le=1, description="fraction of answers graded, by request id hash"
    )
    policies: tuple[str, ...] | None = Field(
        default=None, description="only answers routed by these policies; null = every answer"
    )
    rubric: str = Field(default=DEFAULT_RUBRIC, min_length=1, max_length=20_000)
    max_tokens: int = Field(default=256, ge=16, le=8192)
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    max_concurrent: int = Field(
        default=32, ge=1, le=10_000, description="judge calls in flight; more are skipped"
    )


AUTO_POLICY = "auto"  # ``tollgate/auto``: the routing rules pick the policy


class Config(Strict):
    backends: list[BackendConfig] = Field(min_length=1)
    aliases: dict[str, str] = Field(default_factory=dict)
    include: tuple[str, ...] = Field(default=(), description="extra YAML files with policies")
    policies: dict[str, Policy] = Field(default_factory=dict)
    routing: Routing | None = None
    shadow: tuple[Shadow, ...] = ()
    predictor: PredictorConfig = PredictorConfig()
    store: StoreConfig = StoreConfig()
    redis: RedisConfig = RedisConfig()
    server: ServerConfig = ServerConfig()
    circuit_breaker: BreakerConfig = BreakerConfig()
    judge: JudgeConfig | None = None
    cache: CacheConfig = CacheConfig()
    budgets: BudgetsConfig = BudgetsConfig()

    _policy_set: PolicySet | None = PrivateAttr(default=None)

    @property
    def policy_set(self) -> PolicySet | None:
        return self._policy_set

    @model_validator(mode="after")
    def _references(self) -> Config:
        names = [b.name for b in self.backends]
        seen: set[str] = set()
        issues: list[tuple[tuple[str | int, ...], str]] = []
        for index, name in enumerate(names):
            if name in seen:
                issues.append((("backends", index, "name"), f"duplicate backend name {name!r}"))
            seen.add(name)
        if self.policies and self.routing is None:
            issues.append(
                (
                    ("routing",),
                    "routing is required when policies are defined "
                    "(at least routing.default: <policy>)",
                )
            )
        if self.routing is not None and not self.policies:
            issues.append((("routing",), "routing names policies, but no policies are defined"))
        if AUTO_POLICY in self.policies:
            issues.append(
                (
                    ("policies", AUTO_POLICY),
                    "'auto' is reserved (tollgate/auto means: let the routing rules choose)",
                )
            )
        if self.policies and self.routing is not None:
            policy_set = PolicySet.model_construct(
                policies=self.policies, routing=self.routing, shadow=self.shadow
            )
            policy_set.model_post_init(None)
            issues.extend(policy_set.reference_issues(seen))
            self._policy_set = policy_set
        for alias, target in self.aliases.items():
            if target.startswith("tollgate/"):
                pname = target.removeprefix("tollgate/")
                if pname != AUTO_POLICY and pname not in self.policies:
                    issues.append(
                        (("aliases", alias), f"alias points to unknown policy {target!r}")
                    )
            elif target not in seen:
                issues.append((("aliases", alias), f"alias points to unknown backend {target!r}"))
            if alias in seen:
                issues.append((("aliases", alias), f"alias {alias!r} shadows a backend name"))
        issues.extend(self._judge_issues(seen))
        if issues:
            raise _LocErrors(issues)
        return self

    def _judge_issues(self, backends: set[str]) -> list[tuple[tuple[str | int, ...], str]]:
        judge = self.judge
        if judge is None:
            return []
        issues: list[tuple[tuple[str | int, ...], str]] = []
        if judge.backend not in backends:
            issues.append(
                (
                    ("judge", "backend"),
                    f"unknown backend {judge.backend!r}; backends: {', '.join(sorted(backends))}",
                )
            )
        for index, name in enumerate(judge.policies or ()):
            if name not in self.policies:
                known = ", ".join(sorted(self.policies)) or "none"
                issues.append(
                    (("judge", "policies", index), f"unknown policy {name!r}; policies: {known}")
                )
        return issues

    def backend(self, name: str) -> BackendConfig | None:
        for b in self.backends:
            if b.name == name:
                return b
        return None


class _LocErrors(ValueError):
    """Cross-reference errors raised inside a model validator, each with its path."""

    def __init__(self, issues: list[tuple[tuple[str | int, ...], str]]) -> None:
        super().__init__("; ".join(m for _, m in issues))
        self.issues = issues
