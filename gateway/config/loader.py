"""Loading ``config.yaml``: reading the file and its policy includes, merging them, and
validating the result against the schema (``gateway.config.schema``); every problem becomes a
``ConfigIssue`` with the file, the YAML path of the offending key and its line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from gateway.config.issues import ConfigError, ConfigIssue, format_loc
from gateway.config.policy_file import POLICY_SECTIONS, read_policy_file
from gateway.config.schema import Config, _LocErrors
from gateway.config.yamlsource import YamlDocument, YamlSyntaxError, load_yaml_file, parse_yaml
from policies import PolicySource, yaml_loc
from policies.sources import merge_sources

Origin = Callable[[tuple[str | int, ...]], tuple[str, tuple[str | int, ...]]]


def _locate(
    docs: dict[str, YamlDocument],
    main: YamlDocument,
    origin: Origin | None,
    loc: tuple[str | int, ...],
) -> tuple[str, tuple[str | int, ...], int | None]:
    """(file, path in that file, line) of a loc in the merged config."""
    loc = yaml_loc(loc)
    source, local = main.source, loc
    if origin is not None and loc and loc[0] in POLICY_SECTIONS:
        source, local = origin(loc)
    doc = docs.get(source, main)
    return source, local, doc.line_of(local)


def _issues_from_validation(
    docs: dict[str, YamlDocument], main: YamlDocument, origin: Origin | None, exc: ValidationError
) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = err["msg"].removeprefix("Value error, ")
        ctx_err = (err.get("ctx") or {}).get("error")
        located: list[tuple[tuple[str | int, ...], str]] = [(loc, message)]
        if isinstance(ctx_err, _LocErrors):
            located = [((*loc, *sub), msg) for sub, msg in ctx_err.issues]
        elif err["type"] == "extra_forbidden":
            located = [(loc, "unknown key (check the spelling; see docs/configuration.md)")]
        for where, msg in located:
            source, local, line = _locate(docs, main, origin, where)
            issues.append(ConfigIssue(source, format_loc(local), line, msg))
    return issues


def _read_includes(main: YamlDocument, base_dir: Path | None) -> list[YamlDocument]:
    includes = main.data.get("include") or []
    if not isinstance(includes, list):
        return []  # the schema reports the type error
    docs = []
    for index, name in enumerate(includes):
        path = Path(str(name))
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            docs.append(read_policy_file(path))
        except FileNotFoundError:
            raise ConfigError(
                [
                    ConfigIssue(
                        main.source,
                        f"include[{index}]",
                        main.line_of(("include", index)),
                        f"included file {str(path)!r} not found",
                    )
                ]
            ) from None
    return docs


def validate_document(doc: YamlDocument, base_dir: Path | None = None) -> Config:
    """Validate parsed YAML (plus its includes) into a Config, or raise ConfigError."""
    if not isinstance(doc.data, dict):
        raise ConfigError([ConfigIssue(doc.source, "", 1, "the config must be a YAML mapping")])
    included = _read_includes(doc, base_dir)
    docs = {d.source: d for d in [doc, *included]}
    data = dict(doc.data)
    origin: Origin | None = None
    if included:
        merged, problems = merge_sources([PolicySource(d.source, d.data) for d in [doc, *included]])
        if problems:
            raise ConfigError(
                [
                    ConfigIssue(
                        p.source, format_loc(p.loc), docs[p.source].line_of(p.loc), p.message
                    )
                    for p in problems
                ]
            )
        for section in POLICY_SECTIONS:
            data.pop(section, None)
            if section in merged.data:
                data[section] = merged.data[section]
        origin = merged.origin
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_issues_from_validation(docs, doc, origin, exc)) from None


def load_config(path: str | Path) -> Config:
    """Load and validate a config file and its includes; ConfigError names every problem."""
    try:
        doc = load_yaml_file(path)
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(str(path), "", None, "file not found")]) from None
    except YamlSyntaxError as exc:
        raise ConfigError([ConfigIssue(exc.source, "", exc.line, exc.message)]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(str(path), "", None, f"cannot read: {exc}")]) from None
    return validate_document(doc, Path(path).parent)


def config_files(path: str | Path, config: Config) -> list[Path]:
    """The files a config was loaded from (for the hot-reload watcher)."""
    base = Path(path).parent
    return [Path(path)] + [p if (p := Path(i)).is_absolute() else base / p for i in config.include]


def load_config_text(text: str, source: str = "<string>") -> Config:
    try:
        doc = parse_yaml(text, source)
    except YamlSyntaxError as exc:
        raise ConfigError([ConfigIssue(exc.source, "", exc.line, exc.message)]) from None
    return validate_document(doc)
