"""duplicate-device check: published meter tags, peers' tags, alerts

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def _id() -> sa.Column:
    return sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        autoincrement=True,
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "device_tags",
        _id(),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("tag", sa.LargeBinary(length=16), nullable=False),
        sa.Column("added_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("device_id"),
    )
    op.create_index("ix_device_tags_tag", "device_tags", ["tag"])
    op.create_table(
        "peer_device_tags",
        sa.Column("peer", sa.String(length=253), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("tag", sa.LargeBinary(length=16), nullable=False),
        sa.PrimaryKeyConstraint("peer", "seq"),
    )
    op.create_index("ix_peer_device_tags_tag", "peer_device_tags", ["peer", "tag"])
    op.create_table(
        "device_peer_tags",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("peer", sa.String(length=253), nullable=False),
        sa.Column("tag", sa.LargeBinary(length=16), nullable=False),
        sa.Column("checked_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "peer"),
    )
    op.create_index("ix_device_peer_tags_tag", "device_peer_tags", ["peer", "tag"])
    op.create_table(
        "device_duplicates",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("peer", sa.String(length=253), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("local_ref", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("peer_tag", sa.LargeBinary(length=16), nullable=False),
        sa.Column("detected_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("peer", "peer_tag", "device_id", "action", name="uq_device_duplicates"),
    )


def downgrade() -> None:
    op.drop_table("device_duplicates")
    op.drop_index("ix_device_peer_tags_tag", table_name="device_peer_tags")
    op.drop_table("device_peer_tags")
    op.drop_index("ix_peer_device_tags_tag", table_name="peer_device_tags")
    op.drop_table("peer_device_tags")
    op.drop_index("ix_device_tags_tag", table_name="device_tags")
    op.drop_table("device_tags")
