"""One predictor worker process as the gateway sees it: the process, the calls waiting on its
answers, the request frames not yet written to it, and reading its framed replies.

``gateway.serve.predictor_client`` starts and restarts these and sends each prompt to one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from predictors.service import Prediction
from predictors.serving import HEADER


class Failed(Exception):
    """A call the worker could not answer: ``status`` is a ``predictor_outcome`` status."""

    def __init__(self, status: str, detail: str = "") -> None:
        super().__init__(detail or status)
        self.status = status


class WorkerHandle:
    """One ``predictors.serving`` process and the calls waiting on it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        # answers: the prediction and when the worker sent it (its monotonic clock)
        self.pending: dict[int, asyncio.Future[tuple[Prediction, float]]] = {}
        self.hello: dict[str, Any] = {}
        self.reader: asyncio.Task[None] | None = None
        self._outbox: list[bytes] = []

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and bool(self.hello)

    def send(self, frame: bytes) -> None:
        """Write a request frame to the worker: at once when it has nothing else to do (it is
        waiting for work), else with every other frame of this event-loop turn in one write
        at the turn's end. Each pipe write wakes the worker, which runs at a higher priority
        than the gateway: under load, a write per prompt was the largest routed-only cost in
        the gateway's profile, and the worker scored one prompt per wake-up."""
        if len(self.pending) <= 1 and not self._outbox:
            self._write(frame)
            return
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(frame)

    def _flush(self) -> None:
        data, self._outbox = b"".join(self._outbox), []
        self._write(data)

    def _write(self, data: bytes) -> None:
        stdin = self.proc.stdin if self.proc is not None else None
        if data and stdin is not None and not stdin.is_closing():
            stdin.write(data)  # a dead worker's calls are failed by its reader

    def fail_all(self, status: str, detail: str) -> None:
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(Failed(status, detail))


async def read_frame(stream: asyncio.StreamReader) -> bytes | None:
    """One frame's body, or None at end of stream."""
    try:
        head = await stream.readexactly(HEADER.size)
        (n,) = HEADER.unpack(head)
        return await stream.readexactly(n)
    except asyncio.IncompleteReadError:
        return None
