"""The replay backend: an OpenAI-compatible server that answers with real recorded answers.

For a request to model ``M`` whose last user message is the prompt of a recorded query, it
returns what ``M`` actually answered to that query in the dataset (``../shared/data``):

* RouterBench (``routerbench/*.csv``): the model's recorded response, its recorded USD cost, and
  whether it was correct. Model names are the dataset's model ids (``gpt-4-1106-preview``,
  ``mistralai/mixtral-8x7b-chat``, …).
* AlpacaEval (``alpacaeval/model_outputs/*.json``): the model's recorded answer to the
  instruction. There is no recorded cost; usage is estimated as ``ceil(chars / 4)`` tokens.
  Model names are the file stems (``gpt-4o-2024-05-13``, …).

**How the recorded cost reaches the gateway.** The gateway prices every attempt from the
``usage`` a backend reports times the backend's configured per-token prices. RouterBench's
costs were computed from each provider's list prices (``REPLAY_PRICES`` below; recomputing
them from ``ceil(chars/4)`` tokens matches the recorded costs to within ±3% for 80% of rows).
So the usage reported here is: prompt tokens = ``ceil(chars(prompt) / 4)`` scaled by
(recorded cost ÷ estimated cost), and completion tokens chosen so that
``prompt * in_price + completion * out_price`` equals the recorded cost to within half an
output token. A gateway configured with ``REPLAY_PRICES`` therefore records each attempt at
its real recorded cost (±½ output token); every answer also carries the exact recorded cost
(``tollgate_replay.recorded_cost_usd``) so that this can be checked. Token counts are
estimates, not the providers' tokenizers — the cost is what is faithful.

Failure injection (``fail_rate``): a deterministic share of (model, prompt) pairs answers 503,
to show fallbacks and their cost in reports.

Unknown prompts get a 404 OpenAI error: the replay never invents an answer.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

#: USD per 1M (input, output) tokens: the list prices RouterBench's costs were computed from.
REPLAY_PRICES: dict[str, tuple[Decimal, Decimal]] = {
    "gpt-4-1106-preview": (Decimal(10), Decimal(30)),
    "gpt-3.5-turbo-1106": (Decimal(1), Decimal(2)),
    "claude-v2": (Decimal(8), Decimal(24)),
    "claude-v1": (Decimal(8), Decimal(24)),
    "claude-instant-v1": (Decimal("0.8"), Decimal("2.4")),
    "meta/llama-2-70b-chat": (Decimal("0.9"), Decimal("0.9")),
    "mistralai/mixtral-8x7b-chat": (Decimal("0.6"), Decimal("0.6")),
    "zero-one-ai/Yi-34B-Chat": (Decimal("0.8"), Decimal("0.8")),
    "WizardLM/WizardLM-13B-V1.2": (Decimal("0.3"), Decimal("0.3")),
    "meta/code-llama-instruct-34b-chat": (Decimal("0.776"), Decimal("0.776")),
    "mistralai/mistral-7b-chat": (Decimal("0.2"), Decimal("0.2")),
}
MILLION = Decimal(1_000_000)
ROUTERBENCH_FILES = ("arc_challenge", "mbpp", "winogrande")


def per_token(model: str) -> tuple[Decimal, Decimal] | None:
    """USD per token (input, output) of a RouterBench model."""
    price = REPLAY_PRICES.get(model)
    return None if price is None else (price[0] / MILLION, price[1] / MILLION)


@dataclass(frozen=True)
class Recorded:
    """One model's recorded answer to one query."""

    query_id: str
    model: str
    response: str
    cost_usd: Decimal | None  # None: not recorded (AlpacaEval)
    correct: bool | None  # None: no 0/1 correctness recorded


@dataclass
class ReplayBook:
    """Recorded queries (prompt text → query id) and answers ((query id, model) → answer)."""

    prompts: dict[str, str] = field(default_factory=dict)  # query id -> prompt
    by_prompt: dict[str, str] = field(default_factory=dict)  # normalised prompt -> query id
    answers: dict[tuple[str, str], Recorded] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)  # query id -> sub-dataset

    @property
    def models(self) -> list[str]:
        return sorted({m for _, m in self.answers})

    def add_query(self, query_id: str, prompt: str, group: str) -> None:
        self.prompts[query_id] = prompt
        self.by_prompt.setdefault(normalise(prompt), query_id)
        self.groups[query_id] = group

    def lookup(self, model: str, prompt: str) -> Recorded | None:
        qid = self.by_prompt.get(normalise(prompt))
        return None if qid is None else self.answers.get((qid, model))


def normalise(text: str) -> str:
    return " ".join(text.split())


def _literal_text(raw: Any) -> str:
    """RouterBench stores prompts and responses as Python-literal lists of strings."""
    if not isinstance(raw, str):
        return "" if raw is None or (isinstance(raw, float) and math.isnan(raw)) else str(raw)
    try:
        parts = ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return raw
    if isinstance(parts, list | tuple):
        return "\n\n".join(str(p) for p in parts)
    return str(parts)


