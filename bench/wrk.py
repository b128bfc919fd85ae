"""``wrk`` as the benchmarks' load generator: one chat request, closed loop, N connections.

This module owns running ``wrk`` (the C HTTP benchmark, ``apt-get install wrk``) against an
OpenAI-compatible ``/v1/chat/completions`` and reading its results back: a generated Lua script
sets the request (POST, JSON body, bearer key), optionally writes the
``x-tollgate-request-id`` of every 200 answer to one file per wrk thread (for checking the
store), and prints its summary as one JSON line (exact p50/p90/p99 from wrk's HdrHistogram,
requests, socket errors, non-2xx answers). wrk keeps every connection busy (closed loop), so its
requests/s is the most a target sustains at that concurrency; it takes far less CPU per request
than a Python generator, which matters on a 2-core machine shared with the servers under test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PROMPT = "Summarise in one line: the quick brown fox jumps over the lazy dog."

_SCRIPT = r"""
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
if "%(key)s" ~= "" then wrk.headers["Authorization"] = "Bearer %(key)s" end
local ids_prefix = "%(ids_prefix)s"
local f = nil
function init(args)
  if ids_prefix ~= "" then
    f = io.open(ids_prefix .. tostring(tid) .. ".txt", "w")
    f:setvbuf("line")
  end
end
function response(status, headers, body)
  if f ~= nil and status == 200 then
    local rid = headers["x-tollgate-request-id"]
    if rid ~= nil then f:write(rid, "\n") end
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"mean_us":%%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    non_2xx: int
    socket_errors: dict[str, int] = field(default_factory=dict)
    request_ids: list[str] = field(default_factory=list)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def chat_body(model: str, *, stream: bool = False, max_tokens: int | None = None) -> str:
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body)


def run_wrk(
    url: str,
    model: str,
    *,
    connections: int,
    duration_s: float,
    key: str = "",
    collect_ids: bool = False,
    stream: bool = False,
    timeout_s: float = 10.0,
    threads: int = 1,
) -> WrkResult:
    """Run wrk for ``duration_s`` against ``url`` and return what it measured (no ``key``:
    no authorization header, for a gateway's anonymous tenant on loopback)."""
    with tempfile.TemporaryDirectory(prefix="tollgate-wrk-") as tmp:
        prefix = f"{tmp}/ids-" if collect_ids else ""
        script = Path(tmp) / "chat.lua"
        script.write_text(
            _SCRIPT % {"body": chat_body(model, stream=stream), "key": key, "ids_prefix": prefix}
        )
        cmd = [
            "wrk",
            f"-t{max(1, min(threads, connections))}",
            f"-c{connections}",
            f"-d{max(1, round(duration_s))}s",
            f"--timeout={max(1, round(timeout_s))}s",
            "-s",
            str(script),
            url,
        ]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration_s + timeout_s + 30
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
        data = json.loads(line.removeprefix("WRK_JSON "))
        ids: list[str] = []
        if collect_ids:
            for path in sorted(Path(tmp).glob("ids-*.txt")):
                ids.extend(x for x in path.read_text().split() if x)
    duration = data["duration_us"] / 1e6
    return WrkResult(
        requests=data["requests"],
        duration_s=duration,
        rps=data["requests"] / duration if duration else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        mean_ms=data["mean_us"] / 1000,
        non_2xx=data["status"],
        socket_errors={k: data[k] for k in ("connect", "read", "write", "timeout") if data.get(k)},
        request_ids=ids,
    )
