"""A calibration's statistics: the points measured, the operating point, the price, the table.

The sweep (``gateway.analytics.calibrate``) measures one point per concurrency; this module
owns what follows from the measurements, pure arithmetic over them: a :class:`Point` from its
requests' :class:`Sample` s (tokens/s, requests/s, TTFT and latency percentiles), when a
rising sweep has saturated, the operating point and its price, the :class:`Calibration`
record, and the table the CLI and the GPU bench print.

The operating point is the highest-throughput point whose p95 latency meets the SLO. Its price
follows from one identity: at the operating point the tokens served in one second cost one
second of the GPUs. A prefill probe (the same mix with ``max_tokens=1``) measures prefill
throughput P; the time share of prefill at the operating point is f = input_tps / P, so
USD per input token = gpu_usd_per_s / P and USD per output token = gpu_usd_per_s * (1 - f) /
output_tps. (Pricing input and output each at the full GPU rate, as a declared
``input_tokens_per_second`` does, would bill every second of a mixed load twice.)

Standard library only (it travels to the GPU machine with ``gateway.analytics.calibrate``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MAX_PREFILL_SHARE = 0.9  # a probe this close to the mixed load's input rate is noise


@dataclass(frozen=True)
class Sample:
    """One request's outcome."""

    ok: bool
    latency_s: float
    ttft_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    counted: bool = False  # the server sent no usage; tokens were counted from the stream
    error: str | None = None


@dataclass
class Point:
    """Measured at one concurrency."""

    concurrency: int
    requests: int
    errors: int
    wall_s: float
    output_tokens_per_second: float
    input_tokens_per_second: float
    requests_per_second: float
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    mean_output_tokens: float
    usage_counted: bool = False
    first_error: str | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 1.0


@dataclass
class Calibration:
    """The outcome of one calibration run (money as float here; stored as Decimal)."""

    backend: str
    engine: str
    model: str
    gpu_hour_usd: float
    gpus: int
    slo_p95_ms: float
    slo_met: bool
    concurrency: int
    output_tokens_per_second: float
    input_tokens_per_second: float
    requests_per_second: float
    ttft_p95_ms: float | None
    latency_p95_ms: float | None
    prefill_tokens_per_second: float | None
    prefill_share: float
    priced_input_tokens_per_second: float
    priced_output_tokens_per_second: float
    usd_per_mtok_input: float
    usd_per_mtok_output: float
    mix: str
    points: list[dict[str, Any]] = field(default_factory=list)
    created_at: str = ""
    version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- one point


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarise(concurrency: int, samples: list[Sample], wall_s: float) -> Point:
    ok = [s for s in samples if s.ok]
    wall = max(wall_s, 1e-9)
    out_tokens = sum(s.completion_tokens for s in ok)

    def ms(values: list[float], q: float) -> float | None:
        p = percentile(values, q)
        return None if p is None else round(p * 1000, 1)

    ttfts = [s.ttft_s for s in ok if s.ttft_s is not None]
    lats = [s.latency_s for s in ok]
    errors = [s for s in samples if not s.ok]
    return Point(
        concurrency=concurrency,
        requests=len(samples),
        errors=len(errors),
        wall_s=round(wall, 3),
        output_tokens_per_second=round(out_tokens / wall, 2),
        input_tokens_per_second=round(sum(s.prompt_tokens for s in ok) / wall, 2),
        requests_per_second=round(len(ok) / wall, 3),
        ttft_p50_ms=ms(ttfts, 0.5),
        ttft_p95_ms=ms(ttfts, 0.95),
        latency_p50_ms=ms(lats, 0.5),
        latency_p95_ms=ms(lats, 0.95),
        mean_output_tokens=round(out_tokens / len(ok), 1) if ok else 0.0,
        usage_counted=any(s.counted for s in ok),
        first_error=errors[0].error if errors else None,
    )


# --------------------------------------------------------------------------- the run


