"""holder keys: an account's holder public key, and the holder signatures already used

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("holder_public_key", sa.LargeBinary(length=32), nullable=True))
    op.create_table(
        "holder_auth_uses",
        sa.Column("signature_hash", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("used_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("signature_hash"),
    )


def downgrade() -> None:
    op.drop_table("holder_auth_uses")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("holder_public_key")
