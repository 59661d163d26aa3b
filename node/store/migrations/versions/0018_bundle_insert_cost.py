"""cheaper bulk inserts: totals per statement on SQLite, one bundle index fewer

The unused ``ix_bundles_device`` (device, interval start) goes: nothing reads bundles by it
since the device listing pages on ``ix_bundles_device_serial``, and every index costs each
issued bundle an insertion.

SQLite has no statement-level triggers, and a row trigger on ``readings`` or ``bundles`` made
every bulk insert two to three times slower (the trigger also stops SQLite reusing its index
positions from one row to the next).  On SQLite the two INSERT triggers of migration 0014 go;
every insert of these tables goes through ``node/store/totals_repos.py`` (via
``repos.insert_readings`` and ``repos.insert_bundles``), which adds the inserted rows' totals
in one grouped upsert in the same transaction.  PostgreSQL keeps its statement-level
triggers, which already cost one grouped upsert per statement.  Update and delete triggers
are unchanged on both.

Revision ID: 0018
Revises: 0017
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_UPSERT = "ON CONFLICT (name) DO UPDATE SET value = totals.value + excluded.value"
_NODE_ID = "(SELECT value FROM meta WHERE key = 'node_id')"
#: The INSERT triggers as migration 0014 created them on SQLite (for the downgrade).
_TRIGGERS = {
    "readings": [
        ("'readings'", "1", "1 = 1"),
        ("'wh_metered'", "NEW.wh", "1 = 1"),
    ],
    "bundles": [
        ("'bundles_' || NEW.status", "1", "1 = 1"),
        ("'wh_' || NEW.status", "NEW.serial_end - NEW.serial_start", "1 = 1"),
        (
            "'wh_issued'",
            "NEW.serial_end - NEW.serial_start",
            "NEW.parent_id IS NULL AND NEW.issuer = " + _NODE_ID,
        ),
    ],
}


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    with op.batch_alter_table("bundles") as batch:
        batch.drop_index("ix_bundles_device")
    if _sqlite():
        for table in _TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS tr_totals_{table}_ins")


def downgrade() -> None:
    with op.batch_alter_table("bundles") as batch:
        batch.create_index("ix_bundles_device", ["device_id", "interval_start"])
    if _sqlite():
        for table, parts in _TRIGGERS.items():
            body = "".join(
                f"INSERT INTO totals (name, value) SELECT {k}, ({v}) WHERE {c} {_UPSERT};\n"
                for k, v, c in parts
            )
            op.execute(
                f"CREATE TRIGGER tr_totals_{table}_ins AFTER INSERT ON {table} BEGIN\n{body}END"
            )
