"""YAML source positions: load a YAML file and remember the line of every key path.

Config and policy errors must name the offending key's YAML path *and* line. PyYAML's composer
keeps a start mark on every node; this module walks the node tree once and records, for each
path tuple (``("backends", 1, "api_key")``), the 1-based line where that value starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class YamlDocument:
    """Parsed YAML data plus a map from key paths to source lines."""

    data: Any
    source: str
    lines: dict[tuple[str | int, ...], int] = field(default_factory=dict)

    def line_of(self, loc: tuple[str | int, ...]) -> int | None:
        """Line of the deepest prefix of ``loc`` that exists in the document."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None


class YamlSyntaxError(ValueError):
    """The file is not valid YAML; carries the line where parsing failed."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source, self.line, self.message = source, line, message
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: YAML syntax error: {message}")


def _walk(
    node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]
) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            out[(*path, key)] = key_node.start_mark.line + 1
            _walk(value_node, (*path, key), out)
            # keep the key's line for the path itself (a value on the next line is less useful)
            out[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), out)


def parse_yaml(text: str, source: str = "<string>") -> YamlDocument:
    """Parse YAML text (safe loader) and record key-path lines."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YamlSyntaxError(source, mark.line + 1 if mark else None, str(exc.problem)) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(source, None, str(exc)) from exc
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _walk(node, (), lines)
    return YamlDocument(data=data if data is not None else {}, source=source, lines=lines)


def load_yaml_file(path: str | Path) -> YamlDocument:
    """Read and parse a YAML file."""
    p = Path(path)
    return parse_yaml(p.read_text(encoding="utf-8"), source=str(p))
