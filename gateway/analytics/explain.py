"""``tollgate route explain``: the decision the config's policies would take for one prompt.

The shipped predictor scores the prompt; backends count as healthy when their credentials are
set (or they are local), circuits are closed, p95 latency is unknown, and prompt tokens are
``ceil(chars / 4)``.
"""

from __future__ import annotations

from gateway.analytics.facts import backend_facts, credentials_ok, estimate_tokens
from gateway.analytics.predictions import config_predictor, prediction_facts
from gateway.analytics.prices import resolve_prices
from gateway.config import Config
from policies import Decision, RequestFacts, decide, select


def explain_route(
    cfg: Config,
    prompt: str,
    *,
    policy: str | None = None,
    tenant: str | None = None,
    max_tokens: int | None = None,
) -> Decision:
    """The decision for ``prompt`` under ``policy`` (default: the routing rules choose).
    Raises ValueError when the config has no policies or no policy of that name."""
    policy_set = cfg.policy_set
    if policy_set is None:
        raise ValueError("the config defines no policies")
    if policy is not None and policy not in policy_set.policies:
        raise ValueError(
            f"unknown policy {policy!r}; policies: " + ", ".join(sorted(policy_set.policies))
        )
    request = RequestFacts(
        tenant=tenant,
        prompt_text=prompt,
        est_prompt_tokens=estimate_tokens(prompt),
        max_tokens=max_tokens,
    )
    name, rule = select(policy_set, request) if policy is None else (policy, "model")
    prediction = None
    predictor = config_predictor(cfg)
    if predictor is not None:
        (p,) = predictor.predict_batch([prompt])
        prediction = prediction_facts(p, predictor.version)
    facts = backend_facts(
        cfg, resolve_prices(cfg), healthy={b.name: credentials_ok(b) for b in cfg.backends}
    )
    return decide(policy_set.policies[name], name, request, facts, prediction, rule=rule)
