"""Plain-text rendering of a Decision for ``tollgate route explain`` (the CLI prints it)."""

from __future__ import annotations

from decimal import Decimal

from policies.decision import Decision


def _usd(value: Decimal | None) -> str:
    return "unpriced" if value is None else f"{value:.6f}"


def render_table(decision: Decision) -> str:
    """One line per candidate (operator order), then the choice, fallbacks and reason."""
    head = ("", "candidate", "P(success)", "exp. cost $", "score $", "status")
    lines: list[tuple[str, ...]] = [head]
    for row in decision.candidates:
        if not row.eligible:
            status = f"removed: {row.removed_by} ({row.detail})"
        elif row.adequate is None:
            status = "eligible"
        else:
            status = "adequate" if row.adequate else "not adequate"
        mark = "*" if row.name == decision.backend else ""
        p = "n/a" if row.p_success is None else f"{row.p_success:.3f}"
        score = "" if row.score is None else _usd(row.score)
        lines.append((mark, row.name, p, _usd(row.expected_cost_usd), score, status))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    out = [
        "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True))
        + "  "
        + line[-1]
        for line in lines
    ]
    out.append("")
    out.append(f"policy     {decision.policy}@{decision.policy_version} (rule {decision.rule})")
    out.append(f"objective  {decision.objective}")
    out.append(f"predictor  {decision.predictor_version or 'none'}")
    out.append(
        f"backend    {decision.backend or '-'}"
        + (f"  [{decision.error}]" if decision.error else "")
    )
    out.append(f"fallbacks  {', '.join(decision.fallbacks) or '-'}")
    out.append(f"escalation {', '.join(decision.escalation) or '-'}")
    out.append(f"reason     {decision.reason}")
    return "\n".join(line.rstrip() for line in out)
