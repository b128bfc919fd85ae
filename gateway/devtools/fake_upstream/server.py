"""Serving the fake upstream: uvicorn on a pre-bound socket (uvloop + httptools, no access
log), and its stand-alone command line (``python -m gateway.devtools.fake_upstream``; the
``tollgate fake-upstream`` command calls :func:`run` the same way)."""

from __future__ import annotations

import argparse
import json
import logging
import socket
from typing import Any

from gateway.devtools.fake_upstream.asgi import create_app
from gateway.devtools.fake_upstream.state import DEFAULT_CONFIG, RequestError, merge_config
from gateway.devtools.fake_upstream.wire import DropConnection

#: Start-up knobs that have a command-line flag of their own (the rest: ``--config-json``).
FLAG_KEYS = (
    "latency_ms",
    "token_interval_ms",
    "completion_tokens",
    "fail_rate",
    "fail_rate_status",
    "seed",
    "omit_usage",
    "embedding_dim",
    "history_size",
)


class _QuietDrop(logging.Filter):
    """Hide uvicorn's traceback for the deliberate connection drops."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DropConnection)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def serve(
    host: str,
    port: int,
    config: dict[str, Any] | None = None,
    log_level: str = "warning",
    keep_alive_s: int = 75,
) -> None:
    """Serve the fake in this process (blocking); prints ``FAKE_UPSTREAM_PORT=<port>`` once
    the socket is bound (port 0 picks a free one)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    print(f"FAKE_UPSTREAM_PORT={sock.getsockname()[1]}", flush=True)
    logging.getLogger("uvicorn.error").addFilter(_QuietDrop())
    uv_config = uvicorn.Config(
        create_app(config),
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level=log_level,
        backlog=2048,
        timeout_keep_alive=keep_alive_s,  # long: clients under test keep pooled connections
    )
    uvicorn.Server(uv_config).run(sockets=[sock])


def start_config(
    config_json: str | None, models: str | None, flags: dict[str, Any]
) -> dict[str, Any]:
    """The start-up behaviour from ``--config-json`` overridden by the given flags (None:
    not given); ValueError with the fake's message when it is invalid."""
    config: dict[str, Any] = json.loads(config_json) if config_json else {}
    config.update({k: v for k, v in flags.items() if v is not None})
    if models:
        config["model_ids"] = [m.strip() for m in models.split(",") if m.strip()]
    try:
        merge_config(DEFAULT_CONFIG, config)
    except RequestError as exc:
        raise ValueError(exc.message) from None
    return config


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m gateway.devtools.fake_upstream",
        description="A fake OpenAI-compatible LLM server (a vLLM/OpenAI stand-in) for tests, "
        "benchmarks and the quickstart; its behaviour is documented in "
        "gateway/devtools/fake_upstream/__init__.py.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--latency-ms", type=float)
    p.add_argument("--token-interval-ms", type=float)
    p.add_argument("--completion-tokens", type=int)
    p.add_argument("--fail-rate", type=float)
    p.add_argument("--fail-rate-status", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--omit-usage", action="store_true", default=None)
    p.add_argument("--embedding-dim", type=int)
    p.add_argument("--history-size", type=int)
    p.add_argument("--models", help="comma-separated ids listed by GET /v1/models")
    p.add_argument("--config-json", help="full behaviour as JSON (flags override it)")
    p.add_argument("--log-level", default="warning")
    p.add_argument("--keep-alive-s", type=int, default=75, help="idle keep-alive timeout")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    flags = {key: getattr(args, key) for key in FLAG_KEYS}
    try:
        config = start_config(args.config_json, args.models, flags)
    except ValueError as exc:
        raise SystemExit(f"fake_upstream: {exc}") from None
    serve(args.host, args.port, config, args.log_level, args.keep_alive_s)
