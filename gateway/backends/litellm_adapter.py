"""The backend adapter: calling backends through litellm.

Implements ``gateway.backends.upstream.BackendCaller`` on top of litellm, so any litellm provider
and any OpenAI-compatible self-hosted server (vLLM, SGLang, llama.cpp) can be a backend. Retries
and fallbacks are *not* delegated to litellm (``max_retries=0``): the gateway runs them itself
so that every attempt is priced and recorded. litellm's remote cost-map fetch is disabled:
prices come from the cost map bundled with the pinned litellm version (the package sets
``LITELLM_LOCAL_MODEL_COST_MAP`` before litellm loads: ``gateway.backends``). What a failed call
means (a classified ``UpstreamFailure``, or an ``InternalError`` for a bug) is decided in
``gateway.backends.litellm_errors``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import litellm

from gateway.backends.litellm_errors import classify
from gateway.config import BackendConfig

litellm.telemetry = False
litellm.suppress_debug_info = True
litellm.drop_params = False
litellm.set_verbose = False

# Keys the gateway consumes itself and never forwards upstream.
_GATEWAY_KEYS = frozenset({"model", "stream", "stream_options", "metadata"})
_NO_KEY = "sk-no-key-required"


def _call_kwargs(backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {k: v for k, v in body.items() if k not in _GATEWAY_KEYS}
    kwargs.update(backend.params)
    kwargs["model"] = backend.model
    if backend.api_base:
        kwargs["api_base"] = backend.api_base
    if backend.api_version:
        kwargs["api_version"] = backend.api_version
    key = backend.api_key.value() if backend.api_key else None
    kwargs["api_key"] = key or (_NO_KEY if backend.is_local or backend.api_key is None else None)
    kwargs["timeout"] = backend.timeout_s
    kwargs["max_retries"] = 0
    return kwargs


def _openai_shape(resp: dict[str, Any]) -> dict[str, Any]:
    """Drop litellm's own bookkeeping fields so clients get the provider's OpenAI shape."""
    resp.pop("provider_specific_fields", None)
    for choice in resp.get("choices") or []:
        choice.pop("provider_specific_fields", None)
        for part in ("message", "delta"):
            inner = choice.get(part)
            if isinstance(inner, dict):
                inner.pop("provider_specific_fields", None)
    return resp


async def _stream(
    fn: Any, backend: BackendConfig, body: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    """Open a litellm stream (always asking for usage) and yield OpenAI-shaped chunk dicts;
    closing this generator closes the upstream connection."""
    kwargs = _call_kwargs(backend, body)
    kwargs["stream"] = True
    kwargs["stream_options"] = {"include_usage": True}
    try:
        stream = await fn(**kwargs)
    except Exception as exc:
        raise classify(exc) from exc
    try:
        async for chunk in stream:
            yield _openai_shape(chunk.model_dump(exclude_none=True))
    except Exception as exc:
        raise classify(exc) from exc
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


class LiteLLMCaller:
    """BackendCaller over litellm's async API."""

    async def chat(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = await litellm.acompletion(**_call_kwargs(backend, body))
        except Exception as exc:
            raise classify(exc) from exc
        return _openai_shape(resp.model_dump())

    def chat_stream(
        self, backend: BackendConfig, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        return _stream(litellm.acompletion, backend, body)

    async def completion(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = await litellm.atext_completion(**_call_kwargs(backend, body))
        except Exception as exc:
            raise classify(exc) from exc
        return resp.model_dump()

    def completion_stream(
        self, backend: BackendConfig, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        return _stream(litellm.atext_completion, backend, body)

    async def embedding(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]:
        kwargs = _call_kwargs(backend, body)
        kwargs.pop("max_retries", None)
        try:
            resp = await litellm.aembedding(**kwargs)
        except Exception as exc:
            raise classify(exc) from exc
        return resp.model_dump()

    def catalog_price(self, backend: BackendConfig) -> tuple[Decimal, Decimal] | None:
        try:
            info = litellm.get_model_info(backend.model)
        except Exception:
            return None
        inp, out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
        if inp is None or out is None:
            return None
        return Decimal(str(inp)), Decimal(str(out))

    def count_message_tokens(self, backend: BackendConfig, messages: list[Any]) -> int:
        try:
            return int(litellm.token_counter(model=backend.model, messages=messages))
        except Exception:
            return (
                sum(len(str(m.get("content") or "")) for m in messages if isinstance(m, dict)) // 4
            )

    def count_text_tokens(self, backend: BackendConfig, text: str) -> int:
        if not text:
            return 0
        try:
            return int(litellm.token_counter(model=backend.model, text=text))
        except Exception:
            return max(1, len(text) // 4)


USD_RESOLUTION = Decimal("1e-12")  # the cost map's float prices, without binary noise


def usage_cost(model: str, usage: dict[str, Any]) -> Decimal | None:
    """USD for one answer's reported usage, from litellm's bundled cost map: cached-input
    reads (``prompt_tokens_details.cached_tokens``), cache writes
    (``cache_creation_input_tokens``), reasoning tokens at their own price, and tiered
    (long-context) prices. None when the model is not in the map. Used by ``gateway.pricing``
    for catalog-priced backends (issue 15)."""
    try:
        reported = litellm.Usage(**usage)
        prompt, completion = litellm.cost_per_token(
            model=model,
            prompt_tokens=reported.prompt_tokens,
            completion_tokens=reported.completion_tokens,
            usage_object=reported,
        )
    except Exception:
        return None
    return (Decimal(str(prompt)) + Decimal(str(completion))).quantize(USD_RESOLUTION)
