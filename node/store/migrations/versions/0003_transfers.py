"""transfers: cross-node transfer log, outbox and inbox

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transfers",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("peer", sa.String(length=253), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("bundle_id", sa.String(length=200), nullable=True),
        sa.Column("issuer", sa.String(length=253), nullable=True),
        sa.Column("serial_start", sa.BigInteger(), nullable=True),
        sa.Column("serial_end", sa.BigInteger(), nullable=True),
        sa.Column("wh", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("from_account", sa.String(length=200), nullable=True),
        sa.Column("to_account", sa.String(length=64), nullable=True),
        sa.Column("source_bundle_id", sa.String(length=200), nullable=True),
        sa.Column("remainder_id", sa.String(length=200), nullable=True),
        sa.Column("expires_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("decided_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(length=512), nullable=True),
        sa.Column("bundle_data", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("checks", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_check_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.create_index("ix_transfers_direction_state", ["direction", "state"], unique=False)
        batch_op.create_index("ix_transfers_range", ["issuer", "serial_start"], unique=False)

    op.create_table(
        "transfer_outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("transfer_id", sa.String(length=200), nullable=False),
        sa.Column("peer", sa.String(length=253), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("acked_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.String(length=512), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("transfer_id", "kind", name="uq_transfer_outbox_kind"),
    )
    with op.batch_alter_table("transfer_outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_transfer_outbox_due", ["acked_at_ms", "next_attempt_at_ms"], unique=False
        )

    op.create_table(
        "transfer_inbox",
        sa.Column("transfer_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=253), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("received_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("transfer_id", "kind"),
    )


def downgrade() -> None:
    op.drop_table("transfer_inbox")
    with op.batch_alter_table("transfer_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_transfer_outbox_due")
    op.drop_table("transfer_outbox")
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.drop_index("ix_transfers_range")
        batch_op.drop_index("ix_transfers_direction_state")
    op.drop_table("transfers")
