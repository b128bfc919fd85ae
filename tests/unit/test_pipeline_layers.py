"""Import rules of the request path (issue 10), read from the source (every import, deferred
ones included): the serve layer knows neither the HTTP edge nor the success side — the app
factory wires outcomes into the pipeline — and nothing needs an import deferred to dodge a
cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def offending(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in sorted((GATEWAY / folder).rglob("*.py")):
        for name in sorted(imports(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(GATEWAY.parent)} imports {name}")
    return out


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        # the pipeline returns values: no web framework, no edge, no success side
        ("serve", ("gateway.http", "gateway.outcomes", "gateway.cli", "fastapi", "starlette")),
        # the success side sits above serve and below the edges
        ("outcomes", ("gateway.http", "gateway.cli", "fastapi", "starlette")),
    ],
)
def test_layer_imports_only_go_down(folder: str, forbidden: tuple[str, ...]) -> None:
    assert offending(folder, forbidden) == []


def test_no_import_is_deferred_to_dodge_a_cycle() -> None:
    dodges = [
        str(p.relative_to(GATEWAY.parent))
        for folder in ("serve", "outcomes", "http")
        for p in sorted((GATEWAY / folder).rglob("*.py"))
        if "(import cycle" in p.read_text()
    ]
    assert dodges == []
