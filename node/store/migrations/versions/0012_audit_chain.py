"""audit chain: hash-chained, append-only audit_log with subjects index and signed head

Existing audit rows are chained in id order (empty via, no recorded subjects: the earlier
schema did not keep them); the head is written unsigned and signed by the next append.

Revision ID: 0012
Revises: 0011
"""

import time

import sqlalchemy as sa
from alembic import op

from eap.node.store.audit_repos import GENESIS, row_digest

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_APPEND_ONLY = """
CREATE OR REPLACE FUNCTION eap_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql
"""
_TABLES = ("audit_log", "audit_subjects")


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("via", sa.String(length=64), server_default="", nullable=False))
        batch.add_column(sa.Column("accounts", sa.Text(), server_default="[]", nullable=False))
        batch.add_column(
            sa.Column("fields", sa.String(length=256), server_default="", nullable=False)
        )
        batch.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("row_hash", sa.String(length=64), nullable=True))

    conn = op.get_bind()
    log = sa.table(
        "audit_log",
        sa.column("id"),
        sa.column("at_ms"),
        sa.column("principal"),
        sa.column("purpose"),
        sa.column("what"),
        sa.column("count"),
        sa.column("seq"),
        sa.column("prev_hash"),
        sa.column("row_hash"),
    )
    prev, seq = GENESIS, 0
    for row in conn.execute(sa.select(log).order_by(log.c.id)).all():
        seq += 1
        digest = row_digest(
            seq=seq,
            at_ms=row.at_ms,
            principal=row.principal,
            via="",
            purpose=row.purpose,
            what=row.what,
            count=row.count,
            accounts=(),
            fields=(),
            prev_hash=prev,
        )
        conn.execute(
            sa.update(log)
            .where(log.c.id == row.id)
            .values(seq=seq, prev_hash=prev, row_hash=digest)
        )
        prev = digest

    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch.alter_column("row_hash", existing_type=sa.String(length=64), nullable=False)
        batch.create_unique_constraint("uq_audit_log_seq", ["seq"])

    op.create_table(
        "audit_subjects",
        sa.Column("account", sa.String(length=200), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", "seq"),
    )
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.String(length=64), server_default="", nullable=False),
        sa.Column("signature", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(
        head,
        [
            {
                "id": 1,
                "count": seq,
                "last_hash": prev,
                "at_ms": int(time.time() * 1000),
                "key_id": "",
                "signature": "",
            }
        ],
    )

    if conn.dialect.name == "postgresql":
        op.execute(_APPEND_ONLY)
        for table in _TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION eap_audit_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION eap_audit_append_only()"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS eap_audit_append_only()")
    op.drop_table("audit_head")
    op.drop_table("audit_subjects")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_constraint("uq_audit_log_seq", type_="unique")
        for column in ("row_hash", "prev_hash", "fields", "accounts", "via", "seq"):
            batch.drop_column(column)
