"""A handle on a fake upstream in its own process, for tests and benchmarks: start it on a
free port, wait until it answers, drive its control API, stop it. The child is
``python -m gateway.devtools.fake_upstream`` with the parent's environment."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from types import TracebackType
from typing import Any

import httpx

from gateway.devtools.fake_upstream.state import DEFAULT_CONFIG, merge_config


class FakeUpstream:
    """Run the fake upstream in a uvicorn subprocess for the duration of a ``with`` block.

    ``FakeUpstream(port=0, latency_ms=20)`` picks a free port (the child binds it, so there
    is no race); ``.base_url`` ends in ``/v1``; ``.configure(**kw)``, ``.stats()`` and
    ``.reset()`` talk to the control API.
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        startup_timeout_s: float = 15.0,
        **config: Any,
    ) -> None:
        merge_config(DEFAULT_CONFIG, config)  # fail fast on a bad key, in the parent
        self.host = host
        self.port = port
        self.config = config
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None
        self._client: httpx.Client | None = None

    @property
    def url(self) -> str:
        """Server root, e.g. ``http://127.0.0.1:12345``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI base URL, e.g. ``http://127.0.0.1:12345/v1``."""
        return f"{self.url}/v1"

    def start(self) -> FakeUpstream:
        if self.proc is not None:
            return self
        cmd = [
            sys.executable,
            "-m",
            "gateway.devtools.fake_upstream",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--config-json",
            json.dumps(self.config),
        ]
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
        )
        try:
            self.port = self._read_port()
            self._client = httpx.Client(base_url=self.url, timeout=10.0)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _failure(self, what: str) -> RuntimeError:
        err = b""
        if self._stderr is not None:
            self._stderr.seek(0)
            err = self._stderr.read()[-4000:]
        return RuntimeError(f"fake upstream {what}: {err.decode(errors='replace')}")

    def _read_port(self) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + self.startup_timeout_s
        buf = b""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self._failure(f"exited with {self.proc.returncode}")
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                data = os.read(self.proc.stdout.fileno(), 4096)
                buf += data
                match = re.search(rb"FAKE_UPSTREAM_PORT=(\d+)\n", buf)
                if match:
                    return int(match.group(1))
        raise self._failure("did not report its port in time")

    def _wait_ready(self) -> None:
        assert self._client is not None and self.proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self._failure(f"exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if self._client.get("/_control/health", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.02)
        raise self._failure("was not ready in time")

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _control(self) -> httpx.Client:
        if self._client is None:
            raise RuntimeError("FakeUpstream is not running")
        return self._client

    def configure(self, **kw: Any) -> dict[str, Any]:
        """Partially update the behaviour; returns the whole current config."""
        resp = self._control().post("/_control/config", json=kw)
        if resp.status_code != 200:
            raise ValueError(resp.json()["error"]["message"])
        return dict(resp.json())

    def config_now(self) -> dict[str, Any]:
        return dict(self._control().get("/_control/config").raise_for_status().json())

    def stats(self) -> dict[str, Any]:
        return dict(self._control().get("/_control/stats").raise_for_status().json())

    def reset(self, *, config: bool = True, stats: bool = True) -> None:
        """Back to the start-up behaviour (``config``) and zeroed statistics (``stats``)."""
        self._control().post("/_control/reset", json={"config": config, "stats": stats})

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