def choose(points: list[Point], slo_p95_ms: float) -> tuple[Point, bool]:
    """The operating point: the most output tokens/s among points that meet the SLO (p95
    latency, at most 1% errors); when none does, the lowest concurrency that answered."""
    meets = [
        p
        for p in points
        if p.latency_p95_ms is not None and p.latency_p95_ms <= slo_p95_ms and p.error_rate <= 0.01
    ]
    if meets:
        return max(meets, key=lambda p: (p.output_tokens_per_second, -p.concurrency)), True
    answered = [p for p in points if p.requests > p.errors] or points
    return min(answered, key=lambda p: p.concurrency), False


def prices(
    point: Point, prefill_tps: float | None, gpu_hour_usd: float, gpus: int
) -> dict[str, float]:
    """USD per million tokens such that the operating point's tokens cost the GPUs' time."""
    per_second = gpu_hour_usd * gpus / 3600.0
    out_tps, in_tps = point.output_tokens_per_second, point.input_tokens_per_second
    if not prefill_tps or prefill_tps <= 0 or in_tps <= 0 or out_tps <= 0:
        raise ValueError(
            "cannot price: the operating point or the prefill probe served no tokens "
            f"(output {out_tps} tok/s, input {in_tps} tok/s, prefill {prefill_tps} tok/s)"
        )
    share = min(in_tps / prefill_tps, MAX_PREFILL_SHARE)
    priced_in, priced_out = in_tps / share, out_tps / (1.0 - share)
    return {
        "prefill_share": round(share, 4),
        "priced_input_tokens_per_second": round(priced_in, 2),
        "priced_output_tokens_per_second": round(priced_out, 2),
        "usd_per_mtok_input": round(per_second / priced_in * 1e6, 6),
        "usd_per_mtok_output": round(per_second / priced_out * 1e6, 6),
    }


def saturated(points: list[Point], slo_p95_ms: float) -> bool:
    """Stop rising: errors, latency far past the SLO, or throughput flat for two steps."""
    last = points[-1]
    if last.error_rate > 0.05:
        return True
    if last.latency_p95_ms is not None and last.latency_p95_ms > 2 * slo_p95_ms:
        return True
    if len(points) >= 3:
        a, b, c = (p.output_tokens_per_second for p in points[-3:])
        return b <= a * 1.03 and c <= b * 1.03
    return False


def table(cal: Calibration) -> str:
    """The calibration as a plain-text table (the CLI and the GPU bench print it)."""
    head = (
        f"{'conc':>5} {'req':>5} {'err':>4} {'out tok/s':>10} {'in tok/s':>10} {'req/s':>7} "
        f"{'ttft p50':>9} {'ttft p95':>9} {'lat p50':>9} {'lat p95':>9}"
    )

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    lines = [head]
    for p in cal.points:
        mark = " <- operating point" if p["concurrency"] == cal.concurrency else ""
        lines.append(
            f"{p['concurrency']:>5} {p['requests']:>5} {p['errors']:>4} "
            f"{p['output_tokens_per_second']:>10.1f} {p['input_tokens_per_second']:>10.1f} "
            f"{p['requests_per_second']:>7.2f} {f(p['ttft_p50_ms']):>9} {f(p['ttft_p95_ms']):>9} "
            f"{f(p['latency_p50_ms']):>9} {f(p['latency_p95_ms']):>9}{mark}"
        )
    slo = "met" if cal.slo_met else "NOT met at any point (lowest concurrency kept)"
    lines.append(
        f"SLO p95 latency <= {cal.slo_p95_ms:.0f} ms: {slo}; prefill probe "
        f"{f(cal.prefill_tokens_per_second)} tok/s (prefill share {cal.prefill_share:.1%})"
    )
    lines.append(
        f"at ${cal.gpu_hour_usd:.2f}/GPU-hour x {cal.gpus}: "
        f"${cal.usd_per_mtok_input:.4f} per M input tokens, "
        f"${cal.usd_per_mtok_output:.4f} per M output tokens ({cal.mix})"
    )
    return "\n".join(lines)
