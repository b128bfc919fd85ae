"""Policy backtests: replay recorded traffic under the current and a candidate policy set.

This module owns ``tollgate policy backtest`` minus its printing (``gateway.cli.policy``):

* loading a candidate policy file (``policies``/``routing``/``shadow``, the shape of
  ``config.yaml``) and validating it against the config's backends, errors located by
  file and line like ``tollgate config check``;
* **dataset replays** (:func:`replay_dataset`): per recorded query, facts from the prompt, the
  shipped predictor's P(success) and the config's backend prices; ``decide`` for both policy
  sets; each choice is scored with the *recorded* outcome and *recorded* cost of the dataset
  model the chosen backend maps to (``backend.profile``);
* **store replays** (:func:`replay_store`): logged requests whose first attempt stored a
  decision with a prediction. The current side is what happened (recorded cost of every
  attempt; success from the ``outcomes`` table, unknown if absent — never a success). The
  candidate side reuses the recorded cost and outcome when it picks the backend that was
  called; otherwise cost = recorded tokens x the candidate backend's price and success = the
  stored predicted P(success): such rows are flagged *estimated (predictor)*;
* the aggregates (:class:`Summary`): spend, success rate, cost per successful task, backend
  mix, and their difference (:meth:`BacktestResult.diff`).

Everything but the loaders (``load_*``, ``predict_*``) is pure: data in, a result out.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import BackendConfig, Config, ConfigError, ConfigIssue, format_loc
from gateway.config.yamlsource import YamlSyntaxError, load_yaml_file
from gateway.pricing import Price, resolve_price
from gateway.serve.routing import facts_for
from policies import (
    BackendFacts,
    Decision,
    PolicyLoadError,
    PolicySet,
    PolicySource,
    PredictionFacts,
    RequestFacts,
    decide,
    load_policy_set,
    select,
)
from policies.rules import DEFAULT_RULE, matches, rule_label
from policies.schema import Match

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy.ext.asyncio import AsyncEngine

    from predictors.datasets import OutcomeTable
    from predictors.service import Predictor

POLICY_SECTIONS = ("policies", "routing", "shadow")
ESTIMATED = "estimated (predictor)"
NO_BACKEND = "(none)"
#: Routing conditions a logged request can be re-evaluated on (the store keeps no headers,
#: prompt text, tools or response format).
STORED_CONDITIONS = frozenset({"tenants", "key_ids", "prompt_tokens"})


# -- the candidate policy file ------------------------------------------------------------------
@dataclass(frozen=True)
class CandidatePolicies:
    """A validated candidate policy set and what the file left to the config."""

    policy_set: PolicySet
    source: str
    notes: tuple[str, ...] = ()


def _issue(doc_source: str, line: int | None, loc: tuple[str | int, ...], msg: str) -> ConfigIssue:
    return ConfigIssue(doc_source, format_loc(loc), line, msg)


def load_candidate(path: str | Path, config: Config) -> CandidatePolicies:
    """Read and validate a candidate policy file against ``config``'s backends.

    The file holds ``policies`` and ``routing`` (and optionally ``shadow``), the same shape as
    ``config.yaml``. Without ``routing`` the config's routing is used (a note says so). Raises
    :class:`ConfigError` naming file, line and YAML path of every problem.
    """
    source = str(path)
    try:
        doc = load_yaml_file(path)
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(source, "", None, "file not found")]) from None
    except YamlSyntaxError as exc:
        raise ConfigError([ConfigIssue(exc.source, "", exc.line, exc.message)]) from None
    if not isinstance(doc.data, dict):
        raise ConfigError([ConfigIssue(source, "", 1, "a policy file must be a YAML mapping")])
    extra = sorted(str(k) for k in doc.data if k not in POLICY_SECTIONS)
    if extra:
        raise ConfigError(
            [
                _issue(
                    source,
                    doc.line_of((k,)),
                    (k,),
                    "a policy file may only hold policies, "
                    "routing and shadow (backends come from the config)",
                )
                for k in extra
            ]
        )
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


# -- prices and backend facts -------------------------------------------------------------------
class _NoCatalog:
    def catalog_price(self, backend: Any) -> None:
        return None


def resolve_prices(config: Config) -> dict[str, Price | None]:
    """Each backend's price as the gateway resolves it (litellm is loaded only when needed)."""
    caller: Any = _NoCatalog()
    if any(b.input_cost_per_token is None and b.self_hosted is None for b in config.backends):
        from gateway.backends.litellm_adapter import LiteLLMCaller  # heavy: only for catalog prices

        caller = LiteLLMCaller()
    return {b.name: resolve_price(b, caller) for b in config.backends}


