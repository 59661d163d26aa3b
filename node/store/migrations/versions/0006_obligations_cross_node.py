"""obligations across nodes (STAND-IN of the priced-trades migration; replaced on merge)

Revision ID: 0006
Revises: 0005

Only the contract the settlement rounds rely on: ``obligations`` gains ``obligation_id``
(federation-wide id, unique), ``transfer_id``, ``peer`` and ``settled_round``; the
``settlement_requests`` queue that a crossed settlement threshold writes to.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("obligations") as batch:
        batch.add_column(sa.Column("obligation_id", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("transfer_id", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("peer", sa.String(length=253), nullable=True))
        batch.add_column(sa.Column("settled_round", sa.String(length=300), nullable=True))
        batch.create_index("ux_obligations_obligation_id", ["obligation_id"], unique=True)
    op.create_table(
        "settlement_requests",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("peer", sa.String(length=253), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("taken_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("settlement_requests")
    with op.batch_alter_table("obligations") as batch:
        batch.drop_index("ux_obligations_obligation_id")
        for name in ("settled_round", "peer", "transfer_id", "obligation_id"):
            batch.drop_column(name)
