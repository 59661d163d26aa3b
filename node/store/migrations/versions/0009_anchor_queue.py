"""anchor queue: issuance batches waiting for each anchoring plugin

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "anchor_queue",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("plugin", sa.String(length=128), nullable=False),
        sa.Column("enqueued_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        sa.Column("anchored_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("seq", "plugin"),
    )
    with op.batch_alter_table("anchor_queue") as batch:
        batch.create_index(
            "ix_anchor_queue_pending", ["plugin", "anchored_at_ms", "seq"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("anchor_queue") as batch:
        batch.drop_index("ix_anchor_queue_pending")
    op.drop_table("anchor_queue")
