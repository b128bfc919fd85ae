"""In-process test backends: a ``BackendCaller`` injected through ``create_app`` for service tests.

Tokens are whitespace-separated words (the same rule as the fake upstream,
``gateway.devtools.fake_upstream``). Behaviour per backend name is scripted: a queue of
failures to raise before answering, an answer length (or its exact text), whether usage is
reported, and a delay.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from gateway.backends.upstream import UpstreamFailure
from gateway.config import BackendConfig


def words(text: str) -> int:
    return len(text.split())


def prompt_words(messages: list[Any]) -> int:
    total = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            total += words(content)
        elif isinstance(content, list):
            total += sum(words(p.get("text", "")) for p in content if isinstance(p, dict))
    return total


@dataclass
class Script:
    fail: list[int] = field(default_factory=list)  # HTTP statuses to fail with, in order
    answer_tokens: int = 8
    report_usage: bool = True
    delay_s: float = 0.0
    token_delay_s: float = 0.0
    text: str | None = None  # answer with exactly this text (else answer_tokens words)


def failure_for(status: int) -> UpstreamFailure:
    if status == 599:
        return UpstreamFailure("timed out", status=408, error_type="timeout", retryable=True)
    if status == 598:  # what the litellm adapter makes of a context-window error
        return UpstreamFailure(
            "prompt too long", status=400, error_type="context_window_exceeded", retryable=False
        )
    retryable = status in (408, 429, 500, 502, 503, 504)
    return UpstreamFailure(
        f"fake upstream error {status}",
        status=status,
        error_type="rate_limited"
        if status == 429
        else ("server_error" if retryable else "bad_request"),
        retryable=retryable,
        client_fault=status in (400, 413, 422),
    )


class FakeCaller:
    """Deterministic BackendCaller; ``calls[backend]`` counts attempts per backend."""

    def __init__(self, scripts: dict[str, Script] | None = None) -> None:
        self.scripts: dict[str, Script] = defaultdict(Script, scripts or {})
        self.calls: dict[str, int] = defaultdict(int)
        self.streams_closed = 0
        self.bodies: dict[str, list[dict[str, Any]]] = defaultdict(list)  # chat bodies received

    def _answer(self, backend: BackendConfig, body: dict[str, Any]) -> str:
        if self.scripts[backend.name].text is not None:
            return str(self.scripts[backend.name].text)
        n = self.scripts[backend.name].answer_tokens
        if body.get("max_tokens"):
            n = min(n, int(body["max_tokens"]))
        return " ".join(f"w{i}" for i in range(n))

    async def _begin(self, backend: BackendConfig) -> Script:
        self.calls[backend.name] += 1
        script = self.scripts[backend.name]
        if script.delay_s:
            await asyncio.sleep(script.delay_s)
        if script.fail:
            raise failure_for(script.fail.pop(0))
        return script

    def _prompt_tokens(self, body: dict[str, Any]) -> int:
        if "messages" in body:
            return prompt_words(body["messages"])
        raw = body.get("prompt", body.get("input", ""))
        return sum(words(x) for x in raw) if isinstance(raw, list) else words(str(raw))

    async def chat(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies[backend.name].append(body)
        script = await self._begin(backend)
        text = self._answer(backend, body)
        resp: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": backend.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        }
        if script.report_usage:
            p, c = self._prompt_tokens(body), words(text)
            resp["usage"] = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
        return resp

    async def chat_stream(
        self, backend: BackendConfig, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        script = await self._begin(backend)
        text = self._answer(backend, body)
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": backend.model,
        }
        try:
            yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
            for i, word in enumerate(text.split()):
                if script.token_delay_s:
                    await asyncio.sleep(script.token_delay_s)
                yield {
                    **base,
                    "choices": [{"index": 0, "delta": {"content": (" " if i else "") + word}}],
                }
            yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            if script.report_usage:
                p, c = self._prompt_tokens(body), words(text)
                yield {
                    **base,
                    "choices": [],
                    "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
                }
        finally:
            self.streams_closed += 1

    async def completion(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]:
        resp = await self.chat(
            backend, {**body, "messages": [{"role": "user", "content": body.get("prompt", "")}]}
        )
        choice = resp["choices"][0]
        resp["object"] = "text_completion"
        resp["choices"] = [
            {"index": 0, "text": choice["message"]["content"], "finish_reason": "stop"}
        ]
        return resp

    def completion_stream(
        self, backend: BackendConfig, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        return self.chat_stream(backend, body)

    async def embedding(self, backend: BackendConfig, body: dict[str, Any]) -> dict[str, Any]:
        await self._begin(backend)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        p = self._prompt_tokens(body)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                for i, _ in enumerate(inputs)
            ],
            "model": backend.model,
            "usage": {"prompt_tokens": p, "total_tokens": p},
        }

    def catalog_price(self, backend: BackendConfig) -> tuple[Decimal, Decimal] | None:
        return None

    def count_message_tokens(self, backend: BackendConfig, messages: list[Any]) -> int:
        return prompt_words(messages)

    def count_text_tokens(self, backend: BackendConfig, text: str) -> int:
        return words(text)


@dataclass(frozen=True)
class FakePrediction:
    complexity: float
    p_success: dict[str, float]
    output_ratio: dict[str, float] = field(default_factory=dict)


class FakePredictor:
    """A predictor double: fixed P(success) (and answer-length ratios) per profile, optionally
    slow (to hit the timeout)."""

    version = "fake-predictor-1"

    def __init__(
        self,
        p_success: dict[str, float],
        delay_s: float = 0.0,
        output_ratio: dict[str, float] | None = None,
    ) -> None:
        self.p_success = p_success
        self.output_ratio = dict(output_ratio or {})
        self.delay_s = delay_s
        self.prompts: list[str] = []

    async def predict(self, prompt: str, timeout_s: float) -> FakePrediction | None:
        self.prompts.append(prompt)
        if self.delay_s > timeout_s:
            await asyncio.sleep(timeout_s)
            return None
        return FakePrediction(0.5, dict(self.p_success), dict(self.output_ratio))
