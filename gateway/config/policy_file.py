"""Reading a policy file: a YAML mapping that holds only ``policies``, ``routing`` and ``shadow``.

Two kinds of file have this shape: the files a config pulls in with ``include`` and the
candidate policy file of ``tollgate policy backtest``. Both are read here, so both reject the
same mistakes with the same located errors (file, line, YAML path).
"""

from __future__ import annotations

from pathlib import Path

from gateway.config.issues import ConfigError, ConfigIssue, format_loc
from gateway.config.yamlsource import YamlDocument, YamlSyntaxError, load_yaml_file

POLICY_SECTIONS = ("policies", "routing", "shadow")


def read_policy_file(path: str | Path) -> YamlDocument:
    """Parse ``path`` and check its shape; raises :class:`ConfigError` naming file, line and key
    of every problem. ``FileNotFoundError`` propagates: where a missing file is reported depends
    on who named it (an ``include`` entry, a command-line option)."""
    source = str(path)
    try:
        doc = load_yaml_file(path)
    except YamlSyntaxError as exc:
        raise ConfigError([ConfigIssue(exc.source, "", exc.line, exc.message)]) from None
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(source, "", None, f"cannot read: {exc}")]) from None
    if not isinstance(doc.data, dict):
        raise ConfigError([ConfigIssue(source, "", 1, "a policy file must be a YAML mapping")])
    extra = sorted(str(k) for k in doc.data if k not in POLICY_SECTIONS)
    if extra:
        raise ConfigError(
            [
                ConfigIssue(
                    source,
                    format_loc((k,)),
                    doc.line_of((k,)),
                    "a policy file may only hold policies, routing and shadow "
                    "(backends and everything else come from the config)",
                )
                for k in extra
            ]
        )
    return doc