def credentials_ok(backend: BackendConfig) -> bool:
    """A backend can be called from here (same rule as the running gateway's)."""
    return backend.missing_credentials() is None


def backend_facts(
    config: Config,
    prices: Mapping[str, Price | None],
    *,
    healthy: Mapping[str, bool] | None = None,
    profiles: Mapping[str, str] | None = None,
) -> dict[str, BackendFacts]:
    """Facts for every configured backend: prices, window, capabilities, tags, tenant lists.

    ``healthy`` (default: all) marks backends the replay cannot use; ``profiles`` overrides the
    predictor profile (``backend.profile``). p95 latency is unknown, circuits are closed.
    """
    return {
        b.name: facts_for(
            b,
            prices.get(b.name),
            healthy=True if healthy is None else healthy.get(b.name, True),
            profile=(profiles or {}).get(b.name),
        )
        for b in config.backends
    }


def estimate_tokens(text: str) -> int:
    """The datasets' token convention (``../shared/data/README.md``): ceil(chars / 4)."""
    return math.ceil(len(text) / 4)


# -- results --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Replayed:
    """One request under one policy set."""

    id: str
    policy: str | None
    rule: str | None
    backend: str | None
    #: USD spent (recorded, or estimated when ``estimated``); priced attempts only.
    cost_usd: Decimal
    #: 1/0 recorded, the predicted P(success) when ``estimated``, ``None`` unknown.
    success: float | None
    estimated: bool = False
    #: Some of the cost is unknown (an unpriced backend or attempt).
    unpriced: bool = False
    #: The decision's error code when no backend was chosen (the request would fail).
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "policy": self.policy,
            "rule": self.rule,
            "backend": self.backend,
            "cost_usd": str(self.cost_usd),
            "success": self.success,
            "estimated": self.estimated,
            "unpriced": self.unpriced,
            "error": self.error,
        }


def _div(a: Decimal, b: float) -> Decimal | None:
    return None if b <= 0 else a / Decimal(repr(b))


@dataclass(frozen=True)
class Summary:
    """Aggregates over the replayed requests of one side.

    ``succeeded`` / ``failed`` are expected counts: recorded 0/1 outcomes plus, for estimated
    rows, the predicted P(success) (and 1 - P). A request whose policy chose no backend is a
    failure at no cost. Unknown outcomes are left out of the success rate, never successes.
    """

    requests: int
    served: int
    spend_usd: Decimal
    unpriced: int
    succeeded: float
    failed: float
    unknown: int
    estimated: int
    mix: dict[str, int]

    @classmethod
    def of(cls, rows: Sequence[Replayed]) -> Summary:
        ok = sum(r.success for r in rows if r.success is not None)
        known = sum(1 for r in rows if r.success is not None)
        mix = Counter(r.backend or NO_BACKEND for r in rows)
        return cls(
            requests=len(rows),
            served=sum(1 for r in rows if r.backend is not None),
            spend_usd=sum((r.cost_usd for r in rows), Decimal(0)),
            unpriced=sum(1 for r in rows if r.unpriced),
            succeeded=float(ok),
            failed=float(known - ok),
            unknown=len(rows) - known,
            estimated=sum(1 for r in rows if r.estimated),
            mix=dict(sorted(mix.items(), key=lambda kv: (-kv[1], kv[0]))),
        )

    @property
    def success_rate(self) -> float | None:
        known = self.succeeded + self.failed
        return self.succeeded / known if known > 0 else None

    @property
    def cost_per_success(self) -> Decimal | None:
        return _div(self.spend_usd, self.succeeded)

    def mix_share(self) -> dict[str, float]:
        return {k: v / self.requests for k, v in self.mix.items()} if self.requests else {}

    def to_dict(self) -> dict[str, Any]:
        cps = self.cost_per_success
        rate = self.success_rate
        return {
            "requests": self.requests,
            "served": self.served,
            "spend_usd": str(self.spend_usd),
            "unpriced": self.unpriced,
            "succeeded": round(self.succeeded, 4),
            "failed": round(self.failed, 4),
            "unknown": self.unknown,
            "success_rate": None if rate is None else round(rate, 6),
            "cost_per_successful_task_usd": None if cps is None else str(_round_usd(cps)),
            "mix": self.mix,
            "mix_share": {k: round(v, 6) for k, v in self.mix_share().items()},
            "estimated_rows": self.estimated,
            "estimate": ESTIMATED if self.estimated else None,
        }


