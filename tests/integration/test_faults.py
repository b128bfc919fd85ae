"""The fault-injection suite (``bench/faults.py``) at a test's size, on private PostgreSQL and
Redis servers the suite itself starts, stops, kills and restarts, with real ``tollgate serve``
replicas (three behind nginx for the replica kill). The goals of issue 11, asserted."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from bench import faults
from bench.faults import HOLD_TTL_S, Stack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
        reason="nginx (Debian package nginx-light) is installed by .ci/run",
    ),
]
SCALE = 0.3


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with faults.fault_stack() as st:
        yield st


def test_known_keys_ride_out_a_15_s_database_outage(stack: Stack) -> None:
    row = faults.case_db_outage(stack, SCALE)
    assert row.requests > 50
    assert row.success >= 0.95, row
    assert row.s5xx == 0 and row.rows_lost == 0, row


def test_a_redis_crash_never_overspends_and_answers_503_with_retry_after(stack: Stack) -> None:
    row = faults.case_redis_kill(stack, SCALE)
    assert row.overshoot_usd is not None and row.overshoot_usd <= Decimal(0), row
    assert row.s5xx == row.s503_retry, row  # while Redis is down: 503 + retry-after, no 500
    assert row.rows_lost == 0, row
    assert row.recovery_s is not None and row.recovery_s < 10, row


def test_a_hostile_tenant_gets_4xx_and_harms_no_one(stack: Stack) -> None:
    row = faults.case_hostile_tenant(stack, SCALE)
    assert row.s5xx == 0, row.notes
    assert row.ok == row.requests, row.notes  # the innocent tenant: every request answered
    assert row.extra["circuit"] == "closed"
    statuses = row.extra["hostile_statuses"]
    assert statuses.get(400, 0) >= row.extra["hostile_requests"] // 2, statuses


def test_load_gets_no_5xx_and_every_answer_is_recorded(stack: Stack) -> None:
    row = faults.case_load(stack, SCALE)
    assert row.s5xx == 0 and row.rows_lost == 0, row.notes
    assert row.ok == row.requests, row.notes


def test_kill_9_of_a_replica_loses_no_row_and_its_holds_lapse(stack: Stack) -> None:
    row = faults.case_replica_kill(stack, SCALE)
    assert row.rows_lost == 0 and row.paid_unrecorded == 0, row.notes
    assert row.recovery_s is not None and row.recovery_s <= HOLD_TTL_S + 3, row.notes
    assert row.success >= 0.9, row.notes  # only the calls in flight on the killed replica fail
