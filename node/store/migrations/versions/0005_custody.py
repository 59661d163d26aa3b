"""custody: issuer custody of its serials, provenance of imported bundles, custody step

Revision ID: 0005
Revises: 0004

Backfills ``custody`` from the bundles this node issued: one row per issuance batch held here,
then every range it exported (``EXPORTED`` with ``held_by``) moved to that node.
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("transfers") as batch:
        batch.add_column(sa.Column("proof", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("custody_state", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("custody", sa.LargeBinary(), nullable=True))
    op.create_table(
        "custody",
        sa.Column("serial_start", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("serial_end", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(length=253), nullable=False),
        sa.Column("retired", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=True),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("serial_start"),
    )
    op.create_table(
        "custody_moves",
        sa.Column("transfer_id", sa.String(length=200), nullable=False),
        sa.Column("origin", sa.String(length=253), nullable=False),
        sa.Column("to_node", sa.String(length=253), nullable=False),
        sa.Column("serial_start", sa.BigInteger(), nullable=False),
        sa.Column("serial_end", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=512), nullable=True),
        sa.Column("record", sa.LargeBinary(), nullable=True),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("transfer_id"),
    )
    op.create_table(
        "retirement_reports",
        sa.Column("claim_id", sa.String(length=200), nullable=False),
        sa.Column("origin", sa.String(length=253), nullable=False),
        sa.Column("serial_start", sa.BigInteger(), nullable=False),
        sa.Column("serial_end", sa.BigInteger(), nullable=False),
        sa.Column("recorded", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=512), nullable=True),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("claim_id"),
    )
    op.create_table(
        "provenance",
        sa.Column("bundle_id", sa.String(length=200), nullable=False),
        sa.Column("proof", sa.LargeBinary(), nullable=False),
        sa.Column("custody", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("bundle_id"),
    )
    _backfill_custody(op.get_bind())


def _backfill_custody(conn) -> None:
    me = conn.execute(sa.text("SELECT value FROM meta WHERE key = 'node_id'")).scalar()
    if me is None:
        return
    now = int(time.time() * 1000)
    spans = conn.execute(sa.text(
        "SELECT MIN(serial_start), MAX(serial_end) FROM bundles "
        "WHERE issuer = :me AND batch_seq IS NOT NULL GROUP BY batch_seq"), {"me": me}).all()
    rows = {int(s): [int(s), int(e), me] for s, e in spans}
    moved = conn.execute(sa.text(
        "SELECT serial_start, serial_end, held_by FROM bundles WHERE issuer = :me "
        "AND status = 7 AND held_by IS NOT NULL ORDER BY serial_start"), {"me": me}).all()
    for s, e, holder in moved:
        s, e = int(s), int(e)
        for start in sorted(rows):
            lo, hi, who = rows[start]
            if lo < e and s < hi:
                del rows[start]
                for a, b, h in ((lo, max(lo, s), who), (max(lo, s), min(hi, e), holder),
                                (min(hi, e), hi, who)):
                    if a < b:
                        rows[a] = [a, b, h]
    if rows:
        conn.execute(sa.text(
            "INSERT INTO custody (serial_start, serial_end, holder, retired, updated_at_ms) "
            "VALUES (:s, :e, :h, false, :t)"),
            [{"s": a, "e": b, "h": h, "t": now} for a, b, h in rows.values()])


def downgrade() -> None:
    for name in ("provenance", "retirement_reports", "custody_moves",
                 "custody"):
        op.drop_table(name)
    with op.batch_alter_table("transfers") as batch:
        batch.drop_column("custody")
        batch.drop_column("custody_state")
        batch.drop_column("proof")
