"""The candidate policy file of a backtest: read, validated against the config's backends, and
completed with the config's routing when it has none. The file is read like a config's
included policy files (``gateway.config.policy_file``); errors are located by file, line and
YAML path, like ``tollgate config check``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config import Config, ConfigError, ConfigIssue, format_loc
from gateway.config.policy_file import read_policy_file
from policies import PolicyLoadError, PolicySet, PolicySource, load_policy_set


@dataclass(frozen=True)
class CandidatePolicies:
    """A validated candidate policy set and what the file left to the config."""

    policy_set: PolicySet
    source: str
    notes: tuple[str, ...] = ()


def load_candidate(path: str | Path, config: Config) -> CandidatePolicies:
    """Read and validate a candidate policy file against ``config``'s backends.

    The file holds ``policies`` and ``routing`` (and optionally ``shadow``), the same shape as
    ``config.yaml``. Without ``routing`` the config's routing is used (a note says so). Raises
    :class:`ConfigError` naming file, line and YAML path of every problem.
    """
    source = str(path)
    try:
        doc = read_policy_file(path)
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(source, "", None, "file not found")]) from None
    if "policies" not in doc.data:
        raise ConfigError([ConfigIssue(source, "policies", 1, "no policies in the file")])
    notes: list[str] = []
    sources = [PolicySource(source, doc.data)]
    config_label = "config routing"
    if "routing" not in doc.data:
        if config.routing is None:
            raise ConfigError(
                [ConfigIssue(source, "routing", 1, "no routing in the file or the config")]
            )
        routing = config.routing.model_dump(mode="json", by_alias=True, exclude_none=True)
        sources.append(PolicySource(config_label, {"routing": routing}))
        notes.append("the candidate file has no routing: the config's routing rules apply")
    try:
        policy_set = load_policy_set(sources, [b.name for b in config.backends])
    except PolicyLoadError as exc:
        issues = []
        for issue in exc.issues:
            line = doc.line_of(issue.loc) if issue.source == source else None
            issues.append(ConfigIssue(issue.source, format_loc(issue.loc), line, issue.message))
        raise ConfigError(issues) from None
    return CandidatePolicies(policy_set, source, tuple(notes))
