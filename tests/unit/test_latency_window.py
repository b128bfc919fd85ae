"""The local latency window's p95 (gateway.latency): remembered between samples, never stale."""

from gateway.latency import MIN_OBSERVATIONS, LatencyWindow, p95_of


def test_p95_follows_every_new_sample() -> None:
    window = LatencyWindow(size=50)
    assert window.p95("a") is None
    for i in range(MIN_OBSERVATIONS):
        window.observe("a", float(i))
    first = window.p95("a")
    assert first == p95_of([float(i) for i in range(MIN_OBSERVATIONS)])
    assert window.p95("a") == first  # asked again, no new sample: the same figure
    window.observe("a", 1000.0)
    window.observe("a", 1000.0)  # slow calls move the p95 at once
    assert window.p95("a") == 1000.0 != first
    assert window.p95("b") is None  # other backends keep their own window
    for _ in range(60):  # the window keeps the newest 50: old samples leave it
        window.observe("a", 5.0)
    assert window.p95("a") == 5.0
