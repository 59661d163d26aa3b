"""trades: priced cross-node trades, federation-wide obligation ids, peer limits, requests

Revision ID: 0006
Revises: 0005

Obligations gain their federation-wide ``obligation_id`` (backfilled ``<node>/trade/<row id>``
for the local trades recorded before; the ``trades`` counter continues after them), the
transfer and peer of a cross-node trade and the round that settled them.  Transfers carry
their price.  New tables ``peer_limits`` and ``settlement_requests``.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("transfers") as batch:
        batch.add_column(sa.Column("price_minor", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("currency", sa.String(length=3), nullable=True))
        batch.add_column(sa.Column("seller", sa.String(length=200), nullable=True))
    with op.batch_alter_table("obligations") as batch:
        batch.add_column(sa.Column("obligation_id", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("transfer_id", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("peer", sa.String(length=253), nullable=True))
        batch.add_column(sa.Column("settled_round", sa.String(length=200), nullable=True))
    _backfill_ids(op.get_bind())
    with op.batch_alter_table("obligations") as batch:
        batch.alter_column("obligation_id", existing_type=sa.String(length=200),
                           nullable=False)
        batch.create_unique_constraint("uq_obligations_obligation_id", ["obligation_id"])
        batch.create_index("ix_obligations_settled_round", ["settled_round"], unique=False)
    op.create_table(
        "peer_limits",
        sa.Column("peer", sa.String(length=253), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("credit_limit_minor", sa.BigInteger(), nullable=False),
        sa.Column("settle_threshold_minor", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("peer", "currency"),
    )
    op.create_table(
        "settlement_requests",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("peer", sa.String(length=253), nullable=False),
        sa.Column("reason", sa.String(length=512), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("taken_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("settlement_requests") as batch:
        batch.create_index("ix_settlement_requests_open", ["taken_at_ms", "id"], unique=False)


def _backfill_ids(conn) -> None:
    """Local trades recorded before 0006 get ``<node>/trade/<row id>``."""
    me = conn.execute(sa.text("SELECT value FROM meta WHERE key = 'node_id'")).scalar()
    top = conn.execute(sa.text("SELECT MAX(id) FROM obligations")).scalar()
    if me is None or top is None:
        return
    conn.execute(sa.text("UPDATE obligations SET obligation_id = :me || '/trade/' || "
                         "CAST(id AS VARCHAR(20))"), {"me": me})
    done = conn.execute(sa.text("UPDATE counters SET value = :n WHERE name = 'trades'"),
                        {"n": int(top)})
    if done.rowcount == 0:
        conn.execute(sa.text("INSERT INTO counters (name, value) VALUES ('trades', :n)"),
                     {"n": int(top)})


def downgrade() -> None:
    with op.batch_alter_table("settlement_requests") as batch:
        batch.drop_index("ix_settlement_requests_open")
    op.drop_table("settlement_requests")
    op.drop_table("peer_limits")
    with op.batch_alter_table("obligations") as batch:
        batch.drop_index("ix_obligations_settled_round")
        batch.drop_constraint("uq_obligations_obligation_id", type_="unique")
        batch.drop_column("settled_round")
        batch.drop_column("peer")
        batch.drop_column("transfer_id")
        batch.drop_column("obligation_id")
    with op.batch_alter_table("transfers") as batch:
        batch.drop_column("seller")
        batch.drop_column("currency")
        batch.drop_column("price_minor")