def load_routerbench(
    data_dir: str | Path, files: Sequence[str] = ROUTERBENCH_FILES, book: ReplayBook | None = None
) -> ReplayBook:
    import pandas as pd

    book = book or ReplayBook()
    root = Path(data_dir) / "routerbench"
    for name in files:
        df = pd.read_csv(root / f"{name}.csv")
        models = [c.split("|", 1)[0] for c in df.columns if c.endswith("|total_cost")]
        cols = {c: i for i, c in enumerate(df.columns)}
        for tup in df.itertuples(index=False, name=None):
            qid = str(tup[cols["sample_id"]])
            if qid in book.prompts:
                continue
            book.add_query(qid, _literal_text(tup[cols["prompt"]]), str(tup[cols["eval_name"]]))
            for m in models:
                cost = tup[cols[f"{m}|total_cost"]]
                correct = tup[cols[m]]
                book.answers[(qid, m)] = Recorded(
                    query_id=qid,
                    model=m,
                    response=_literal_text(tup[cols[f"{m}|model_response"]]),
                    cost_usd=None if cost != cost else Decimal(str(cost)),
                    correct=None if correct != correct else bool(correct >= 0.5),
                )
    return book


def load_alpacaeval(
    data_dir: str | Path, models: Sequence[str] | None = None, book: ReplayBook | None = None
) -> ReplayBook:
    """AlpacaEval answers (no cost, no 0/1 correctness): model = the output file's stem."""
    book = book or ReplayBook()
    root = Path(data_dir) / "alpacaeval" / "model_outputs"
    for path in sorted(root.glob("*.json")):
        if models is not None and path.stem not in models:
            continue
        for index, item in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            qid = f"alpacaeval.{index}"
            if qid not in book.prompts:
                book.add_query(qid, str(item["instruction"]), str(item.get("dataset", "")))
            book.answers[(qid, path.stem)] = Recorded(
                qid, path.stem, str(item["output"]), None, None
            )
    return book


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def replay_usage(prompt: str, rec: Recorded) -> tuple[int, int]:
    """(prompt, completion) tokens whose price at REPLAY_PRICES is the recorded cost (±½ token)."""
    p_est, c_est = estimate_tokens(prompt), estimate_tokens(rec.response)
    price = per_token(rec.model)
    if rec.cost_usd is None or price is None:
        return p_est, c_est
    p_in, p_out = price
    estimated = p_in * p_est + p_out * c_est
    scale = rec.cost_usd / estimated if estimated else Decimal(1)
    prompt_tokens = int((p_est * scale).to_integral_value(ROUND_HALF_UP))
    prompt_tokens = min(prompt_tokens, int(rec.cost_usd / p_in)) if p_in else prompt_tokens
    completion = ((rec.cost_usd - p_in * prompt_tokens) / p_out).to_integral_value(ROUND_HALF_UP)
    return max(prompt_tokens, 0), max(int(completion), 0)


def _fails(model: str, prompt: str, rate: float) -> bool:
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"{model}\x00{normalise(prompt)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def _error(status: int, message: str, code: str) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}, status
    )


def _prompt_of(body: dict[str, Any]) -> str:
    if "messages" in body:
        for message in reversed(body.get("messages") or []):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):
                    return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
                return str(content or "")
        return ""
    return str(body.get("prompt") or "")


def create_replay_app(
    book: ReplayBook, *, fail_rate: float = 0.0, fail_models: Sequence[str] = ()
) -> Starlette:
    """The replay server. ``fail_rate`` applies to ``fail_models`` (all models when empty)."""
    stats: dict[str, int] = {"answered": 0, "failed": 0, "unknown": 0}

    async def chat(request: Request) -> Response:
        body = await request.json()
        model = str(body.get("model", ""))
        prompt = _prompt_of(body)
        if not any(m == model for m in book.models):
            return _error(404, f"the replay has no recorded model {model!r}", "model_not_found")
        if (not fail_models or model in fail_models) and _fails(model, prompt, fail_rate):
            stats["failed"] += 1
            return _error(503, "injected failure (replay fail_rate)", "overloaded")
        rec = book.lookup(model, prompt)
        if rec is None:
            stats["unknown"] += 1
            return _error(404, "no recorded answer for this prompt and model", "not_recorded")
        stats["answered"] += 1
        pt, ct = replay_usage(prompt, rec)
        usage = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
        extra = {
            "query_id": rec.query_id,
            "recorded_cost_usd": str(rec.cost_usd) if rec.cost_usd is not None else None,
            "recorded_correct": rec.correct,
        }
        cid = "chatcmpl-replay-" + uuid.uuid4().hex[:12]
        created = int(time.time())
        if body.get("stream"):
            return StreamingResponse(
                _stream(cid, created, model, rec.response, usage, extra),
                media_type="text/event-stream",
            )
        return JSONResponse(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": rec.response},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
                "tollgate_replay": extra,
            }
        )

    async def models(request: Request) -> Response:
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "replay"} for m in book.models
        ]
        return JSONResponse({"object": "list", "data": data})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "queries": len(book.prompts), **stats})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )


async def _stream(
    cid: str, created: int, model: str, text: str, usage: dict[str, int], extra: dict[str, Any]
) -> AsyncIterator[bytes]:
    base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": usage, "tollgate_replay": extra},
    ]
    for chunk in chunks:
        yield f"data: {json.dumps(chunk)}\n\n".encode()
    yield b"data: [DONE]\n\n"


class ThreadedServer:
    """Run an ASGI app with uvicorn in a background thread on 127.0.0.1 (for demos and tests)."""

    def __init__(self, app: Any, port: int = 0) -> None:
        import uvicorn

        self.port = port or free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, name=f"uvicorn-{self.port}", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @contextlib.contextmanager
    def running(self) -> Iterator[ThreadedServer]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
