"""CLI start-up: how long each ``tollgate`` command takes to answer, and what it imports.

Each command runs in a fresh interpreter, ``--repeat`` times (median wall seconds), then once
more under ``python -X importtime`` to count the modules it imported and name the heavy
packages among them. The first row is a bare interpreter (``python -c pass``): the ratio column
is each command's median over it, measured in the same run.

The commands read a throw-away SQLite store (created with ``tollgate db upgrade`` before the
timings) and the tree's ``config.yaml``; ``route explain`` runs the shipped predictor. Byte code
is cached under a throw-away ``PYTHONPYCACHEPREFIX`` (filled by one untimed run of each command;
``PYTHONDONTWRITEBYTECODE`` is dropped), as an installed package has its ``.pyc`` files: without
it every run compiles the gateway's own modules from source, about 0.3 s on each command.

    .venv/bin/python bench/cli_startup.py                 # this tree, 3 runs per command
    .venv/bin/python bench/cli_startup.py --tree /tmp/old # another checkout, same interpreter
    .venv/bin/python bench/cli_startup.py --json bench/out/cli_startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRY = "import sys; sys.argv[0] = 'tollgate'; from gateway.cli.main import main; main()"
COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("--help", ("--help",)),
    ("config check", ("config", "check")),
    ("report spend", ("report", "spend")),
    ("keys list", ("keys", "list")),
    ("policy backtest --help", ("policy", "backtest", "--help")),
    ("route explain", ("route", "explain", "Prove that the square root of 2 is irrational.")),
)
HEAVY = (
    "litellm",
    "torch",
    "transformers",
    "sklearn",
    "onnxruntime",
    "pandas",
    "scipy",
    "alembic",
    "sqlalchemy",
    "fastapi",
    "openai",
)


def _argv(python: str, args: tuple[str, ...], importtime: bool = False) -> list[str]:
    if not args:
        return [python, "-c", "pass"]
    return [python, *(["-X", "importtime"] if importtime else []), "-c", ENTRY, *args]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(
    argv: list[str], tree: Path, env: dict[str, str], timeout: float
) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stderr) of one run; CPU time is less sensitive than wall
    time to other work on a shared machine."""
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(
        argv, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    elapsed = time.perf_counter() - start
    cpu = _children_cpu() - cpu
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[3:]) or 'python'} exited {done.returncode}:\n{done.stderr[-2000:]}"
        )
    return elapsed, cpu, done.stderr


def _imports(stderr: str) -> tuple[int, list[str]]:
    """(modules imported, heavy top-level packages among them) from ``-X importtime`` output."""
    names = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        name = line.rsplit("|", 1)[1].strip()
        if name != "imported package":  # the header line
            names.append(name)
    tops = {n.split(".")[0] for n in names}
    return len(names), [h for h in HEAVY if h in tops]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", type=Path, default=ROOT, help="checkout to measure (default: this)")
    ap.add_argument("--python", default=sys.executable, help="interpreter (default: this one)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per command (median)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    ap.add_argument("--only", help="comma-separated command labels to run")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    tree = args.tree.resolve()
    wanted = set(args.only.split(",")) if args.only else None
    with tempfile.TemporaryDirectory(prefix="tollgate-cli-bench-") as tmp:
        env = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            "PYTHONPYCACHEPREFIX": f"{tmp}/pycache",
            "PYTHONPATH": str(tree),
            "TOLLGATE_CONFIG": str(tree / "config.yaml"),
            "TOLLGATE_DATABASE_URL": f"sqlite:///{tmp}/bench.db",
            "COLUMNS": "120",
        }
        _run(_argv(args.python, ("db", "upgrade")), tree, env, args.timeout)
        for label, cmd in COMMANDS:  # fill the byte-code cache: the timed runs read it
            if wanted is None or label in wanted:
                _run(_argv(args.python, cmd), tree, env, args.timeout)
        rows = []
        for label, cmd in (("python -c pass", ()), *COMMANDS):
            if wanted is not None and cmd and label not in wanted:
                continue
            runs = [
                _run(_argv(args.python, cmd), tree, env, args.timeout) for _ in range(args.repeat)
            ]
            times = [r[0] for r in runs]
            _, _, stderr = _run(_argv(args.python, cmd, importtime=True), tree, env, args.timeout)
            count, heavy = _imports(stderr)
            rows.append(
                {
                    "command": label,
                    "median_s": statistics.median(times),
                    "runs_s": times,
                    "cpu_s": statistics.median(r[1] for r in runs),
                    "imports": count,
                    "heavy": heavy,
                }
            )
            print(f"  {label}: {rows[-1]['median_s']:.2f} s", file=sys.stderr, flush=True)
    base = rows[0]["median_s"]
    load = os.getloadavg()[0]
    print(
        f"tollgate CLI start-up, {tree}: median of {args.repeat} runs, byte code cached; x = wall "
        f"time over bare python in the same run; load average {load:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'command':<24} {'wall s':>7} {'cpu s':>6} {'x':>6} {'imports':>8}  heavy packages")
    for r in rows:
        ratio = r["median_s"] / base if base else float("nan")
        heavy = ", ".join(r["heavy"]) or "-"
        print(
            f"{r['command']:<24} {r['median_s']:>7.2f} {r['cpu_s']:>6.2f} {ratio:>6.1f} "
            f"{r['imports']:>8}  {heavy}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"tree": str(tree), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
