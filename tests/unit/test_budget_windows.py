"""Budget windows (issue 13): calendar days and months in the configured time zone — across
UTC offsets, half-hour zones, DST changes, month and year ends — the scope ids that embed
them, the ``budgets:`` config section's errors (with the YAML path), and the request fields a
reservation must bound (issue 11)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from gateway.config import ConfigError, load_config
from gateway.config.budgets import BudgetsConfig, period_label, scope_id, window_bounds
from gateway.errors import InvalidRequest
from gateway.serve.request import MAX_OUTPUT_TOKENS, parse_request

PARIS = ZoneInfo("Europe/Paris")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "zone", "label", "start", "end"),
    [
        # UTC: the day is the UTC date
        (
            utc(2026, 11, 30, 23, 59, 59),
            "UTC",
            "day:2026-11-30",
            utc(2026, 11, 30),
            utc(2026, 12, 1),
        ),
        (utc(2026, 12, 1, 0, 0, 0), "UTC", "day:2026-12-01", utc(2026, 12, 1), utc(2026, 12, 2)),
        # Paris (UTC+1 in winter): 23:30 UTC on Nov 30 is already Dec 1 there
        (
            utc(2026, 11, 30, 23, 30),
            "Europe/Paris",
            "day:2026-12-01",
            utc(2026, 11, 30, 23),
            utc(2026, 12, 1, 23),
        ),
        (
            utc(2026, 11, 30, 22, 59),
            "Europe/Paris",
            "day:2026-11-30",
            utc(2026, 11, 29, 23),
            utc(2026, 11, 30, 23),
        ),
        # spring forward: a 23-hour day; fall back: a 25-hour day
        (
            utc(2026, 3, 29, 12),
            "Europe/Paris",
            "day:2026-03-29",
            utc(2026, 3, 28, 23),
            utc(2026, 3, 29, 22),
        ),
        (
            utc(2026, 10, 25, 12),
            "Europe/Paris",
            "day:2026-10-25",
            utc(2026, 10, 24, 22),
            utc(2026, 10, 25, 23),
        ),
        # behind UTC: 03:00 UTC is still the previous day in Los Angeles
        (
            utc(2026, 7, 1, 3),
            "America/Los_Angeles",
            "day:2026-06-30",
            utc(2026, 6, 30, 7),
            utc(2026, 7, 1, 7),
        ),
        # half-hour zone
        (
            utc(2026, 1, 1, 18, 29),
            "Asia/Kolkata",
            "day:2026-01-01",
            utc(2025, 12, 31, 18, 30),
            utc(2026, 1, 1, 18, 30),
        ),
        (
            utc(2026, 1, 1, 18, 30),
            "Asia/Kolkata",
            "day:2026-01-02",
            utc(2026, 1, 1, 18, 30),
            utc(2026, 1, 2, 18, 30),
        ),
        # UTC+14: ahead by more than half a day
        (
            utc(2026, 11, 30, 10),
            "Pacific/Kiritimati",
            "day:2026-12-01",
            utc(2026, 11, 30, 10),
            utc(2026, 12, 1, 10),
        ),
    ],
)
def test_day_windows_across_time_zones(
    now: datetime, zone: str, label: str, start: datetime, end: datetime
) -> None:
    z = ZoneInfo(zone)
    assert period_label("day", now, z) == label
    assert window_bounds("day", now, z) == (start, end)
    lo, hi = window_bounds("day", now, z)
    assert lo is not None and hi is not None and lo <= now < hi


@pytest.mark.parametrize(
    ("now", "zone", "label", "start", "end"),
    [
        (utc(2026, 1, 31, 23, 59), "UTC", "month:2026-01", utc(2026, 1, 1), utc(2026, 2, 1)),
        (utc(2026, 2, 28, 12), "UTC", "month:2026-02", utc(2026, 2, 1), utc(2026, 3, 1)),
        (utc(2028, 2, 29, 12), "UTC", "month:2028-02", utc(2028, 2, 1), utc(2028, 3, 1)),
        # year end in UTC, and in Paris where New Year came an hour earlier
        (utc(2026, 12, 31, 23, 30), "UTC", "month:2026-12", utc(2026, 12, 1), utc(2027, 1, 1)),
        (
            utc(2026, 12, 31, 23, 30),
            "Europe/Paris",
            "month:2027-01",
            utc(2026, 12, 31, 23),
            utc(2027, 1, 31, 23),
        ),
        # a month that spans the DST change: starts at UTC+2, ends at UTC+1
        (
            utc(2026, 10, 15),
            "Europe/Paris",
            "month:2026-10",
            utc(2026, 9, 30, 22),
            utc(2026, 10, 31, 23),
        ),
        (
            utc(2026, 4, 30, 22, 30),
            "Europe/Paris",
            "month:2026-05",
            utc(2026, 4, 30, 22),
            utc(2026, 5, 31, 22),
        ),
    ],
)
def test_month_windows_at_month_and_year_ends(
    now: datetime, zone: str, label: str, start: datetime, end: datetime
) -> None:
    z = ZoneInfo(zone)
    assert period_label("month", now, z) == label
    assert window_bounds("month", now, z) == (start, end)


def test_scope_ids_embed_the_period_and_lifetime_keeps_the_plain_id() -> None:
    now = utc(2026, 11, 30, 23, 30)
    assert scope_id("key", "k1", "total", now, PARIS) == "key:k1"
    assert scope_id("key", "k1", "day", now, PARIS) == "key:k1:day:2026-12-01"
    assert scope_id("tenant", "t1", "day", now, ZoneInfo("UTC")) == "tenant:t1:day:2026-11-30"
    assert scope_id("tag", "feature-x", "month", now, PARIS) == "tag:feature-x:month:2026-12"
    assert window_bounds("total", now, PARIS) == (None, None)


def _config_error(tmp_path: Path, budgets: object) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {"backends": [{"name": "a", "model": "openai/x"}], "budgets": budgets},
            sort_keys=False,
        )
    )
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    return str(err.value)


def test_budgets_config_errors_name_the_offending_path(tmp_path: Path) -> None:
    msg = _config_error(tmp_path, {"timezone": "Mars/Olympus"})
    assert "budgets.timezone" in msg and "unknown time zone" in msg
    msg = _config_error(
        tmp_path, {"limits": [{"scope": "tenant", "name": "a", "max_usd": 1, "window": "week"}]}
    )
    assert "budgets.limits[0].window" in msg
    msg = _config_error(
        tmp_path,
        {
            "limits": [
                {"scope": "tenant", "name": "a", "max_usd": 1},
                {"scope": "team", "name": "b", "max_usd": 1},
            ]
        },
    )
    assert "budgets.limits[1].scope" in msg
    msg = _config_error(tmp_path, {"limits": [{"scope": "tag", "name": "x", "max_usd": -1}]})
    assert "budgets.limits[0].max_usd" in msg
    msg = _config_error(
        tmp_path,
        {"limits": [{"scope": "tag", "name": "x", "max_usd": 1, "window": "day"}] * 2},
    )
    assert "budgets.limits" in msg and "already has a day limit" in msg


def test_budgets_config_defaults_to_utc() -> None:
    cfg = BudgetsConfig()
    assert cfg.timezone == "UTC" and cfg.limits == ()
    cfg = BudgetsConfig.model_validate(
        {
            "timezone": "Europe/Paris",
            "limits": [{"scope": "policy", "name": "p", "max_usd": "2.5", "window": "month"}],
        }
    )
    assert cfg.zone == PARIS and cfg.limits[0].max_usd == Decimal("2.5")


# -- what a reservation must bound (issue 11) ---------------------------------------------------
def _parse(body: dict[str, object], headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return parse_request("chat", {**base, **body}, headers or {}, streamable=True)


def test_the_output_cap_is_the_largest_field_an_upstream_may_obey() -> None:
    assert _parse({"max_tokens": 1, "max_completion_tokens": 5000}).max_tokens == 5000
    assert _parse({"max_completion_tokens": 7, "max_tokens": 70}).max_tokens == 70
    assert _parse({"max_output_tokens": 900}).max_tokens == 900
    assert _parse({}).max_tokens is None
    assert _parse({"n": 3}).answers == 3


@pytest.mark.parametrize(
    "value",
    [1e30, 10**30, float("nan"), float("inf"), -1, 0, 2.5, "100", True, MAX_OUTPUT_TOKENS + 1],
)
def test_absurd_output_caps_are_a_400(value: object) -> None:
    for field in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        with pytest.raises(InvalidRequest) as err:
            _parse({field: value})
        assert err.value.param == field


def test_request_tags_from_the_header_or_metadata() -> None:
    assert _parse({}, {"x-tollgate-tags": "a, b,,c"}).tags == {"a", "b", "c"}
    assert _parse({"metadata": {"tags": ["x", "y"]}}).tags == {"x", "y"}
    assert _parse({"metadata": {"tags": "x,y"}}).tags == {"x", "y"}
    # the header wins over the body
    assert _parse({"metadata": {"tags": ["x"]}}, {"x-tollgate-tags": "h"}).tags == {"h"}
    with pytest.raises(InvalidRequest):
        _parse({"metadata": {"tags": [1]}})
    with pytest.raises(InvalidRequest):
        _parse({}, {"x-tollgate-tags": "bad tag!"})
    with pytest.raises(InvalidRequest):
        _parse({}, {"x-tollgate-tags": ",".join(f"t{i}" for i in range(17))})
