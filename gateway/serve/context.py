"""One request in flight: who sent it, what it asked (read once), the config snapshot it
started with (and keeps to its end), its task, and the running total of its attempts; and the
clock of one attempt."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from gateway.auth import Principal
from gateway.config import BackendConfig
from gateway.serve.limits import RateHolds
from gateway.serve.request import ClientRequest
from gateway.snapshot import Snapshot
from gateway.store.keys import now

TASK_NAMESPACE = uuid.UUID("6f1f5f0e-8c7a-4d7e-9a55-0b1c7a3f2d10")


def task_uuid(tenant_id: str, external_id: str) -> str:
    """Internal task id: stable per (tenant, client task id), so no lookup is needed."""
    return uuid.uuid5(TASK_NAMESPACE, f"{tenant_id}\x00{external_id}").hex


@dataclass
class RequestContext:
    """One client request and the running total of its attempts."""

    principal: Principal
    request: ClientRequest
    snap: Snapshot
    policy: str | None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    task_ref: str = field(init=False)  # the client's task id, else the request id
    task_id: str = field(init=False)
    started_at: datetime = field(default_factory=now)
    total_cost: Decimal = Decimal(0)
    unpriced: bool = False
    attempts: int = 0
    last_attempt_id: str | None = None
    decision: dict[str, Any] | None = None  # the policy decision, stored with the 1st attempt
    #: Stored as a later attempt's ``decision``: why it was called (a cascade's check or
    #: escalation step, ``gateway.serve.cascade``)
    attempt_note: dict[str, Any] | None = None
    rejections: int = 0
    tokens: dict[str, int] = field(default_factory=dict)  # used, by backend (every attempt)
    rates: RateHolds = field(default_factory=RateHolds)  # its rate-window entries
    cache: Any = None  # gateway.serve.cache.CacheProbe: the response cache's part in it

    def __post_init__(self) -> None:
        self.task_ref = self.request.task_ref or self.request_id
        self.task_id = task_uuid(self.principal.tenant_id, self.task_ref)

    @property
    def endpoint(self) -> str:
        return self.request.endpoint

    @property
    def streamed(self) -> bool:
        return self.request.stream


@dataclass
class AttemptClock:
    """Timing and identity of one attempt in flight."""

    backend: BackendConfig
    number: int
    fallback_of: str | None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: datetime = field(default_factory=now)
    t0: float = field(default_factory=time.perf_counter)
    ttft_ms: float | None = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000