def _round_usd(value: Decimal) -> Decimal:
    return value.quantize(Decimal("1e-12"))


@dataclass(frozen=True)
class Side:
    """One policy set's replay: the label (``current`` / ``candidate``) and its rows."""

    label: str
    version: str | None
    rows: tuple[Replayed, ...]

    @property
    def summary(self) -> Summary:
        return Summary.of(self.rows)


def _change(new: float | Decimal | None, old: float | Decimal | None) -> dict[str, Any]:
    if new is None or old is None:
        return {"abs": None, "pct": None}
    delta = new - old  # type: ignore[operator]
    pct = None if old == 0 else float(delta) / float(old) * 100
    value: Any = str(_round_usd(delta)) if isinstance(delta, Decimal) else round(delta, 6)
    return {"abs": value, "pct": None if pct is None else round(pct, 2)}


@dataclass(frozen=True)
class BacktestResult:
    """Both sides of a backtest plus what the reader must know to trust the numbers."""

    source: str
    current: Side
    candidate: Side
    notes: tuple[str, ...] = ()
    #: True when the predictor was trained on these very queries; None: not applicable.
    in_sample: bool | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def diff(self) -> dict[str, Any]:
        """Candidate minus current: absolute and % (success rate: points, as a fraction)."""
        a, b = self.current.summary, self.candidate.summary
        return {
            "spend_usd": _change(b.spend_usd, a.spend_usd),
            "success_rate": _change(b.success_rate, a.success_rate),
            "cost_per_successful_task_usd": _change(b.cost_per_success, a.cost_per_success),
            "succeeded": _change(b.succeeded, a.succeeded),
        }

    @property
    def changed(self) -> int:
        """Requests where the candidate chose a different backend."""
        return sum(
            1
            for x, y in zip(self.current.rows, self.candidate.rows, strict=True)
            if x.backend != y.backend
        )

    def to_dict(self, rows: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "in_sample": self.in_sample,
            "meta": self.meta,
            "current": {"version": self.current.version, **self.current.summary.to_dict()},
            "candidate": {"version": self.candidate.version, **self.candidate.summary.to_dict()},
            "difference": self.diff(),
            "changed_choices": self.changed,
            "notes": list(self.notes),
        }
        if rows:
            out["rows"] = [
                {"current": x.to_dict(), "candidate": y.to_dict()}
                for x, y in zip(self.current.rows, self.candidate.rows, strict=True)
            ]
        return out


# -- dataset replays ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Recorded:
    """One dataset model's recorded result on one query (``None``: not recorded)."""

    cost_usd: Decimal | None
    success: bool | None


@dataclass(frozen=True)
class DatasetQuery:
    """A recorded query: its prompt, prediction, and per *backend* the recorded result."""

    id: str
    prompt: str
    est_prompt_tokens: int
    prediction: PredictionFacts | None
    recorded: Mapping[str, Recorded]


