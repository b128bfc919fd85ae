"""A fake Anthropic Messages API for tests: a real HTTP server on 127.0.0.1 answering
``POST /v1/messages`` (plain, or Anthropic's event stream) with a fixed text and a usage report
that has prompt-cache reads and writes, and keeping every request (path, body, the headers an
upstream call sends) for assertions. What a backend ``anthropic/...`` with this ``api_base``
talks to through litellm."""

from __future__ import annotations

import json
from typing import Any

from tests.support.stub_server import QuietHandler, StubServer

TEXT = "Hello from the fake Claude"
USAGE = {
    "input_tokens": 100,
    "output_tokens": 20,
    "cache_creation_input_tokens": 1000,
    "cache_read_input_tokens": 3000,
}


def _events(model: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "message_start",
            "message": {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "usage": {**USAGE, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": TEXT}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": USAGE["output_tokens"]},
        },
        {"type": "message_stop"},
    ]


class FakeAnthropic(StubServer):
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
                fake.requests.append(
                    {"path": self.path, "body": body, "headers": dict(self.headers.items())}
                )
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.end_headers()
                    for event in _events(body["model"]):
                        data = json.dumps(event)
                        self.wfile.write(f"event: {event['type']}\ndata: {data}\n\n".encode())
                        self.wfile.flush()
                    return
                message = {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [{"type": "text", "text": TEXT}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": USAGE,
                }
                self.send_body(200, "application/json", json.dumps(message).encode())

        super().__init__(Handler)

    @property
    def base_url(self) -> str:
        return self.url
