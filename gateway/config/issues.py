"""How the config layer reports problems: a :class:`ConfigIssue` names the file, line and YAML
path of one problem; a :class:`ConfigError` carries every issue found, so one run of
``tollgate config check`` (or a reload) lists them all."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a config file, located by YAML path and line."""

    source: str
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.path or '(document)'}: {self.message}"


class ConfigError(Exception):
    """The config was rejected; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


def format_loc(loc: tuple[str | int, ...]) -> str:
    """A key path as written in messages: ``backends[1].api_key``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
