"""Fake OpenAI-compatible upstream LLM server (a vLLM/OpenAI stand-in) for tests and benchmarks.

This package owns the fake provider that Tollgate's README quickstart, integration tests and
``bench/`` talk to instead of a real LLM: a raw-ASGI app served by uvicorn (uvloop + httptools,
no access log), its run-time control API, its CLI, and the :class:`FakeUpstream` handle that
runs it in a subprocess. Modules: ``state`` (knobs, statistics), ``answers`` (the token rule),
``endpoints`` (chat, completions, embeddings), ``wire`` (JSON, errors, the SSE engine),
``asgi`` (routing, control API, failure injection), ``server`` (uvicorn, CLI), ``process``
(the subprocess handle).

Endpoints (OpenAI wire format)
    POST /v1/chat/completions   non-streaming and SSE streaming (``chat.completion.chunk``)
    POST /v1/completions        text completions, streaming too (``text_completion``)
    POST /v1/embeddings         deterministic unit vectors (``encoding_format`` float|base64)
    GET  /v1/models, GET /v1/models/{id}
    POST /_control/config       partial update of the behaviour (see ``DEFAULT_CONFIG``)
    GET  /_control/config       the current behaviour
    POST /_control/reset        start-up behaviour back and statistics cleared
    GET  /_control/stats        counters and the last ``history_size`` requests
    GET  /_control/health       readiness probe (never counted, never failed)

Token rule (so that every count is exactly predictable)
    A *token* is a whitespace-separated word: ``len(text.split())``.
    * prompt_tokens (chat) = words across the ``content`` of every message (string content, or
      the ``text`` parts of a content list); tool-call arguments and names are not counted.
    * prompt_tokens (completions, embeddings) = words of each input string, or the length of
      each token-id list, summed over all inputs.
    * The natural answer to a prompt is ``"Echo: <last user message>"`` as words, padded with
      ``t3 t4 ...`` (``t<position>``) or trimmed to exactly ``completion_tokens`` words
      (finish_reason ``stop``). ``max_tokens`` / ``max_completion_tokens`` below that truncates
      it (finish_reason ``length``); a ``stop`` string cuts the text before its first occurrence
      (finish_reason ``stop``). With ``response_format`` json_object/json_schema the text is
      wrapped as ``{"answer":"<text>"}`` (no added spaces, so the word count is unchanged).
    * A tool call (request has ``tools``, ``tool_choice`` is not "none" and the last user
      message contains "call tool", case-insensitive) answers with one call of the first tool
      (or the function named by ``tool_choice``); arguments are JSON built from the tool's
      ``parameters.properties`` (string -> "<name>-value", integer -> 42, number -> 4.2,
      boolean -> true, array -> [], object -> {}, enum -> first value); its completion tokens
      = 1 + words of the arguments string; finish_reason ``tool_calls``.
    * completion_tokens = sum over all choices (``n`` per prompt); total = prompt + completion.
      Streaming sends one content chunk per token and reports the same usage as the
      non-streaming answer to the same request.

Timing: the first token comes after ``latency_ms``, each further token ``token_interval_ms``
later; a non-streaming answer is sent after the same total time.

Streaming: first chunk carries ``delta.role``; then one chunk per token; then a chunk with the
finish_reason; then, only when ``stream_options.include_usage`` is true (and ``omit_usage`` is
off), a chunk with ``choices: []`` and ``usage``; then ``data: [DONE]``. A client that closes
the connection mid-stream is detected (a task waits on ``http.disconnect``) and counted in
``streams_aborted``.

Failure injection (``fail_next``, ``fail_rate``, ``hang``) applies to the three POST
``/v1/...`` endpoints only, never to ``/v1/models`` or ``/_control``. Errors are OpenAI-shaped
``{"error": {"message", "type", "param", "code"}}``; 429 carries ``retry-after``.

Model overrides: ``models: {"<request model>": {<any key of MODEL_KEYS>}}`` replaces those
keys for requests naming that model; a model override's own ``fail_next`` queue is used
instead of the global one.

Run: ``tollgate fake-upstream --port 8000 --latency-ms 20`` (or
``python -m gateway.devtools.fake_upstream`` with the same flags).
Only one process serves (stats live in memory), so do not run it with several workers.
"""

from gateway.devtools.fake_upstream.answers import prompt_tokens_of, words
from gateway.devtools.fake_upstream.asgi import FakeUpstreamApp, create_app
from gateway.devtools.fake_upstream.process import FakeUpstream
from gateway.devtools.fake_upstream.server import free_port, main, serve
from gateway.devtools.fake_upstream.state import DEFAULT_CONFIG, MODEL_KEYS, merge_config

__all__ = [
    "DEFAULT_CONFIG",
    "MODEL_KEYS",
    "FakeUpstream",
    "FakeUpstreamApp",
    "create_app",
    "free_port",
    "main",
    "merge_config",
    "prompt_tokens_of",
    "serve",
    "words",
]
