"""Outcomes (feedback, validator, judge verdicts per task) and the indexes the reports use.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(20, 10)


def upgrade() -> None:
    op.create_table(
        "outcomes",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(32), nullable=False),
        sa.Column("task_id", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(32), nullable=True),
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("success", sa.Boolean, nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("comment", sa.String(4000), nullable=True),
        sa.Column("detail", sa.JSON, nullable=True),
        sa.Column("backend", sa.String(128), nullable=True),
        sa.Column("cost_usd", MONEY, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("task_id", "source", "scope", name="uq_outcomes_task_source_scope"),
    )
    op.create_index("ix_outcomes_tenant_updated", "outcomes", ["tenant_id", "updated_at"])
    # admin-wide reports filter attempts by time alone
    op.create_index("ix_requests_created", "requests", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_requests_created", table_name="requests")
    op.drop_index("ix_outcomes_tenant_updated", table_name="outcomes")
    op.drop_table("outcomes")
