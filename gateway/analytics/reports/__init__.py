"""Spend and task reports over the store: the SQL behind ``tollgate report``, ``GET /v1/spend``
and ``/dashboard``, and the daily roll-ups that keep them fast on millions of rows.

The package, one thing per module: ``query`` (what is asked), ``results`` (what a report
holds), ``task_outcome`` (which outcome decides a task), ``cells`` (the per-cell SQL),
``latency`` (histogram buckets), ``rollups`` (daily summaries), ``assemble`` (building a
report), ``judge_costs``, ``cache_savings``, ``failures`` and ``from_store`` (a report as the
CLI asks for it).
Callers import the public names from here.

Definitions (docs/reports.md explains them with examples):

* A task's **outcome** is decided from its ``outcomes`` rows: client feedback first, then the
  judge, then validators; within a source a task-level verdict beats a per-request one, and the
  latest wins. A task with no outcome row is **unknown** — never counted as a success.
* Attempt figures (requests, attempts, tokens, spend, errors, latency) are counted where the
  attempt happened: its day, tenant, key, policy and backend. Task figures (tasks, succeeded,
  failed, whole-task spend) are counted once per task, in the cell of the day the task was first
  seen and of its *final* attempt (the last successful one, else the last one) — so grouping
  by backend counts a task for the backend that answered it.
* **Cost per successful task** = money spent ÷ tasks that succeeded, ``None`` when no task is
  known to have succeeded. In the *spend* report the money is the group's attempt spend (a
  backend's failed attempts included); in the *tasks* report it is the whole spend of the
  group's tasks (every attempt, retry and fallback, on any backend).
* **Success rate** = succeeded ÷ tasks with a known outcome (``None`` when none is known);
  ``unknown`` says how many tasks it leaves out.
* **Fallback rate** = extra attempts (retries and fallbacks: attempt number > 1) ÷ attempts;
  **error rate** = failed attempts ÷ attempts. Latency percentiles are over successful
  attempts, from log-scale buckets (each 1.25 times wider: within about ±12%).
* **Judge spend** (spend reports): the judge's verdicts recorded in the range and what its calls
  cost. It is evaluation overhead, recorded with the verdicts (``outcomes.cost_usd``), never as
  attempts: traffic spend and cost per successful task do not include it.
* **Cache** (spend reports): response-cache hits in the range — attempt rows marked
  ``cache_hit``, recorded at zero cost — and what they saved: the cost of the reused answers
  when they were made. Hits count as requests and attempts of their group at zero spend.
* **Savings**: what the recorded traffic would have cost on a baseline backend, priced from the
  recorded token counts of each successful attempt at the baseline's prices (the baseline
  defaults to the most expensive backend), against what it did cost.

Roll-ups (``rollups``): closed UTC days are summarised per cell; a report reads whole days from
them and the rest from raw rows, with the same cell queries, so both paths give the same figures.
"""

from gateway.analytics.reports.assemble import most_expensive, report
from gateway.analytics.reports.failures import recent_failures
from gateway.analytics.reports.from_store import UnknownTenant, refresh_store, store_report
from gateway.analytics.reports.judge_costs import judge_spend
from gateway.analytics.reports.latency import histogram_percentile, latency_bucket
from gateway.analytics.reports.query import GROUP_BYS, GroupBy, ReportKind, ReportQuery, parse_when
from gateway.analytics.reports.results import (
    CacheSavings,
    GroupStats,
    JudgeSpend,
    Report,
    Savings,
)
from gateway.analytics.reports.rollups import refresh_rollups
from gateway.analytics.reports.task_outcome import verdicts

__all__ = [
    "GROUP_BYS",
    "CacheSavings",
    "GroupBy",
    "GroupStats",
    "JudgeSpend",
    "Report",
    "ReportKind",
    "ReportQuery",
    "Savings",
    "UnknownTenant",
    "histogram_percentile",
    "judge_spend",
    "latency_bucket",
    "most_expensive",
    "parse_when",
    "recent_failures",
    "refresh_rollups",
    "refresh_store",
    "report",
    "store_report",
    "verdicts",
]
