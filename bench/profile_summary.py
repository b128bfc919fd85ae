"""Where the CPU of a profiled gateway goes, by package: a table over ``.prof`` files.

This module owns ``python -m bench.profile_summary``. It reads the cProfile stats files that
``bench/profile_pinned.py`` writes (``bench/out/profile_<mode>.prof``), sums each function's own
time by the package it lives in (a site-packages distribution, a ``gateway`` sub-package,
a standard-library module, or ``C`` for built-ins), and prints one column per file — a
before/after comparison is two files, each label given as ``LABEL=PATH``. Shares are of the
file's total own time; the requests each file served divide it into CPU ms per request when
``LABEL=PATH:REQUESTS`` names them.

    python -m bench.profile_summary before=old.prof:1500 after=bench/out/profile_pinned.prof:1600
"""

from __future__ import annotations

import argparse
import pstats
from collections import Counter


def package_of(filename: str) -> str:
    """The bucket a function's own time is counted in."""
    if filename == "~" or filename.startswith("<built-in"):
        return "C built-ins"
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    for top in ("gateway/", "policies/", "predictors/", "bench/"):
        if f"/{top}" in filename:
            rest = filename.rsplit(f"/{top}", 1)[1].split("/")
            name = top.rstrip("/")
            return f"{name}/{rest[0].removesuffix('.py')}" if len(rest) > 1 else name
    if "/lib/python3" in filename:
        module = filename.split("/lib/python3", 1)[1].split("/", 2)[1]
        return "stdlib " + module.removesuffix(".py")
    return filename


def own_time_by_package(path: str) -> Counter[str]:
    stats = pstats.Stats(path)
    out: Counter[str] = Counter()
    for (filename, _line, _name), row in stats.stats.items():  # type: ignore[attr-defined]
        out[package_of(filename)] += row[2]  # tottime: the function's own time
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="LABEL=PATH or LABEL=PATH:REQUESTS")
    ap.add_argument("--top", type=int, default=20, help="rows (by the first file's time)")
    args = ap.parse_args(argv)
    columns = []
    for spec in args.files:
        label, _, rest = spec.partition("=")
        path, _, requests = rest.partition(":")
        columns.append((label, own_time_by_package(path), int(requests) if requests else None))
    order = [k for k, _ in (columns[0][1] + Counter()).most_common()]
    for _, table, _ in columns[1:]:
        order += [k for k in table if k not in order]
    head = f"{'package':<28}" + "".join(
        f"{label + (' ms/req' if n else ' s'):>16} {'share':>6}" for label, _, n in columns
    )
    print(head)
    print("-" * len(head))
    for key in order[: args.top]:
        line = f"{key:<28}"
        for _, table, n in columns:
            total = sum(table.values())
            value = table.get(key, 0.0)
            shown = value * 1000 / n if n else value
            line += f"{shown:>16.3f} {100 * value / total if total else 0:>5.1f}%"
        print(line)
    line = f"{'total (profiler included)':<28}"
    for _, table, n in columns:
        total = sum(table.values())
        line += f"{(total * 1000 / n if n else total):>16.3f} {100.0:>5.1f}%"
    print(line)


if __name__ == "__main__":
    main()
