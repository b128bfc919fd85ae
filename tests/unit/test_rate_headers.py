"""OpenAI's rate-limit headers from a rate verdict (issue 13): per kind, from the scope with
the least left; resets in OpenAI's duration format; the 429 body and retry headers."""

from __future__ import annotations

from gateway.errors import RateLimited
from gateway.serve.limits import _duration, rate_headers
from gateway.state import RateScope, RateVerdict


def test_durations_read_like_openais() -> None:
    assert [_duration(ms) for ms in (0, 20, 999, 1000, 1500, 59_900, 60_000, 61_000)] == [
        "0ms",
        "20ms",
        "999ms",
        "1s",
        "1.5s",
        "59.9s",
        "1m0s",
        "1m1s",
    ]


def test_headers_come_from_the_scope_with_the_least_left() -> None:
    scopes = [
        RateScope("key:k:requests", 10, 1),
        RateScope("key:k:tokens", 1000, 300),
        RateScope("tenant:t:requests", 100, 1),
        RateScope("tenant:t:tokens", 5000, 300),
    ]
    verdict = RateVerdict(True, used=(4, 300, 98, 4900), reset_ms=(100, 200, 30_000, 45_000))
    assert rate_headers(scopes, verdict) == {
        "x-ratelimit-limit-requests": "100",  # the tenant: 2 left, the key 6
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "30s",
        "x-ratelimit-limit-tokens": "5000",  # the tenant: 100 left, the key 700
        "x-ratelimit-remaining-tokens": "100",
        "x-ratelimit-reset-tokens": "45s",
    }
    only_requests = rate_headers([scopes[0]], RateVerdict(False, (10,), (5,), 0, 5))
    assert only_requests == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "5ms",
    }


def test_rate_limited_is_openais_429() -> None:
    err = RateLimited("slow down", retry_after_ms=1200, kind="tokens", headers={"x": "1"})
    assert err.status == 429
    assert err.body() == {
        "error": {
            "message": "slow down",
            "type": "tokens",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert err.headers == {"x": "1", "retry-after": "2", "retry-after-ms": "1200"}
