"""bundles by owner in id order: keyset pages of one owner's bundles without a sort

Revision ID: 0015
Revises: 0009
"""

from alembic import op

revision = "0015"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bundles") as batch:
        batch.create_index("ix_bundles_owner_id", ["owner", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bundles") as batch:
        batch.drop_index("ix_bundles_owner_id")
