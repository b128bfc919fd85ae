"""The processes of the fault-injection suite, each started, killed and restarted by the suite
itself: a private PostgreSQL cluster (``initdb`` + ``pg_ctl`` as the postgres user), a private
``redis-server``, ``tollgate serve`` replicas (``bench.gateway_process``), and nginx in front
of them. Never the machine's shared servers. ``bench/faults.py`` drives them;
``tests/integration/test_faults.py`` asserts on what it measures.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench.gateway_process import GatewayProcess
from gateway.devtools.fake_upstream import free_port

ADMIN_KEY = "fault-suite-admin-7c41e9b2d05f"


def wait_for(check: Any, timeout_s: float, what: str, interval_s: float = 0.1) -> float:
    """Poll ``check()`` until it is true; returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        try:
            if check():
                return time.monotonic() - start
        except Exception:
            pass
        time.sleep(interval_s)
    raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _as_postgres(cmd: list[str]) -> list[str]:
    return cmd if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *cmd]


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for directory in versions:
        if (directory / name).exists():
            return str(directory / name)
    raise RuntimeError(f"PostgreSQL's {name} was not found")


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free port (trust auth), in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "pgdata"
        self.sock = workdir / "pgsock"
        self.log = workdir / "pg.log"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _chown(self, *paths: Path) -> None:
        if os.geteuid() == 0:
            for path in paths:
                shutil.chown(path, "postgres", "postgres")

    def init(self) -> PrivatePostgres:
        self.dir.mkdir(parents=True)
        self.sock.mkdir(parents=True)
        self.log.touch()
        self._chown(self.dir.parent, self.dir, self.sock, self.log)
        subprocess.run(
            _as_postgres(
                [_pg_bin("initdb"), "-D", str(self.dir), "--auth=trust", "-U", "postgres"]
            ),
            check=True,
            capture_output=True,
        )
        return self.start()

    def start(self) -> PrivatePostgres:
        opts = (
            f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200"
        )
        subprocess.run(
            _as_postgres(
                [
                    _pg_bin("pg_ctl"),
                    "-D",
                    str(self.dir),
                    "-l",
                    str(self.log),
                    "-o",
                    opts,
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        return self

    def stop(self) -> None:
        """``-m immediate``: the server is gone at once, as in a crash (connections dropped)."""
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.dir), "-m", "immediate", "stop"]),
            capture_output=True,
        )

    def query(self, sql: str, *args: Any) -> list[Any]:
        import asyncio

        import asyncpg

        async def run() -> list[Any]:
            conn = await asyncpg.connect(self.url.replace("postgresql://", "postgres://"))
            try:
                return list(await conn.fetch(sql, *args))
            finally:
                await conn.close()

        return asyncio.run(run())


class PrivateRedis:
    """A throw-away ``redis-server`` (no persistence) on a fixed free port, restartable."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._pong, 10, "the private redis-server")
        return self

    def _pong(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.3) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def kill(self) -> None:
        """kill -9: every key is gone, as after a crash of a cache without persistence."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: unreachable (time-outs) but keeps its data, like a network blip."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


class Replica(GatewayProcess):
    """One ``tollgate serve`` process of the suite, named, with the suite's admin key;
    ``kill()`` is ``kill -9``; ``start()`` again restarts it on the same port, config and spool
    (its journal is recovered at start-up)."""

    # not an Exception: a replica that exits at start-up stops the suite
    exited_error = SystemExit

    def __init__(self, name: str, config: dict[str, Any], workdir: Path, env: dict[str, str]):
        super().__init__(config, workdir, {**env, "TOLLGATE_ADMIN_KEY": ADMIN_KEY}, name=name)


class Nginx:
    """nginx (Debian's package) balancing over the replicas; a replica that refuses
    connections is skipped (``proxy_next_upstream error``: a request never sent to it)."""

    def __init__(self, workdir: Path, replicas: list[Replica]) -> None:
        self.dir = workdir / "nginx"
        self.port = free_port()
        self.replicas = replicas
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        self.dir.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(
            f"    server 127.0.0.1:{r.port} max_fails=1 fail_timeout=2s;" for r in self.replicas
        )
        conf = f"""
daemon off;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {self.dir}/body;
  proxy_temp_path {self.dir}/proxy;
  fastcgi_temp_path {self.dir}/fastcgi;
  uwsgi_temp_path {self.dir}/uwsgi;
  scgi_temp_path {self.dir}/scgi;
  upstream tollgate {{
{servers}
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{self.port};
    client_max_body_size 8m;
    location / {{
      proxy_pass http://tollgate;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 120s;
      proxy_next_upstream error;
    }}
  }}
}}
"""
        path = self.dir / "nginx.conf"
        path.write_text(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen(
            [nginx, "-c", str(path), "-p", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda: httpx.get(self.url + "/healthz", timeout=1).status_code == 200, 20, "nginx"
        )
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
