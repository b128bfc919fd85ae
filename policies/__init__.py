"""Tollgate policy engine: the YAML policy schema and the routing decision.

Pure: no I/O, no clock, no randomness, never imports ``gateway`` or ``predictors``.
The public API is re-exported here; see ``docs/policies.md``.
"""

from policies.decision import CONSTRAINT_ORDER, CandidateRow, Decision
from policies.engine import decide, decide_sweep, escalation_cost, select
from policies.explain import render_table
from policies.facts import BackendFacts, PredictionFacts, RequestFacts
from policies.schema import Policy, PolicySet, yaml_loc
from policies.shadow import ShadowResult, shadow_decisions
from policies.sources import PolicyLoadError, PolicySource, SourceIssue, load_policy_set
from policies.validators import ValidationResult, all_passed, run_validators

__all__ = [
    "CONSTRAINT_ORDER",
    "BackendFacts",
    "CandidateRow",
    "Decision",
    "Policy",
    "PolicyLoadError",
    "PolicySet",
    "PolicySource",
    "PredictionFacts",
    "RequestFacts",
    "ShadowResult",
    "SourceIssue",
    "ValidationResult",
    "all_passed",
    "decide",
    "decide_sweep",
    "escalation_cost",
    "load_policy_set",
    "render_table",
    "run_validators",
    "select",
    "shadow_decisions",
    "yaml_loc",
]