def _score_dataset(q: DatasetQuery, decision: Decision, policy: str, rule: str) -> Replayed:
    if decision.backend is None:
        return Replayed(q.id, policy, rule, None, Decimal(0), 0.0, error=decision.error)
    rec = q.recorded.get(decision.backend)
    if rec is None:  # defensive: unmapped backends are marked unhealthy and never chosen
        return Replayed(q.id, policy, rule, decision.backend, Decimal(0), None, unpriced=True)
    return Replayed(
        q.id,
        policy,
        rule,
        decision.backend,
        rec.cost_usd if rec.cost_usd is not None else Decimal(0),
        None if rec.success is None else float(rec.success),
        unpriced=rec.cost_usd is None,
    )


def replay_one(
    policy_set: PolicySet,
    request: RequestFacts,
    backends: Mapping[str, BackendFacts],
    prediction: PredictionFacts | None,
) -> tuple[str, str, Decision]:
    """``select`` with the routing rules, then ``decide``: what the gateway does for ``auto``."""
    name, rule = select(policy_set, request)
    return (
        name,
        rule,
        decide(policy_set.policies[name], name, request, backends, prediction, rule=rule),
    )


def replay_dataset(
    queries: Sequence[DatasetQuery],
    backends: Mapping[str, BackendFacts],
    current: PolicySet,
    candidate: PolicySet,
    *,
    source: str,
    notes: Iterable[str] = (),
    in_sample: bool | None = None,
    meta: Mapping[str, Any] | None = None,
) -> BacktestResult:
    """Replay recorded queries under both policy sets, scored with recorded outcomes/costs."""
    sides: list[list[Replayed]] = [[], []]
    for q in queries:
        request = RequestFacts(prompt_text=q.prompt, est_prompt_tokens=q.est_prompt_tokens)
        for out, policy_set in zip(sides, (current, candidate), strict=True):
            name, rule, decision = replay_one(policy_set, request, backends, q.prediction)
            out.append(_score_dataset(q, decision, name, rule))
    return BacktestResult(
        source=source,
        current=Side("current", current.version, tuple(sides[0])),
        candidate=Side("candidate", candidate.version, tuple(sides[1])),
        notes=tuple(notes),
        in_sample=in_sample,
        meta=dict(meta or {}),
    )


def _decimal(value: float) -> Decimal | None:
    # 12 significant digits: the CSVs' costs, without float parsing noise (…99999999995)
    return None if math.isnan(value) else Decimal(f"{float(value):.12g}")


def dataset_queries(
    table: OutcomeTable,
    mapping: Mapping[str, str],
    predictions: Sequence[PredictionFacts | None],
) -> list[DatasetQuery]:
    """One :class:`DatasetQuery` per row of ``table``; ``mapping`` is backend → dataset model."""
    if len(predictions) != len(table):
        raise ValueError("one prediction per query is needed")
    outcome = table.outcome.to_numpy(dtype=float)
    cost = table.cost.to_numpy(dtype=float)
    col = {m: i for i, m in enumerate(table.models)}
    out = []
    for i, (qid, prompt) in enumerate(zip(table.ids, table.prompts, strict=True)):
        recorded = {}
        for backend, model in mapping.items():
            j = col[model]
            o = outcome[i, j]
            recorded[backend] = Recorded(_decimal(cost[i, j]), None if math.isnan(o) else o >= 0.5)
        text = str(prompt)
        out.append(DatasetQuery(qid, text, estimate_tokens(text), predictions[i], recorded))
    return out


def map_backends(
    config: Config, models: Sequence[str], overrides: Mapping[str, str] | None = None
) -> tuple[dict[str, str], list[str]]:
    """backend → dataset model via ``backend.profile`` (or ``overrides``), and the backends left
    out (their profile is not a model of the dataset), each with a reason."""
    known = set(models)
    mapping: dict[str, str] = {}
    missing: list[str] = []
    for b in config.backends:
        model = (overrides or {}).get(b.name, b.profile)
        if "embeddings" in b.capabilities and model is None:
            continue  # an embeddings endpoint is not a chat backend
        if model is not None and model in known:
            mapping[b.name] = model
        else:
            why = "no profile" if model is None else f"profile {model!r} is not in the dataset"
            missing.append(f"{b.name} ({why})")
    return mapping, missing


