"""federation: trust list, imported peer batches and peer records

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "peers",
        sa.Column("node_id", sa.String(length=253), nullable=False),
        sa.Column("endpoint", sa.String(length=255), nullable=False),
        sa.Column("descriptor", sa.Text(), nullable=True),
        sa.Column("public_keys", sa.Text(), server_default="[]", nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.Column("protocol_version", sa.String(length=32), nullable=True),
        sa.Column("capabilities", sa.Text(), server_default="[]", nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("added_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_hello_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_sync_ms", sa.BigInteger(), nullable=True),
        sa.Column("cursor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("node_id"),
    )
    op.create_table(
        "peer_batches",
        sa.Column("issuer", sa.String(length=253), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("wh", sa.BigInteger(), nullable=False),
        sa.Column("serial_lo", sa.BigInteger(), nullable=False),
        sa.Column("serial_hi", sa.BigInteger(), nullable=False),
        sa.Column("merkle_root", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("received_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("issuer", "seq"),
    )
    op.create_table(
        "peer_records",
        sa.Column("issuer", sa.String(length=253), nullable=False),
        sa.Column("serial_start", sa.BigInteger(), nullable=False),
        sa.Column("serial_end", sa.BigInteger(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("interval_start", sa.BigInteger(), nullable=False),
        sa.Column("interval_end", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.SmallInteger(), nullable=False),
        sa.Column("technology", sa.SmallInteger(), nullable=False),
        sa.Column("renewable_ppm", sa.Integer(), nullable=False),
        sa.Column("carbon_mg", sa.Integer(), nullable=False),
        sa.Column("zone", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("batch_seq", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("serial_start", "issuer", name="uq_peer_records_serial"),
    )


def downgrade() -> None:
    op.drop_table("peer_records")
    op.drop_table("peer_batches")
    op.drop_table("peers")
