"""Tollgate policy engine: the YAML policy schema and the routing decision.

Pure: no I/O, no clock, no randomness, never imports ``gateway`` or ``predictors``.
The public API is re-exported here; see ``docs/policies.md``.
"""

from policies.decision import CONSTRAINT_ORDER, CandidateRow, Decision
from policies.engine import decide, escalation_cost, select
from policies.explain import render_table
from policies.facts import BackendFacts, PredictionFacts, RequestFacts
from policies.schema import Policy, PolicySet
from policies.shadow import ShadowResult, shadow_decisions
from policies.validators import ValidationResult, run_validators

__all__ = [
    "CONSTRAINT_ORDER",
    "BackendFacts",
    "CandidateRow",
    "Decision",
    "Policy",
    "PolicySet",
    "PredictionFacts",
    "RequestFacts",
    "ShadowResult",
    "ValidationResult",
    "decide",
    "escalation_cost",
    "render_table",
    "run_validators",
    "select",
    "shadow_decisions",
]