def load_dataset(spec: str, data_dir: str | Path | None = None) -> OutcomeTable:
    """``routerbench``, ``routerbench:<file>[,<file>]``, ``mmlu-pro``, a data directory laid out
    like ``../shared/data``, or a RouterBench-format CSV file inside a ``routerbench/`` folder."""
    from predictors.datasets import read_mmlu_pro, read_routerbench

    name, _, files = spec.partition(":")
    if name == "routerbench":
        return read_routerbench(data_dir, files.split(",")) if files else read_routerbench(data_dir)
    if name == "mmlu-pro":
        return read_mmlu_pro(data_dir)
    path = Path(spec)
    if path.is_file() and path.suffix == ".csv" and path.parent.name == "routerbench":
        return read_routerbench(path.parent.parent, [path.stem])
    if path.is_dir():
        if (path / "routerbench").is_dir():
            return read_routerbench(path)
        if (path / "mmlu-pro").is_dir():
            return read_mmlu_pro(path)
    raise ValueError(
        f"unknown dataset {spec!r}: use routerbench, routerbench:<file>, mmlu-pro, a data "
        "directory (with routerbench/ or mmlu-pro/) or a routerbench/<file>.csv path"
    )


def sample_ids(ids: Sequence[str], limit: int | None, seed: int = 0) -> list[str]:
    """A seeded random sample of ``limit`` ids (all of them, in order, without a limit)."""
    if limit is None or limit >= len(ids):
        return list(ids)
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(ids))[:limit]
    return [ids[i] for i in sorted(order)]


def trained_on(meta: Mapping[str, Any]) -> set[str]:
    """Names of the datasets an artifact's shipped weights were trained on."""
    data = meta.get("training_data") or {}
    return {str(d.get("name")) for d in data.get("datasets") or [] if isinstance(d, dict)}


class _LazyEmbedder:
    """Stands in for ``predictors.embedding.Embedder`` in ``embed_cached``: the model (torch,
    seconds to load on 2 cores) is only built if some prompt is not in the embedding cache."""

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor
        self.fingerprint = predictor.embedder_config.fingerprint()

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self._predictor.embedder.encode(list(texts), batch_size=batch_size)


def embed_prompts(predictor: Predictor, prompts: Sequence[str]) -> np.ndarray:
    """The predictor's vectors for many prompts, through the on-disk embedding cache."""
    from typing import cast

    from predictors.embedding import Embedder
    from predictors.embedding_cache import embed_cached

    return embed_cached(cast(Embedder, _LazyEmbedder(predictor)), list(prompts))


def predict_prompts(predictor: Predictor, prompts: Sequence[str]) -> list[PredictionFacts]:
    """Predictions for many prompts, through the on-disk embedding cache."""
    return predict_vectors(predictor, embed_prompts(predictor, prompts))


def predict_vectors(predictor: Predictor, x: np.ndarray) -> list[PredictionFacts]:
    """The policy engine's view of the predictor's output for query vectors ``x``."""
    return [
        PredictionFacts(
            p_success=dict(p.p_success),
            predictor_version=predictor.version,
            complexity=float(p.complexity),
        )
        for p in predictor.predict_embeddings(x)
    ]


_SPLIT_SEED = re.compile(r"seeded 70/30 by query, seed (\d+)")


def recorded_split_seed(meta: Mapping[str, Any]) -> int | None:
    """The seed of the 70/30 split an artifact's held-out metrics were measured on, if any."""
    split = (meta.get("metrics_holdout") or {}).get("split")
    match = _SPLIT_SEED.match(split) if isinstance(split, str) else None
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Holdout:
    """A predictor refitted on the 70 % training part of an artifact's recorded split, and the
    30 % of query keys (``dataset:id``) it never saw."""

    predictor: Predictor
    test_keys: frozenset[str]
    seed: int
    train_rows: int


