"""A real gateway in a subprocess: ``tollgate serve`` on a free 127.0.0.1 port, for the benches
and the integration tests (``tests/support/harness.py`` hands it out; ``bench/fault_stack.py``'s
replicas are ones with a name and an admin key).

This module owns that process's life cycle: its config file and log in a work directory (also
its working directory, so a relative spool lands there), its start (ready once ``/healthz``
answers 200; a process that exits first is an error carrying its log's tail), a restart on the
same port, config and log, its graceful stop (SIGTERM, SIGKILL after 30 s) or ``kill -9``, and
its CLI (``tollgate <command> --config <its config>``). What runs around it (stores, Redis,
nginx, the load) belongs to the benches and the tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import httpx
import yaml

from gateway.devtools.fake_upstream import free_port

VENV_BIN = Path(sys.executable).parent


class GatewayProcess:
    """``tollgate serve`` in a subprocess, on a free port, with its own config file
    (``<workdir>/<name>.yaml``) and log (``<workdir>/<name>.log``, appended to across restarts);
    ``name`` defaults to ``gateway-<port>``, ``args`` are more ``tollgate serve`` options
    (``--workers 2``) and ``env`` is added to this process's environment."""

    #: What ``start()`` raises when the process exits before it is ready.
    exited_error: type[BaseException] = RuntimeError

    def __init__(
        self,
        config: dict[str, Any],
        workdir: Path,
        env: Mapping[str, str],
        args: Sequence[str] = (),
        *,
        name: str | None = None,
    ) -> None:
        self.args = tuple(args)
        self.port = free_port()
        self.name = name or f"gateway-{self.port}"
        self.workdir = workdir
        self.config_path = workdir / f"{self.name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.env = {**os.environ, **env}
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``tollgate <args> --config <its config>`` with its environment, in its work
        directory; the output is captured (text), the exit status is not checked."""
        return subprocess.run(
            [str(VENV_BIN / "tollgate"), *args, "--config", str(self.config_path)],
            env=self.env,
            capture_output=True,
            text=True,
            cwd=self.workdir,
            timeout=120,
        )

    def spawn(self) -> None:
        """Start the process without waiting for it (``wait_ready`` does): gateways spawned
        first and waited for next start up side by side."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(VENV_BIN / "tollgate"),
                    "serve",
                    "--config",
                    str(self.config_path),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *self.args,
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )

    def wait_ready(self, timeout_s: float = 180) -> None:
        """Until ``/healthz`` answers 200; stops the process and raises when it does not within
        ``timeout_s``, raises ``exited_error`` when the process exits first."""
        assert self.proc is not None, "spawn() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self.exited_error(f"{self.name} exited: {self.log_tail()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not start in {timeout_s:.0f} s: {self.log_tail()}")

    def start(self, timeout_s: float = 180) -> Self:
        """Start it (again, after a stop or a kill) and wait until it is ready."""
        self.spawn()
        self.wait_ready(timeout_s)
        return self

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text()[-chars:]

    def stop(self) -> None:
        """Graceful: SIGTERM, SIGKILL after 30 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """``kill -9``: no shutdown at all (its journal is recovered at the next start)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
