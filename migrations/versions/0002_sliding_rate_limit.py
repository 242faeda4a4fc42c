"""upload_rate_limits: one row per address with the stamps of its recent uploads

The fixed one-minute windows admitted up to twice the limit around a minute boundary; the
stamps of the last minute let service/ratelimit.py enforce the limit over any 60 s interval.
The counters are short-lived by nature, so neither direction carries them over: after an
upgrade or a downgrade every address starts with a full budget.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_table("upload_rate_limits")
    op.create_table(
        "upload_rate_limits",
        sa.Column("client_ip", postgresql.INET(), primary_key=True),
        sa.Column("stamps", postgresql.ARRAY(sa.DateTime(timezone=True)), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("upload_rate_limits")
    op.create_table(
        "upload_rate_limits",
        sa.Column("client_ip", postgresql.INET(), primary_key=True),
        sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )
