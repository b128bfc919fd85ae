"""Operator limits on keys and tenants (issue 13): requests and tokens per minute, the
backends and policies a key or tenant may use, and the window of a key's budget.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_LIMITS = ("rpm", "tpm", "allowed_backends", "allowed_policies")


def _columns() -> list[sa.Column]:
    return [
        sa.Column("rpm", sa.Integer, nullable=True),
        sa.Column("tpm", sa.Integer, nullable=True),
        sa.Column("allowed_backends", sa.JSON, nullable=True),
        sa.Column("allowed_policies", sa.JSON, nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        for column in _columns():
            batch.add_column(column)
    with op.batch_alter_table("api_keys") as batch:
        for column in _columns():
            batch.add_column(column)
        batch.add_column(
            sa.Column("budget_window", sa.String(16), nullable=False, server_default="total")
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("budget_window")
        for name in reversed(_LIMITS):
            batch.drop_column(name)
    with op.batch_alter_table("tenants") as batch:
        for name in reversed(_LIMITS):
            batch.drop_column(name)
