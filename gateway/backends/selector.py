"""Which path a backend's calls take: the OpenAI-compatible fast path or litellm.

``SelectingCaller`` is the production ``BackendCaller``. A backend goes to the plain-HTTP fast
path (``gateway.backends.openai_http``) when its wire format is already OpenAI's and nothing
needs translating: an ``openai/…`` or ``hosted_vllm/…`` model (vLLM, SGLang, llama.cpp's server,
OpenAI, any OpenAI-compatible base URL) with an ``api_base``, no ``api_version``, and ``params``
that are all OpenAI request-body parameters (plus ``extra_headers``/``extra_body``). Every
other backend — providers litellm translates for, or params only litellm understands — goes
through litellm. ``transport: litellm`` or ``openai_http`` in a backend's config overrides the
choice. Prices (the cost map) and token counting always come from litellm.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

# the litellm adapter first: it sets litellm's environment before anything imports litellm
from gateway.backends.litellm_adapter import LiteLLMCaller
from gateway.backends.openai_http import MODEL_PREFIXES, OpenAIHTTPCaller
from gateway.backends.upstream import BackendCaller
from gateway.config import BackendConfig

log = logging.getLogger("tollgate.backends")

# OpenAI request-body parameters (and the common vLLM/SGLang/llama.cpp sampling extras) that a
# backend's ``params`` may set and the fast path forwards in the body as they are
BODY_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "n",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "seed",
        "user",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning_effort",
        "service_tier",
        "store",
        "modalities",
        "prediction",
        "dimensions",
        "encoding_format",
        "top_k",
        "min_p",
        "repetition_penalty",
        "length_penalty",
        "min_tokens",
        "ignore_eos",
        "skip_special_tokens",
        "chat_template_kwargs",
        "guided_json",
        "guided_regex",
        "guided_choice",
        "guided_grammar",
        "extra_headers",
        "extra_body",
    }
)


def litellm_reason(backend: BackendConfig) -> str | None:
    """Why ``backend`` must go through litellm, or None when the fast path can serve it."""
    if backend.transport == "litellm":
        return "transport: litellm"
    if backend.transport == "openai_http":
        return None  # the operator's choice (the config requires an api_base for it)
    if not backend.model.startswith(MODEL_PREFIXES):
        return "the model needs litellm's provider translation"
    if not backend.api_base:
        return "no api_base"
    if backend.api_version:
        return "api_version is set"
    unknown = sorted(set(backend.params) - BODY_PARAMS)
    if unknown:
        return f"params only litellm understands: {', '.join(unknown)}"
    return None


class SelectingCaller:
    """BackendCaller that sends each backend to the fast path when it can, else to litellm."""

    def __init__(
        self, litellm: BackendCaller | None = None, fast: OpenAIHTTPCaller | None = None
    ) -> None:
        self.litellm: BackendCaller = litellm if litellm is not None else LiteLLMCaller()
        self.fast = fast if fast is not None else OpenAIHTTPCaller(self.litellm)
        self._told: set[tuple[str, str | None]] = set()

    def path(self, backend: BackendConfig) -> str:
        """``"openai_http"`` or ``"litellm"``: the path ``backend``'s calls take."""
        return "litellm" if litellm_reason(backend) is not None else "openai_http"

    def _for(self, backend: BackendConfig) -> BackendCaller:
        reason = litellm_reason(backend)
        seen = (backend.name, reason)
        if seen not in self._told:  # once per backend and choice (a reload may change it)
            self._told.add(seen)
            log.info(
                "backend %s: %s",
                backend.name,
                "OpenAI-compatible fast path" if reason is None else f"litellm ({reason})",
            )
        return self.litellm if reason is not None else self.fast

    async def chat(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]:
        return await self._for(backend).chat(backend, body)

    def chat_stream(
        self, backend: BackendConfig, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        return self._for(backend).chat_stream(backend, body)

    async def completion(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]:
        return await self._for(backend).completion(backend, body)

    def completion_stream(
        self, backend: BackendConfig, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        return self._for(backend).completion_stream(backend, body)

    async def embedding(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]:
        return await self._for(backend).embedding(backend, body)

    def catalog_price(self, backend: BackendConfig) -> tuple[Decimal, Decimal] | None:
        return self.litellm.catalog_price(backend)

    def count_message_tokens(self, backend: BackendConfig, messages: list[Any]) -> int:
        return self.litellm.count_message_tokens(backend, messages)

    def count_text_tokens(self, backend: BackendConfig, text: str) -> int:
        return self.litellm.count_text_tokens(backend, text)

    async def aclose(self) -> None:
        await self.fast.aclose()
