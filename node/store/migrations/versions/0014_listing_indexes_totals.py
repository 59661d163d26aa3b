"""keyset listing indexes and maintained totals

Listings page in serial order, ``WHERE <filter> = ? AND (issuer, serial_start) > (?, ?)
ORDER BY issuer, serial_start LIMIT n``: each filter gets a
composite index ending in that key, so a page is an index range scan with no sort.  ``totals``
holds the node's running totals, kept exact by triggers on the tables they count, so they
change in the same transaction as the rows (a rollback undoes both) whatever code path writes.

Revision ID: 0014
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0012"
branch_labels = None
depends_on = None

_NODE_ID = "(SELECT value FROM meta WHERE key = 'node_id')"

#: What each row adds to ``totals``: table -> (columns whose change moves a total,
#: [(name expression, value expression, condition)]); ``{r}`` is NEW or OLD.
CONTRIBUTIONS = {
    "accounts": ((), [("'accounts'", "1", "1 = 1")]),
    "devices": ((), [("'devices'", "1", "1 = 1")]),
    "readings": (
        ("wh",),
        [("'readings'", "1", "1 = 1"), ("'wh_metered'", "{r}.wh", "1 = 1")],
    ),
    "bundles": (
        ("status", "serial_start", "serial_end", "parent_id", "issuer"),
        [
            ("'bundles_' || {r}.status", "1", "1 = 1"),
            ("'wh_' || {r}.status", "{r}.serial_end - {r}.serial_start", "1 = 1"),
            (
                "'wh_issued'",
                "{r}.serial_end - {r}.serial_start",
                "{r}.parent_id IS NULL AND {r}.issuer = " + _NODE_ID,
            ),
        ],
    ),
    "transfers": (
        ("direction", "state", "wh"),
        [("'transfers_wh_' || {r}.direction", "{r}.wh", "{r}.state = 'committed'")],
    ),
}

#: Keyset pages of cross-node transfers (oldest first: created_at_ms, id), per filter.
_TRANSFER_INDEXES = {
    "ix_transfers_direction_state_created": ["direction", "state", "created_at_ms", "id"],
    "ix_transfers_direction_created": ["direction", "created_at_ms", "id"],
    "ix_transfers_state_created": ["state", "created_at_ms", "id"],
    "ix_transfers_created": ["created_at_ms", "id"],
}

_UPSERT = "ON CONFLICT (name) DO UPDATE SET value = totals.value + excluded.value"


def _sqlite_triggers(table: str, columns, parts) -> list[str]:
    def add(row: str, sign: str) -> str:
        return "".join(
            f"INSERT INTO totals (name, value) SELECT {k.format(r=row)}, "
            f"{sign}({v.format(r=row)}) WHERE {c.format(r=row)} {_UPSERT};\n"
            for k, v, c in parts
        )

    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns)
    out = [
        f"CREATE TRIGGER tr_totals_{table}_ins AFTER INSERT ON {table} BEGIN\n{add('NEW', '')}END",
        f"CREATE TRIGGER tr_totals_{table}_del AFTER DELETE ON {table} BEGIN\n{add('OLD', '-')}END",
    ]
    if columns:
        out.append(
            f"CREATE TRIGGER tr_totals_{table}_upd AFTER UPDATE ON {table} WHEN {changed} "
            f"BEGIN\n{add('OLD', '-')}{add('NEW', '')}END"
        )
    return out


def _pg_triggers(table: str, columns, parts) -> list[str]:
    """Statement-level triggers over transition tables: one grouped upsert per statement,
    in name order (a stable lock order), skipping names whose total does not move."""

    def rows(alias: str, sign: str) -> str:
        return " UNION ALL ".join(
            f"SELECT {k.format(r='x')} AS k, {sign}({v.format(r='x')})::numeric AS v "
            f"FROM {alias} x WHERE {c.format(r='x')}"
            for k, v, c in parts
        )

    def upsert(source: str) -> str:
        return (
            f"INSERT INTO totals (name, value) SELECT k, SUM(v) FROM ({source}) d "
            f"GROUP BY k HAVING SUM(v) <> 0 ORDER BY k {_UPSERT};"
        )

    fn = f"eap_totals_{table}"
    out = [
        f"""CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {upsert(rows("new_rows", ""))}
  ELSIF TG_OP = 'DELETE' THEN
    {upsert(rows("old_rows", "-"))}
  ELSE
    {upsert(rows("old_rows", "-") + " UNION ALL " + rows("new_rows", ""))}
  END IF;
  RETURN NULL;
