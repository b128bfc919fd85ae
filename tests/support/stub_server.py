"""A stub HTTP server on a thread, what the tests' fake services are built on (the fake
Anthropic API, the OTLP receiver, a vLLM ``/metrics`` page, a scripted OpenAI upstream).

This module owns serving a ``http.server`` request handler on a free 127.0.0.1 port from a
daemon thread (one more thread per request), its address, and its shutdown; and the handler
base that keeps the server's request log out of the test output and writes a whole answer.
What a stub answers is its handler's business.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing."""

    def log_message(self, *args: Any) -> None:
        return

    def send_body(self, status: int, content_type: str, body: bytes) -> None:
        """A whole answer: status, content type and length, body."""
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class StubServer:
    """``handler`` served on 127.0.0.1 once ``start()`` is called (or on ``with``); ``close()``
    shuts it down and frees the port."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
