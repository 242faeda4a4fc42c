"""images, image_blobs and upload_rate_limits

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("delete_token_hash", sa.String(64), nullable=False),
        sa.Column("upload_ip", postgresql.INET(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.CheckConstraint("file_size > 0", name="ck_images_file_size_positive"),
        sa.CheckConstraint("width > 0 AND height > 0", name="ck_images_dimensions_positive"),
    )
    op.create_index(
        "ix_images_created_at_id",
        "images",
        [sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index("ix_images_sha256", "images", ["sha256"])
    op.create_table(
        "image_blobs",
        sa.Column(
            "image_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("images.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "upload_rate_limits",
        sa.Column("client_ip", postgresql.INET(), primary_key=True),
        sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("upload_rate_limits")
    op.drop_table("image_blobs")
    op.drop_index("ix_images_sha256", table_name="images")
    op.drop_index("ix_images_created_at_id", table_name="images")
    op.drop_table("images")
