"""Response cache hits on attempt rows: ``requests.cache_hit`` and ``cache_saved_usd`` (what
the reused answer cost when it was made) — gateway.serve.cache, issue 13.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(20, 10)


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(
            sa.Column("cache_hit", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("cache_saved_usd", MONEY, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("cache_saved_usd")
        batch.drop_column("cache_hit")
