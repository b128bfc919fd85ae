"""``tollgate fake-upstream``: run the fake OpenAI-compatible LLM server
(``gateway.devtools.fake_upstream``) that the quickstart, the tests and the benchmarks use in
place of vLLM or a hosted provider. Registered in ``gateway.cli.main`` as a plain command."""

from __future__ import annotations

from typing import Annotated

import typer


def fake_upstream(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0 picks a free one)")] = 8000,
    latency_ms: Annotated[float | None, typer.Option(help="time to first token")] = None,
    token_interval_ms: Annotated[
        float | None, typer.Option(help="time between streamed tokens")
    ] = None,
    completion_tokens: Annotated[
        int | None, typer.Option(help="length of the natural answer, in words")
    ] = None,
    fail_rate: Annotated[
        float | None, typer.Option(help="probability of answering --fail-rate-status")
    ] = None,
    fail_rate_status: Annotated[int | None, typer.Option(help="status of those failures")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the failure RNG")] = None,
    omit_usage: Annotated[bool, typer.Option(help="never report token usage")] = False,
    embedding_dim: Annotated[int | None, typer.Option(help="embedding vector size")] = None,
    history_size: Annotated[
        int | None, typer.Option(help="recent requests kept for /_control/stats")
    ] = None,
    models: Annotated[
        str | None, typer.Option(help="comma-separated ids listed by GET /v1/models")
    ] = None,
    config_json: Annotated[
        str | None, typer.Option(help="the whole behaviour as JSON (the flags override it)")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
    keep_alive_s: Annotated[int, typer.Option(help="idle keep-alive timeout")] = 75,
) -> None:
    """Run a fake OpenAI-compatible LLM server (a vLLM stand-in for trying and testing) until
    interrupted; its control API is under /_control (config, stats, reset)."""
    from gateway.devtools.fake_upstream.server import serve, start_config

    flags = {
        "latency_ms": latency_ms,
        "token_interval_ms": token_interval_ms,
        "completion_tokens": completion_tokens,
        "fail_rate": fail_rate,
        "fail_rate_status": fail_rate_status,
        "seed": seed,
        "omit_usage": omit_usage or None,
        "embedding_dim": embedding_dim,
        "history_size": history_size,
    }
    try:
        config = start_config(config_json, models, flags)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    serve(host, port, config, log_level, keep_alive_s)
