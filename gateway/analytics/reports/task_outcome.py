"""Which outcome decides a task: client feedback first, then the judge, then validators; within
a source a task-level verdict beats a per-request one, and the latest wins. A task with no
outcome row has no verdict (unknown), never a success. Reports, backtests and learning from
the store all read outcomes through :func:`verdicts`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select

from gateway.store.models import outcomes


def verdicts(tenant_id: str | None, task_ids: Any = None, since: datetime | None = None) -> Any:
    """Subquery (task_id, success, source): each task's deciding outcome row."""
    O = outcomes  # noqa: E741
    source_rank = case((O.c.source == "feedback", 0), (O.c.source == "judge", 1), else_=2)
    scope_rank = case((O.c.scope == "", 0), else_=1)
    rn = func.row_number().over(
        partition_by=O.c.task_id, order_by=(source_rank, scope_rank, O.c.updated_at.desc())
    )
    inner = select(O.c.task_id, O.c.success, O.c.source, rn.label("rn"))
    if tenant_id is not None:
        inner = inner.where(O.c.tenant_id == tenant_id)
    if task_ids is not None:
        inner = inner.where(O.c.task_id.in_(task_ids))
    if since is not None:
        inner = inner.where(O.c.updated_at >= since)
    sub = inner.subquery("ranked_outcomes")
    return (
        select(sub.c.task_id, sub.c.success, sub.c.source).where(sub.c.rn == 1).subquery("verdict")
    )
