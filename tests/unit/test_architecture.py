"""The architecture rules of docs/architecture.md, checked on every test run (issue 10).

* the import contracts in ``pyproject.toml`` (``[tool.importlinter]``: layers, purity of
  policies/predictors, no cycles, where fastapi, typer/rich, litellm and SQLAlchemy may be
  imported, bench and the product never importing tests), run by ``lint-imports``;
* ``os.environ`` is read only in ``gateway/settings.py`` (an AST scan: imports of it count);
* no product module is over 400 lines;
* ``bench/`` never imports ``tests`` (nor runs ``python -m tests...``).

Each rule has a list of what breaks it today, with the reason and who is on it. The lists only
shrink: an entry that no longer breaks its rule fails the test until it is removed, so the
rule becomes strict the moment the code allows it.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("gateway", "policies", "predictors", "migrations")
MAX_LINES = 400

#: Every contract of [tool.importlinter]; the test fails if one disappears from the config.
CONTRACTS = {
    "layers: gateway imports only go downward",
    "pure: policies and predictors import no gateway, I/O or CLI code",
    "acyclic: no import cycles among sibling modules",
    "migrations: the gateway never imports the migration scripts",
    "tests: bench and the product never import tests",
    "fastapi: only in gateway.http and gateway.app",
    "cli: typer and rich only in gateway.cli",
    "litellm: only in gateway.backends",
    "sql: sqlalchemy only in gateway.store, gateway.analytics, migrations",
}

#: Contracts broken today -> why, and who is fixing it. TODO(issue 10): empty this.
EXPECTED_BROKEN: dict[str, str] = {
    "acyclic: no import cycles among sibling modules": (
        "policies.objectives <-> policies.cascade (helper D's policies/ work in progress)"
    ),
}

#: Product modules over MAX_LINES -> why. TODO(issue 10): empty this.
LARGE_MODULES: dict[str, str] = {
    "policies/schema.py": "helper D: the policy schema is being split",
    "gateway/analytics/calibrate.py": "issue 12's calibration driver: sweep vs statistics",
}

_ENV_ATTRS = frozenset({"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"})
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _product_files() -> list[Path]:
    files: list[Path] = []
    for package in PRODUCT:
        files += [p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(files)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_import_contracts() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "COLUMNS": "500", "NO_COLOR": "1"}
    proc = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    output = _ANSI.sub("", proc.stdout + proc.stderr)
    status = dict(
        (m.group(1).strip(), m.group(2))
        for m in re.finditer(r"^(.+?)\s+(KEPT|BROKEN)\s*$", output, re.MULTILINE)
    )
    assert set(status) == CONTRACTS, f"contracts ran: {sorted(status)}\n{output[-3000:]}"
    broken = {name for name, state in status.items() if state == "BROKEN"}
    unexpected = broken - set(EXPECTED_BROKEN)
    assert not unexpected, f"import contracts broken: {sorted(unexpected)}\n{output}"
    holding = set(EXPECTED_BROKEN) - broken
    assert not holding, (
        f"these contracts hold now: delete them from EXPECTED_BROKEN: {sorted(holding)}"
    )
    assert proc.returncode == (1 if broken else 0), output


def _environ_uses(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    os_names = {"os"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            os_names |= {a.asname or a.name for a in node.names if a.name == "os"}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(a.name in _ENV_ATTRS for a in node.names):
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in _ENV_ATTRS
            and isinstance(node.value, ast.Name)
            and node.value.id in os_names
        ):
            lines.append(node.lineno)
    return lines


def test_os_environ_is_read_only_in_settings() -> None:
    readers = {_rel(p): lines for p in _product_files() if (lines := _environ_uses(p))}
    assert "gateway/settings.py" in readers, "the scan found no use in settings.py: check it"
    del readers["gateway/settings.py"]
    assert not readers, (
        "os.environ is read only in gateway/settings.py; use its functions instead "
        f"(file: lines): {readers}"
    )


def test_product_modules_stay_under_400_lines() -> None:
    sizes = {_rel(p): len(p.read_text(encoding="utf-8").splitlines()) for p in _product_files()}
    large = {path: n for path, n in sizes.items() if n > MAX_LINES}
    unexpected = {path: n for path, n in large.items() if path not in LARGE_MODULES}
    assert not unexpected, f"product modules over {MAX_LINES} lines: {unexpected}"
    small = sorted(set(LARGE_MODULES) - set(large))
    assert not small, f"now under {MAX_LINES} lines: delete them from LARGE_MODULES: {small}"


def _imports_tests(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # `python -m tests.x` in a subprocess command is an import too
            if re.fullmatch(r"tests(\.[A-Za-z_]\w*)+", node.value):
                names = [node.value]
        found += [f"{n} (line {node.lineno})" for n in names if n.split(".")[0] == "tests"]
    return found


def test_bench_and_the_product_never_import_tests() -> None:
    files = sorted((ROOT / "bench").rglob("*.py")) + _product_files()
    offenders = {_rel(p): hits for p in files if (hits := _imports_tests(p))}
    assert not offenders, f"bench/ and the product must not import tests/: {offenders}"


def test_the_scans_see_what_they_look_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os as o\nfrom os import getenv\nimport tests.support\n"
        "x = o.environ.get('A')\ncmd = ['-m', 'tests.fake']\n"
    )
    assert _environ_uses(sample) == [2, 4]
    assert len(_imports_tests(sample)) == 2