def holdout_predictor(predictor: Predictor, data_dir: str | Path | None = None) -> Holdout:
    """Refit ``predictor``'s recipe (its recorded datasets, train config and split seed) on the
    training part only, as ``predictors.training.holdout_report`` did for the artifact's
    held-out metrics. Embeddings come from the cache (all training prompts are needed)."""
    from typing import cast

    from predictors.datasets import read_dataset, split_ids
    from predictors.embedding import Embedder
    from predictors.embedding_cache import embed_cached
    from predictors.outcome_model import TrainConfig, fit_outcome_model
    from predictors.service import Predictor as PredictorCls
    from predictors.training import join_tables

    meta = predictor.meta
    seed = recorded_split_seed(meta)
    names = [str(d["name"]) for d in (meta.get("training_data") or {}).get("datasets") or []]
    train_config = (meta.get("model") or {}).get("train_config")
    if seed is None or not names or not isinstance(train_config, dict):
        raise ValueError(
            f"predictor {predictor.version} records no train/test split, datasets or train "
            "config: a held-out replay is not possible (the numbers would be in-sample)"
        )
    tables = [read_dataset(n, data_dir) for n in names]
    keys, prompts, y = join_tables(tables)
    profiles = [m for t in tables for m in t.models]
    x = embed_cached(cast(Embedder, _LazyEmbedder(predictor)), prompts)
    train, test = split_ids(keys, seed)
    index = {k: i for i, k in enumerate(keys)}
    rows = [index[k] for k in train]
    model = fit_outcome_model(x[rows], y[rows], profiles, TrainConfig(**train_config))
    refit_meta = {**meta, "version": f"{predictor.version}-holdout{seed}"}
    return Holdout(PredictorCls(model, refit_meta), frozenset(test), seed, len(rows))


# -- store replays -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoggedRequest:
    """A logged request that can be replayed: its first attempt stored a decision with a
    prediction. ``cost_usd`` sums every attempt of the request; ``success`` is the task's
    outcome (``None``: no outcome recorded)."""

    request_id: str
    task_id: str
    tenant: str | None
    key_id: str | None
    policy: str
    rule: str
    backend: str
    decision: Mapping[str, Any]
    prediction: PredictionFacts
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: Decimal
    unpriced: bool
    success: bool | None
    #: the backend whose answer was returned (last ok attempt), None when none was
    served_by: str | None = None
    #: backends whose answers a policy validator rejected (escalation), in order
    rejected: tuple[str, ...] = ()


def stored_prediction(decision: Mapping[str, Any]) -> PredictionFacts | None:
    """The prediction a logged decision was made with (``None``: none was stored)."""
    pred = decision.get("prediction")
    if not isinstance(pred, Mapping) or not isinstance(pred.get("p_success"), Mapping):
        return None
    try:
        return PredictionFacts(
            p_success={str(k): float(v) for k, v in pred["p_success"].items()},
            predictor_version=str(decision.get("predictor_version") or "logged"),
            complexity=None if pred.get("complexity") is None else float(pred["complexity"]),
        )
    except (TypeError, ValueError):
        return None


def _evaluable(match: Match) -> bool:
    given = {k for k, v in match.model_dump(exclude_none=True).items() if v is not None}
    return given <= STORED_CONDITIONS


def replay_select(
    policy_set: PolicySet, request: RequestFacts, logged_rule: str, logged_policy: str
) -> tuple[str, str]:
    """Which policy of ``policy_set`` serves a logged request.

    A request that named its policy (``tollgate/<name>``, rule ``model``) keeps it when the set
    has it. Rules on tenants, key ids and prompt tokens are evaluated; rules on anything the
    store does not keep (headers, prompt text, tools, JSON mode) are taken to match exactly when
    the logged request matched a rule of the same name.
    """
    if logged_rule == "model" and logged_policy in policy_set.policies:
        return logged_policy, "model"
    for i, rule in enumerate(policy_set.routing.rules):
        label = rule_label(i, rule.name)
        if _evaluable(rule.match):
            if matches(rule.match, request):
                return rule.policy, label
        elif label == logged_rule:
            return rule.policy, label
    return policy_set.routing.default, DEFAULT_RULE


def _logged_request_facts(req: LoggedRequest, rules_from: Sequence[PolicySet]) -> RequestFacts:
    """What the store knows of the request; tools/JSON mode inferred from the rule it matched."""
    has_tools = json_mode = False
    for ps in rules_from:
        for i, rule in enumerate(ps.routing.rules):
            if rule_label(i, rule.name) == req.rule:
                has_tools = has_tools or bool(rule.match.has_tools)
                json_mode = json_mode or bool(rule.match.json_mode)
    return RequestFacts(
        tenant=req.tenant,
        key_id=req.key_id,
        est_prompt_tokens=req.prompt_tokens or 0,
        has_tools=has_tools,
        json_mode=json_mode,
    )


