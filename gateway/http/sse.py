"""The HTTP side of a streamed answer: ``SSEResponse`` sends the pipeline's SSE bytes and
watches for the client going away, even while the relay waits on the upstream; then it
cancels the relay, which closes the upstream connection and still runs the request's finish
step (recording, budget settling)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class SSEResponse(StreamingResponse):
    """A streaming response that notices a client disconnect even while waiting upstream."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], headers: dict[str, str]) -> None:
        super().__init__(content, status_code=200, headers=headers)
        self.headers["cache-control"] = "no-cache"
        self.headers["x-accel-buffering"] = "no"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gen = self.body_iterator
        try:
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(watch_disconnect)
                try:
                    # OSError: the client is gone; the relay's finally records what was used
                    with contextlib.suppress(OSError):
                        # Start the relay before anything can fail: once started, closing it
                        # always runs its accounting (recording, settling, upstream close).
                        iterator = gen.__aiter__()
                        first = await iterator.__anext__()
                        await send(
                            {
                                "type": "http.response.start",
                                "status": self.status_code,
                                "headers": self.raw_headers,
                            }
                        )
                        await send({"type": "http.response.body", "body": first, "more_body": True})
                        async for chunk in iterator:
                            await send(
                                {"type": "http.response.body", "body": chunk, "more_body": True}
                            )
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(gen, "aclose", None)
                if aclose is not None:
                    await aclose()
