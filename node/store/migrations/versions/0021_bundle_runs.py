"""issued records as runs: one row per issuance batch and device

Issuance wrote one ``bundles`` row per record, with six index entries, and that write bound
its rate (docs/architecture.md, "Issued records are kept as runs").  From now on a batch's
records are stored as runs in ``bundle_runs``, one row per (batch, device) with the per-record
serial ends, interval bounds and lineage hashes as packed arrays; a record gets its
``bundles`` row on its first change (``store/run_repos.py``).  Rows already in ``bundles``
stay where they are: a reader reads both forms.

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bundle_runs",
        sa.Column("issuer", sa.String(128), primary_key=True),
        sa.Column("serial_start", sa.BigInteger, primary_key=True),
        sa.Column("serial_end", sa.BigInteger, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("batch_seq", sa.BigInteger, nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("source", sa.Integer, nullable=False),
        sa.Column("technology", sa.Integer, nullable=False),
        sa.Column("renewable_ppm", sa.Integer, nullable=False),
        sa.Column("carbon_mg", sa.Integer, nullable=False),
        sa.Column("zone", sa.String(32), nullable=False),
        sa.Column("cell", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("issued_at_ms", sa.BigInteger, nullable=False),
        sa.Column("interval_lo", sa.BigInteger, nullable=False),
        sa.Column("interval_hi", sa.BigInteger, nullable=False),
        sa.Column("ends", sa.LargeBinary, nullable=False),
        sa.Column("starts", sa.LargeBinary, nullable=False),
        sa.Column("stops", sa.LargeBinary, nullable=False),
        sa.Column("lineage", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_bundle_runs_owner", "bundle_runs", ["owner", "issuer", "serial_start"])
    op.create_index("ix_bundle_runs_device", "bundle_runs", ["device_id", "issuer", "serial_start"])
    op.create_index("ix_bundle_runs_batch", "bundle_runs", ["batch_seq"])
    op.create_index("ix_bundle_runs_zone", "bundle_runs", ["zone", "issuer", "serial_start"])


def downgrade() -> None:
    """Every record still in a run gets its ``bundles`` row first: nothing is lost."""
    import numpy as np

    bind = op.get_bind()
    runs = sa.table(
        "bundle_runs", *(sa.column(c) for c in (
            "issuer", "serial_start", "serial_end", "n", "batch_seq", "device_id", "source",
            "technology", "renewable_ppm", "carbon_mg", "zone", "cell", "owner", "issued_at_ms",
            "ends", "starts", "stops", "lineage")))
    bundles = sa.table("bundles", *(sa.column(c) for c in (
        "id", "issuer", "serial_start", "serial_end", "device_id", "interval_start",
        "interval_end", "source", "technology", "renewable_ppm", "carbon_mg", "zone", "cell",
        "owner", "status", "parent_id", "lineage_hash", "issued_at_ms", "batch_seq", "version")))
    for run in bind.execute(sa.select(runs)).all():
        ends = np.frombuffer(run.ends, "<i8").tolist()
        serials = [run.serial_start, *ends[:-1]]
        starts = np.frombuffer(run.starts, "<i8").tolist()
        stops = np.frombuffer(run.stops, "<i8").tolist()
        have = {
            (s, e) for s, e in bind.execute(
                sa.select(bundles.c.serial_start, bundles.c.serial_end).where(
                    bundles.c.issuer == run.issuer,
                    bundles.c.serial_start >= run.serial_start,
                    bundles.c.serial_start < run.serial_end,
                )
            )
        }
        rows = [
            {
                "id": f"{run.issuer}/{s}-{e}", "issuer": run.issuer, "serial_start": s,
                "serial_end": e, "device_id": run.device_id, "interval_start": starts[i],
                "interval_end": stops[i], "source": run.source, "technology": run.technology,
                "renewable_ppm": run.renewable_ppm, "carbon_mg": run.carbon_mg,
                "zone": run.zone, "cell": run.cell, "owner": run.owner, "status": 1,
                "parent_id": None, "lineage_hash": run.lineage[32 * i : 32 * i + 32].hex(),
                "issued_at_ms": run.issued_at_ms, "batch_seq": run.batch_seq, "version": 0,
            }
            for i, (s, e) in enumerate(zip(serials, ends, strict=True))
            if (s, e) not in have
        ]
        if rows:
            bind.execute(bundles.insert(), rows)
            if bind.dialect.name == "postgresql":  # its insert trigger counted them again
                wh = sum(r["serial_end"] - r["serial_start"] for r in rows)
                for name, value in (("bundles_1", len(rows)), ("wh_1", wh), ("wh_issued", wh)):
                    bind.execute(sa.text("UPDATE totals SET value = value - :v WHERE name = :n"),
                                 {"v": value, "n": name})
    op.drop_table("bundle_runs")
