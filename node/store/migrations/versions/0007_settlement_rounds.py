"""settlement rounds: rounds, participants' signatures, the execution queue

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "settlement_rounds",
        sa.Column("round_id", sa.String(length=300), nullable=False),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("coordinator", sa.String(length=253), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("view", sa.LargeBinary(), nullable=True),
        sa.Column("statement", sa.LargeBinary(), nullable=True),
        sa.Column("digest", sa.String(length=64), nullable=True),
        sa.Column("participants", sa.Text(), nullable=False),
        sa.Column("obligation_ids", sa.Text(), nullable=False),
        sa.Column("finals_pending", sa.Text(), nullable=True),
        sa.Column("problems", sa.Text(), nullable=False),
        sa.Column("started_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("signed_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("finished_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("round_id"),
        sa.UniqueConstraint("request_id", name="uq_settlement_rounds_request_id"),
    )
    with op.batch_alter_table("settlement_rounds") as batch:
        batch.create_index("ix_settlement_rounds_started", ["started_at_ms"], unique=False)
        batch.create_index("ix_settlement_rounds_state", ["state"], unique=False)
    op.create_table(
        "settlement_signatures",
        sa.Column("round_id", sa.String(length=300), nullable=False),
        sa.Column("node_id", sa.String(length=253), nullable=False),
        sa.Column("signed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("round_id", "node_id"),
    )
    op.create_table(
        "settlement_executions",
        sa.Column("instruction_id", sa.String(length=320), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("round_id", sa.String(length=300), nullable=False),
        sa.Column("payer", sa.String(length=200), nullable=False),
        sa.Column("payee", sa.String(length=200), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("backend", sa.String(length=64), nullable=True),
        sa.Column("receipt", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("executed_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("instruction_id", "side"),
    )
    with op.batch_alter_table("settlement_executions") as batch:
        batch.create_index("ix_settlement_executions_due", ["state", "next_attempt_at_ms"],
                           unique=False)
        batch.create_index("ix_settlement_executions_round", ["round_id"], unique=False)


def downgrade() -> None:
    op.drop_table("settlement_executions")
    op.drop_table("settlement_signatures")
    op.drop_table("settlement_rounds")
