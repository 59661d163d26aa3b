"""coop ledger: accounts, balanced entries and postings of the built-in settlement backend

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.String(length=300), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("credit_line_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("balance_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", "currency"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("entry_id", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=400), nullable=False),
        sa.Column("round_id", sa.String(length=300), nullable=False),
        sa.Column("instruction_id", sa.String(length=320), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("entry_id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    with op.batch_alter_table("ledger_entries") as batch:
        batch.create_index("ix_ledger_entries_round", ["round_id"], unique=False)
    op.create_table(
        "ledger_postings",
        sa.Column("entry_id", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=300), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("entry_id", "account", "currency"),
    )
    with op.batch_alter_table("ledger_postings") as batch:
        batch.create_index("ix_ledger_postings_account", ["account", "currency"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ledger_postings") as batch:
        batch.drop_index("ix_ledger_postings_account")
    op.drop_table("ledger_postings")
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_index("ix_ledger_entries_round")
    op.drop_table("ledger_entries")
    op.drop_table("ledger_accounts")
