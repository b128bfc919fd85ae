"""``Runtime.close`` is bounded by ``server.shutdown_timeout_s``: a part that hangs is cancelled,
one that ignores its cancellation is abandoned, one that fails is logged; every other part still
closes. A cancelled predictor close kills its workers rather than leave them running."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.runtime import Runtime
from gateway.serve.predictor_client import PredictorClient

BOUND_S = 0.5


class Part:
    """A part of the runtime whose close returns, hangs, fails or ignores a cancellation."""

    def __init__(self, how: str = "ok", release: asyncio.Event | None = None) -> None:
        self.how = how
        self.release = release
        self.closed = False
        self.kind = "redis"

    async def close(self) -> None:
        if self.how == "hangs":
            await asyncio.Event().wait()
        elif self.how == "fails":
            raise ConnectionError("connection reset")
        elif self.how == "stubborn":  # swallows cancellations until the test releases it
            assert self.release is not None
            while not self.release.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await self.release.wait()
        self.closed = True

    dispose = aclose = close


def _runtime(**parts: Part) -> Runtime:
    everything: dict[str, Any] = {
        name: Part() for name in ("latency", "capacity", "predictor", "writer", "state")
    }
    everything.update(engine=Part(), caller=Part(), **parts)
    config = SimpleNamespace(server=SimpleNamespace(shutdown_timeout_s=BOUND_S))
    return Runtime(
        settings=None,  # type: ignore[arg-type]
        keys=None,  # type: ignore[arg-type]
        auth=None,  # type: ignore[arg-type]
        budgets=None,  # type: ignore[arg-type]
        metrics=None,  # type: ignore[arg-type]
        snapshot=SimpleNamespace(config=config),  # type: ignore[arg-type]
        **everything,
    )


def test_every_part_closes_within_the_bound_whatever_the_others_do(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tollgate.runtime")

    async def run() -> tuple[float, Runtime]:
        release = asyncio.Event()
        runtime = _runtime(
            latency=Part("stubborn", release),
            writer=Part("fails"),
            state=Part("hangs"),
        )
        started = time.monotonic()
        closing = asyncio.create_task(runtime.close())
        await asyncio.wait({closing}, timeout=BOUND_S + 2)  # a guard: fails, never hangs
        elapsed = time.monotonic() - started
        release.set()  # lets the abandoned close end before the loop does
        closing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await closing  # returned None long ago (the close never raises for a part)
        return elapsed, runtime

    elapsed, runtime = asyncio.run(run())
    assert elapsed < BOUND_S + 0.5, elapsed
    parts: Any = runtime
    assert parts.capacity.closed and parts.predictor.closed
    assert parts.engine.closed and parts.caller.closed  # although Redis's close hung
    logged = {r.getMessage(): r.exc_info for r in caplog.records}
    assert set(logged) == {
        "shutdown: latency window did not stop in time (server.shutdown_timeout_s); "
        "abandoned: it ignored the cancellation",
        "shutdown: closing record writer failed",
        "shutdown: shared state (redis) did not stop in time (server.shutdown_timeout_s); "
        "cancelled",
    }
    failed = logged["shutdown: closing record writer failed"]
    assert failed is not None and isinstance(failed[1], ConnectionError)


def test_a_quick_close_is_quick_and_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tollgate.runtime")
    runtime = _runtime()
    started = time.monotonic()
    asyncio.run(runtime.close())
    assert time.monotonic() - started < 0.2
    assert all(p.closed for p in vars(runtime).values() if isinstance(p, Part))
    assert not caplog.records


def test_a_cancelled_predictor_close_kills_its_workers() -> None:
    async def run() -> int | None:
        client = PredictorClient(workers=2)
        procs = []
        for worker in client._workers:  # workers that never exit on their own (no EOF read)
            worker.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "import time; time.sleep(60)", stdin=asyncio.subprocess.PIPE
            )
            procs.append(worker.proc)
        closing = asyncio.create_task(client.close())
        await asyncio.sleep(0.3)  # within the 5 s it would wait for them
        closing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await closing
        codes = [await asyncio.wait_for(p.wait(), 2) for p in procs]
        return max(codes)

    assert asyncio.run(run()) == -9
