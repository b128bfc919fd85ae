"""Daily report roll-ups (attempt cells and task cells per day) and their refresh state.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(20, 10)
LATENCY_BUCKETS = 64  # gateway.analytics.reports.LATENCY_BUCKETS


def _cell() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("tenant_id", sa.String(32), primary_key=True),
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("policy", sa.String(128), primary_key=True),
        sa.Column("backend", sa.String(128), primary_key=True),
    ]


def upgrade() -> None:
    op.create_table(
        "report_attempts_daily",
        *_cell(),
        sa.Column("attempts", sa.BigInteger, nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.Column("extra", sa.BigInteger, nullable=False),
        sa.Column("pt", sa.BigInteger, nullable=False),
        sa.Column("ct", sa.BigInteger, nullable=False),
        sa.Column("ok_pt", sa.BigInteger, nullable=False),
        sa.Column("ok_ct", sa.BigInteger, nullable=False),
        sa.Column("spend", MONEY, nullable=False),
        sa.Column("unpriced", sa.BigInteger, nullable=False),
        *[sa.Column(f"l{k}", sa.Integer, nullable=False) for k in range(LATENCY_BUCKETS)],
    )
    op.create_table(
        "report_tasks_daily",
        *_cell(),
        sa.Column("tasks", sa.BigInteger, nullable=False),
        sa.Column("succeeded", sa.BigInteger, nullable=False),
        sa.Column("failed", sa.BigInteger, nullable=False),
        sa.Column("task_spend", MONEY, nullable=False),
    )
    op.create_table(
        "report_rollup_days",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "report_rollup_state",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    # outcomes changed since the last refresh, across tenants; tasks by first-seen day
    op.create_index("ix_outcomes_updated", "outcomes", ["updated_at"])
    op.create_index("ix_tasks_created", "tasks", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_tasks_created", table_name="tasks")
    op.drop_index("ix_outcomes_updated", table_name="outcomes")
    op.drop_table("report_rollup_state")
    op.drop_table("report_rollup_days")
    op.drop_table("report_tasks_daily")
    op.drop_table("report_attempts_daily")
