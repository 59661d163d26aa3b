"""listing keys end in serial_end: a split parent and its first child no longer tie

A split parent keeps its range and the child cut from its start shares its first serial, so
``(issuer, serial_start)`` is not unique: a keyset page ending on one of the two skipped the
other.  The page key becomes ``(issuer, serial_start, serial_end)``, unique with
``uq_bundles_range``, and each listing index of migration 0014 gains ``serial_end`` so a
page stays an index range scan with no sort.

Revision ID: 0019
Revises: 0018
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

#: The listing indexes by name, with their filter columns (the key follows).
_INDEXES = {
    "ix_bundles_owner_status_serial": ["owner", "status"],
    "ix_bundles_owner_serial": ["owner"],
    "ix_bundles_status_serial": ["status"],
    "ix_bundles_device_serial": ["device_id"],
}


def _rebuild(key: list[str]) -> None:
    for name, filters in _INDEXES.items():
        op.drop_index(name, table_name="bundles")
        op.create_index(name, "bundles", [*filters, *key])


def upgrade() -> None:
    _rebuild(["issuer", "serial_start", "serial_end"])


def downgrade() -> None:
    _rebuild(["issuer", "serial_start"])