END $$""",
        f"CREATE TRIGGER tr_totals_{table}_ins AFTER INSERT ON {table} "
        f"REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {fn}()",
        f"CREATE TRIGGER tr_totals_{table}_del AFTER DELETE ON {table} "
        f"REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {fn}()",
    ]
    if columns:
        out.append(
            f"CREATE TRIGGER tr_totals_{table}_upd AFTER UPDATE ON {table} "
            f"REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {fn}()"
        )
    return out


def _recount(table: str, parts) -> str:
    """The totals of the rows already there (a migrated database starts exact)."""
    source = " UNION ALL ".join(
        f"SELECT {k.format(r='x')} AS k, {v.format(r='x')} AS v FROM {table} x "
        f"WHERE {c.format(r='x')}"
        for k, v, c in parts
    )
    return f"INSERT INTO totals (name, value) SELECT k, SUM(v) FROM ({source}) d GROUP BY k"


def upgrade() -> None:
    with op.batch_alter_table("bundles") as batch:
        batch.drop_index("ix_bundles_owner_status")
        batch.create_index(
            "ix_bundles_owner_status_serial", ["owner", "status", "issuer", "serial_start"]
        )
        batch.create_index("ix_bundles_owner_serial", ["owner", "issuer", "serial_start"])
        batch.create_index("ix_bundles_status_serial", ["status", "issuer", "serial_start"])
        batch.create_index("ix_bundles_device_serial", ["device_id", "issuer", "serial_start"])
    with op.batch_alter_table("claims") as batch:
        batch.create_index("ix_claims_beneficiary_seq", ["beneficiary", "seq"])
    with op.batch_alter_table("transfers") as batch:
        batch.drop_index("ix_transfers_direction_state")
        for name, columns in _TRANSFER_INDEXES.items():
            batch.create_index(name, columns)
    op.create_table(
        "totals",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "value",
            sa.BigInteger().with_variant(sa.Numeric(40, 0), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name"),
    )
    pg = op.get_bind().dialect.name == "postgresql"
    for table, (columns, parts) in CONTRIBUTIONS.items():
        op.execute(_recount(table, parts))
        for ddl in (_pg_triggers if pg else _sqlite_triggers)(table, columns, parts):
            op.execute(ddl)


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    for table in CONTRIBUTIONS:
        for kind in ("ins", "del", "upd"):
            op.execute(
                f"DROP TRIGGER IF EXISTS tr_totals_{table}_{kind}" + (f" ON {table}" if pg else "")
            )
        if pg:
            op.execute(f"DROP FUNCTION IF EXISTS eap_totals_{table}()")
    op.drop_table("totals")
    with op.batch_alter_table("transfers") as batch:
        for name in _TRANSFER_INDEXES:
            batch.drop_index(name)
        batch.create_index("ix_transfers_direction_state", ["direction", "state"])
    with op.batch_alter_table("claims") as batch:
        batch.drop_index("ix_claims_beneficiary_seq")
    with op.batch_alter_table("bundles") as batch:
        batch.drop_index("ix_bundles_device_serial")
        batch.drop_index("ix_bundles_status_serial")
        batch.drop_index("ix_bundles_owner_serial")
        batch.drop_index("ix_bundles_owner_status_serial")
        batch.create_index("ix_bundles_owner_status", ["owner", "status"])
