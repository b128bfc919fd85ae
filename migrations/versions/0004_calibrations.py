"""Calibrations of self-hosted backends (``tollgate calibrate``): versioned, dated, shared by
every replica (gateway.store.calibrations).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(20, 10)


def upgrade() -> None:
    op.create_table(
        "calibrations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("backend", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("engine", sa.String(16), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("gpu_hour_usd", MONEY, nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("slo_p95_ms", sa.Float, nullable=False),
        sa.Column("slo_met", sa.Boolean, nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("output_tps", sa.Float, nullable=False),
        sa.Column("input_tps", sa.Float, nullable=False),
        sa.Column("priced_output_tps", sa.Float, nullable=False),
        sa.Column("priced_input_tps", sa.Float, nullable=False),
        sa.Column("usd_per_mtok_input", MONEY, nullable=False),
        sa.Column("usd_per_mtok_output", MONEY, nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.UniqueConstraint("backend", "version", name="uq_calibrations_backend_version"),
    )


def downgrade() -> None:
    op.drop_table("calibrations")
