"""``POST /v1/feedback``: the client's verdict on one of its tasks (by task id, or by the id of
one of its requests), recorded as a task outcome (``gateway.outcomes.recording``: idempotent —
the same feedback twice answers ``"status": "unchanged"``, a different verdict is a correction,
``"updated"``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.errors import NotFound
from gateway.http.openai import runtime_of
from gateway.outcomes.recording import MAX_COMMENT, Outcome, record_outcome
from gateway.pricing import format_usd
from gateway.runtime import Runtime
from gateway.serve.context import task_uuid
from gateway.serve.request import MAX_TASK_ID
from gateway.store import queries

router = APIRouter()


class FeedbackRequest(BaseModel):
    """Body of ``POST /v1/feedback``: exactly one of request_id / task_id, and the verdict."""

    model_config = ConfigDict(extra="forbid")

    request_id: str | None = Field(default=None, min_length=1, max_length=32)
    task_id: str | None = Field(default=None, min_length=1, max_length=MAX_TASK_ID)
    success: bool
    score: float | None = Field(default=None, ge=0, le=1)
    comment: str | None = Field(default=None, max_length=MAX_COMMENT)

    @model_validator(mode="after")
    def _one_id(self) -> FeedbackRequest:
        if (self.request_id is None) == (self.task_id is None):
            raise ValueError("give exactly one of request_id (x-tollgate-request-id) or task_id")
        return self


async def resolve_task(
    rt: Runtime, tenant_id: str, *, request_id: str | None, task_ref: str | None
) -> tuple[str, str]:
    """(internal task id, client task id) of one of this tenant's requests or tasks; 404 else."""
    if request_id is not None:
        found = await queries.peer_visible(
            lambda: queries.task_of_request(rt.engine, tenant_id, request_id)
        )
        if found is None:
            raise NotFound(f"no request {request_id!r} for this tenant", param="request_id")
        return found
    assert task_ref is not None
    internal = task_uuid(tenant_id, task_ref)
    if not await queries.peer_visible(
        lambda: queries.tenant_has_task(rt.engine, tenant_id, internal)
    ):
        raise NotFound(f"no task {task_ref!r} for this tenant", param="task_id")
    return internal, task_ref


def render_outcome(row: dict[str, Any], task_ref: str, status: str) -> dict[str, Any]:
    return {
        "object": "tollgate.outcome",
        "id": row["id"],
        "status": status,
        "task_id": task_ref,
        "request_id": row["request_id"],
        "source": row["source"],
        "success": bool(row["success"]),
        "score": row["score"],
        "comment": row["comment"],
        "cost_usd": format_usd(Decimal(str(row["cost_usd"])))
        if row["cost_usd"] is not None
        else None,
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


async def settle_writes(writer: Any) -> None:
    """Every row submitted so far is in the store (``RecordWriter.flush`` also waits for a
    batch its own loop is writing at this moment)."""
    await writer.flush()


@router.post("/v1/feedback", tags=["tollgate"])
async def post_feedback(
    request: Request, payload: FeedbackRequest, authorization: str | None = Header(default=None)
) -> JSONResponse:
    """Record the client's verdict on one of its tasks (by task id or by one request's id)."""
    rt = runtime_of(request)
    principal = await rt.auth.authenticate(authorization)
    await settle_writes(rt.writer)  # a request answered a moment ago must be found
    internal, ref = await resolve_task(
        rt, principal.tenant_id, request_id=payload.request_id, task_ref=payload.task_id
    )
    status, row = await record_outcome(
        rt.engine,
        Outcome(
            tenant_id=principal.tenant_id,
            task_id=internal,
            source="feedback",
            success=payload.success,
            request_id=payload.request_id,
            score=payload.score,
            comment=payload.comment,
        ),
    )
    return JSONResponse(
        render_outcome(row, ref, status), status_code=201 if status == "created" else 200
    )