def _situational(
    base: Mapping[str, BackendFacts], decision: Mapping[str, Any]
) -> dict[str, BackendFacts]:
    """Backend facts as they were for the logged request: the candidates the logged decision
    found unhealthy or with an open circuit stay so (others: as configured, assumed up)."""
    from dataclasses import replace

    out = dict(base)
    for row in decision.get("candidates") or []:
        if not isinstance(row, Mapping) or row.get("name") not in out:
            continue
        name = str(row["name"])
        if row.get("removed_by") == "health":
            out[name] = replace(out[name], healthy=False)
        elif row.get("removed_by") == "circuit":
            out[name] = replace(out[name], circuit_open=True)
    return out


def _estimate(
    req: LoggedRequest, decision: Decision, backend: BackendFacts | None
) -> tuple[Decimal, bool]:
    """(cost, unpriced) of serving ``req`` on the candidate's backend: the recorded token counts
    at its price; without recorded tokens, the decision's expected cost."""
    if backend is not None and backend.priced and req.prompt_tokens is not None:
        assert backend.input_cost_per_token is not None
        assert backend.output_cost_per_token is not None
        return (
            Decimal(req.prompt_tokens) * backend.input_cost_per_token
            + Decimal(req.completion_tokens or 0) * backend.output_cost_per_token,
            False,
        )
    expected = decision.expected_cost_usd
    return (expected, False) if expected is not None else (Decimal(0), True)


def replay_store(
    logged: Sequence[LoggedRequest],
    backends: Mapping[str, BackendFacts],
    candidate: PolicySet,
    *,
    current_rules: PolicySet | None = None,
    source: str = "store",
    notes: Iterable[str] = (),
    meta: Mapping[str, Any] | None = None,
    estimate: Callable[[LoggedRequest, str], float | None] | None = None,
) -> BacktestResult:
    """Logged traffic: what happened (current) vs the candidate (recorded when it picks the
    backend that was called, else estimated from recorded tokens and the stored prediction).

    ``estimate(request, backend)`` replaces the candidate decision's own P(success) for the
    estimated rows (so two candidates can be scored by one estimator)."""
    current: list[Replayed] = []
    cand: list[Replayed] = []
    rules_from = [candidate] + ([current_rules] if current_rules is not None else [])
    for req in logged:
        success = None if req.success is None else float(req.success)
        current.append(
            Replayed(
                req.request_id,
                req.policy,
                req.rule,
                req.backend,
                req.cost_usd,
                success,
                unpriced=req.unpriced,
            )
        )
        request = _logged_request_facts(req, rules_from)
        facts = _situational(backends, req.decision)
        name, rule = replay_select(candidate, request, req.rule, req.policy)
        decision = decide(candidate.policies[name], name, request, facts, req.prediction, rule=rule)
        if decision.backend is None:
            cand.append(
                Replayed(req.request_id, name, rule, None, Decimal(0), 0.0, error=decision.error)
            )
        elif decision.backend == req.backend:
            cand.append(
                Replayed(
                    req.request_id,
                    name,
                    rule,
                    decision.backend,
                    req.cost_usd,
                    success,
                    unpriced=req.unpriced,
                )
            )
        else:
            cost, unpriced = _estimate(req, decision, facts.get(decision.backend))
            p = decision.p_success if estimate is None else estimate(req, decision.backend)
            cand.append(
                Replayed(
                    req.request_id,
                    name,
                    rule,
                    decision.backend,
                    cost,
                    p,
                    estimated=True,
                    unpriced=unpriced,
                )
            )
    return BacktestResult(
        source=source,
        current=Side("current (logged)", None, tuple(current)),
        candidate=Side("candidate", candidate.version, tuple(cand)),
        notes=tuple(notes),
        in_sample=None,
        meta=dict(meta or {}),
    )


