"""The ``cache:`` section of the config: the response cache's mode, lifetime, similarity and
bounds (the cache itself is ``gateway.serve.cache``; its storage is ``gateway.state``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.config.sections import Strict


class CacheConfig(Strict):
    """Response cache for ``/v1/chat/completions`` (docs/cache.md).

    ``exact``: an answer is reused for the same normalised request of the same tenant;
    ``semantic``: also for a request that differs only in its last user message when that
    message's predictor embedding is at least ``similarity`` (cosine) close to a cached one.
    """

    mode: Literal["off", "exact", "semantic"] = "off"
    ttl_s: float = Field(default=60.0, gt=0, le=30 * 86400, description="lifetime of an entry")
    similarity: float = Field(
        default=0.95, gt=0, le=1, description="semantic mode: least cosine similarity of a hit"
    )
    max_entry_bytes: int = Field(
        default=256 * 1024, ge=1024, le=16 * 1024 * 1024, description="larger answers: not kept"
    )
    semantic_entries: int = Field(
        default=256,
        ge=1,
        le=4096,
        description="semantic mode: the newest entries compared, per tenant and request shape",
    )
    lookup_timeout_ms: float = Field(
        default=250.0, gt=0, le=10_000, description="a slower cache lookup counts as a miss"
    )
