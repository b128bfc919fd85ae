"""The fake upstream's model endpoints: chat completions, text completions and embeddings,
plain and streamed, answering by the rules of ``answers`` and recording token counts in the
process's ``FakeState``."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Iterator
from typing import Any

from gateway.devtools.fake_upstream.answers import (
    embedding_vector,
    last_user_text,
    n_of,
    pieces,
    prompt_tokens_of,
    shape_answer,
    tool_call_for,
    usage_of,
    wants_usage,
    words,
)
from gateway.devtools.fake_upstream.state import FakeState, RequestError
from gateway.devtools.fake_upstream.wire import (
    CONTROL,
    NEW_TOKEN,
    SAME_TOKEN,
    Receive,
    Send,
    send_json,
    sleep_ms,
    stream,
)


async def chat(
    state: FakeState,
    model: str,
    body: dict[str, Any],
    cfg: dict[str, Any],
    receive: Receive,
    send: Send,
) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty list", "messages")
    n = n_of(body)
    user = last_user_text(messages)
    prompt_tokens = prompt_tokens_of(messages)
    fmt = body.get("response_format")
    json_mode = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
    call = tool_call_for(body, user)
    if call is not None:
        text, finish = "", "tool_calls"
        per_choice = 1 + words(call["function"]["arguments"])
    else:
        text, finish = shape_answer(user, cfg, body, json_mode=json_mode)
        per_choice = words(text)
    completion_tokens = per_choice * n
    usage = usage_of(prompt_tokens, completion_tokens)
    state.stats["prompt_tokens"] += prompt_tokens
    state.stats["completion_tokens"] += completion_tokens
    rid = state.next_id("chatcmpl")
    created = int(time.time())
    if body.get("stream"):
        await _chat_stream(
            state, rid, created, model, n, text, finish, call, usage, body, cfg, receive, send
        )
        return
    await sleep_ms(cfg["latency_ms"] + cfg["token_interval_ms"] * max(0, per_choice - 1))
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if call is not None:
        message["content"] = None
        message["tool_calls"] = [call]
    payload: dict[str, Any] = {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
            for i in range(n)
        ],
    }
    if not cfg["omit_usage"]:
        payload["usage"] = usage
    await send_json(send, 200, payload)


async def _chat_stream(
    state: FakeState,
    rid: str,
    created: int,
    model: str,
    n: int,
    text: str,
    finish: str,
    call: dict[str, Any] | None,
    usage: dict[str, int],
    body: dict[str, Any],
    cfg: dict[str, Any],
    receive: Receive,
    send: Send,
) -> None:
    base = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_fake",
    }

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {**base, "choices": choices}

    def choice(i: int, delta: dict[str, Any], fin: str | None = None) -> dict[str, Any]:
        return {"index": i, "delta": delta, "logprobs": None, "finish_reason": fin}

    def events() -> Iterator[tuple[int, dict[str, Any]]]:
        yield (
            CONTROL,
            chunk([choice(i, {"role": "assistant", "content": ""}) for i in range(n)]),
        )
        if call is not None:
            head = {
                "index": 0,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            yield NEW_TOKEN, chunk([choice(i, {"tool_calls": [head]}) for i in range(n)])
            for piece in pieces(call["function"]["arguments"]):
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                yield NEW_TOKEN, chunk([choice(i, delta) for i in range(n)])
        else:
            for piece in pieces(text):
                for i in range(n):
                    yield (
                        (NEW_TOKEN if i == 0 else SAME_TOKEN),
                        chunk([choice(i, {"content": piece})]),
                    )
        yield CONTROL, chunk([choice(i, {}, finish) for i in range(n)])
        if wants_usage(body, cfg):
            yield CONTROL, {**base, "choices": [], "usage": usage}

    await stream(state, events(), cfg, receive, send)


async def completions(
    state: FakeState,
    model: str,
    body: dict[str, Any],
    cfg: dict[str, Any],
    receive: Receive,
    send: Send,
) -> None:
    prompt = body.get("prompt")
    prompts: list[Any]
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt:
        prompts = prompt
    else:
        raise RequestError(400, "prompt must be a string or a non-empty list", "prompt")
    n = n_of(body)
    texts: list[tuple[str, str]] = []
    prompt_tokens = 0
    for p in prompts:
        if isinstance(p, str):
            prompt_tokens += words(p)
            source = p
        elif isinstance(p, list):
            prompt_tokens += len(p)
            source = " ".join(str(t) for t in p)
        else:
            raise RequestError(400, "prompt items must be strings or token lists", "prompt")
        texts.append(shape_answer(source, cfg, body))
    choices = [(pi * n + j, t, f) for pi, (t, f) in enumerate(texts) for j in range(n)]
    completion_tokens = sum(words(t) for _, t, _ in choices)
    usage = usage_of(prompt_tokens, completion_tokens)
    state.stats["prompt_tokens"] += prompt_tokens
    state.stats["completion_tokens"] += completion_tokens
    rid = state.next_id("cmpl")
    created = int(time.time())
    base = {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_fake",
    }
    if body.get("stream"):

        def events() -> Iterator[tuple[int, dict[str, Any]]]:
            split = [(idx, pieces(t), f) for idx, t, f in choices]
            longest = max((len(p) for _, p, _ in split), default=0)
            for k in range(longest):
                kind = NEW_TOKEN
                for idx, ps, _ in split:
                    if k < len(ps):
                        yield (
                            kind,
                            {
                                **base,
                                "choices": [
                                    {
                                        "text": ps[k],
                                        "index": idx,
                                        "logprobs": None,
                                        "finish_reason": None,
                                    }
                                ],
                            },
                        )
                        kind = SAME_TOKEN
            for idx, _, fin in split:
                yield (
                    CONTROL,
                    {
                        **base,
                        "choices": [
                            {"text": "", "index": idx, "logprobs": None, "finish_reason": fin}
                        ],
                    },
                )
            if wants_usage(body, cfg):
                yield CONTROL, {**base, "choices": [], "usage": usage}

        await stream(state, events(), cfg, receive, send)
        return
    longest = max((words(t) for _, t, _ in choices), default=0)
    await sleep_ms(cfg["latency_ms"] + cfg["token_interval_ms"] * max(0, longest - 1))
    payload = {
        **base,
        "choices": [
            {"text": t, "index": idx, "logprobs": None, "finish_reason": f} for idx, t, f in choices
        ],
    }
    if not cfg["omit_usage"]:
        payload["usage"] = usage
    await send_json(send, 200, payload)


async def embeddings(
    state: FakeState, model: str, body: dict[str, Any], cfg: dict[str, Any], send: Send
) -> None:
    raw = body.get("input")
    inputs: list[Any]
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        inputs = [raw]
    elif isinstance(raw, list) and raw:
        inputs = raw
    else:
        raise RequestError(400, "input must be a string or a non-empty list", "input")
    dim = body.get("dimensions") or cfg["embedding_dim"]
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 65536:
        raise RequestError(400, "dimensions must be a positive integer", "dimensions")
    as_b64 = body.get("encoding_format") == "base64"
    data = []
    prompt_tokens = 0
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            prompt_tokens += words(item)
            key = item
        elif isinstance(item, list):
            prompt_tokens += len(item)
            key = json.dumps(item)
        else:
            raise RequestError(400, "input items must be strings or token lists", "input")
        vec = embedding_vector(key, dim)
        emb: Any = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode() if as_b64 else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    state.stats["prompt_tokens"] += prompt_tokens
    await sleep_ms(cfg["latency_ms"])
    payload: dict[str, Any] = {"object": "list", "data": data, "model": model}
    if not cfg["omit_usage"]:
        payload["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    await send_json(send, 200, payload)