@dataclass
class StoreLoad:
    """What :func:`load_logged_requests` read: the replayable requests and what it skipped."""

    requests: list[LoggedRequest]
    skipped_no_decision: int = 0
    skipped_no_prediction: int = 0
    outcomes_table: bool = True


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def load_logged_requests(engine: AsyncEngine, limit: int | None = None) -> StoreLoad:
    """The most recent ``limit`` logged requests (all without a limit), oldest first."""
    from sqlalchemy import inspect, select

    from gateway.analytics.reports import verdicts
    from gateway.store.models import requests as R
    from gateway.store.models import tenants

    async with engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        if "requests" not in tables:
            raise ValueError("no Tollgate store there (no requests table): run tollgate db upgrade")
        first = (
            select(
                R.c.request_id,
                R.c.task_id,
                R.c.key_id,
                R.c.policy,
                R.c.backend,
                R.c.decision,
                R.c.created_at,
                tenants.c.name.label("tenant"),
            )
            .select_from(R.outerjoin(tenants, tenants.c.id == R.c.tenant_id))
            .where(R.c.attempt == 1)
            .order_by(R.c.created_at.desc(), R.c.request_id)
        )
        if limit is not None:
            first = first.limit(limit)
        heads = list(reversed((await conn.execute(first)).mappings().all()))
        load = StoreLoad([], outcomes_table="outcomes" in tables)
        keep = []
        for h in heads:
            decision = h["decision"]
            if not isinstance(decision, Mapping) or not decision.get("backend"):
                load.skipped_no_decision += 1
                continue
            if stored_prediction(decision) is None:
                load.skipped_no_prediction += 1
                continue
            keep.append(h)
        ids = [str(h["request_id"]) for h in keep]
        attempts: dict[str, list[Any]] = {}
        for part in _chunks(ids):
            rows = await conn.execute(
                select(
                    R.c.request_id,
                    R.c.attempt,
                    R.c.backend,
                    R.c.status,
                    R.c.prompt_tokens,
                    R.c.completion_tokens,
                    R.c.cost_usd,
                )
                .where(R.c.request_id.in_(part))
                .order_by(R.c.request_id, R.c.attempt)
            )
            for row in rows.mappings():
                attempts.setdefault(str(row["request_id"]), []).append(row)
        verdict: dict[str, bool] = {}
        if load.outcomes_table:
            v = verdicts(None)
            task_ids = sorted({str(h["task_id"]) for h in keep})
            for part in _chunks(task_ids):
                found = await conn.execute(
                    select(v.c.task_id, v.c.success).where(v.c.task_id.in_(part))
                )
                verdict.update({str(t): bool(ok) for t, ok in found.all()})
    for h in keep:
        decision = dict(h["decision"])
        tries = attempts.get(str(h["request_id"]), [])
        prompt = next((r["prompt_tokens"] for r in tries if r["prompt_tokens"] is not None), None)
        ok = [r for r in tries if r["status"] == "ok" and r["completion_tokens"] is not None]
        done = ok or [r for r in tries if r["completion_tokens"] is not None]
        completion = done[-1]["completion_tokens"] if done else None
        prediction = stored_prediction(decision)
        assert prediction is not None
        load.requests.append(
            LoggedRequest(
                request_id=str(h["request_id"]),
                task_id=str(h["task_id"]),
                tenant=h["tenant"],
                key_id=h["key_id"],
                policy=str(decision.get("policy") or h["policy"]),
                rule=str(decision.get("rule") or DEFAULT_RULE),
                backend=str(decision["backend"]),
                decision=decision,
                prediction=prediction,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_usd=sum(
                    (Decimal(r["cost_usd"]) for r in tries if r["cost_usd"] is not None), Decimal(0)
                ),
                unpriced=any(r["cost_usd"] is None for r in tries),
                success=verdict.get(str(h["task_id"])),
                served_by=next(
                    (str(r["backend"]) for r in reversed(tries) if r["status"] == "ok"), None
                ),
                rejected=tuple(str(r["backend"]) for r in tries if r["status"] == "rejected"),
            )
        )
    return load
