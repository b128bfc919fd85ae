"""Request bodies the gateway accepts (OpenAI's shapes), validated just enough to fail early.

Unknown fields are allowed and passed through to the backend untouched; the fields below are
checked so that a malformed request gets a clear 400 before any backend is called.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.serve.request import MAX_OUTPUT_TOKENS

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(Loose):
    role: Role
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(Loose):
    include_usage: bool | None = None


class ChatCompletionRequest(Loose):
    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    n: int | None = Field(default=None, ge=1, le=128)
    stop: str | list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None


class CompletionRequest(Loose):
    model: str = Field(min_length=1, max_length=256)
    prompt: str | list[str]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    n: int | None = Field(default=None, ge=1, le=128)
    stop: str | list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    metadata: dict[str, Any] | None = None


class EmbeddingRequest(Loose):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


MAX_RATE = 2_000_000_000  # the store's INTEGER columns


class LimitsFields(BaseModel):
    """Rate limits and model access of a key or tenant (null: no limit)."""

    model_config = ConfigDict(extra="forbid")
    rpm: int | None = Field(default=None, ge=1, le=MAX_RATE, description="requests per minute")
    tpm: int | None = Field(default=None, ge=1, le=MAX_RATE, description="tokens per minute")
    allowed_backends: list[str] | None = Field(default=None, description="null: every backend")
    allowed_policies: list[str] | None = Field(default=None, description="null: every policy")


class CreateKeyRequest(LimitsFields):
    tenant: str = Field(min_length=1, max_length=128)
    name: str | None = Field(default=None, max_length=128)
    max_budget_usd: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False)
    budget_window: Literal["total", "day", "month"] = "total"


class TenantLimitsRequest(LimitsFields):
    """``PUT /admin/tenants/{name}/limits``: the tenant's limits, replaced as a whole."""
