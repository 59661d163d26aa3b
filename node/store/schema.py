"""Table definitions (SQLAlchemy Core).  Migrations in ``migrations/`` create exactly these."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

#: Key/value facts about this node (node id, zone, protocol version).
meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

#: Monotonic counters (Wh serials, batch sequence, claim numbers), bumped atomically.
counters = Table(
    "counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("label", String(128), nullable=False, server_default=""),
    Column("identity", String(256)),
    Column("disclosed", Boolean, nullable=False, server_default="0"),
    Column("token_hash", String(64), unique=True),
    Column("created_at_ms", BigInteger, nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("local_ref", String(64), nullable=False, unique=True),
    Column("capacity_w", BigInteger, nullable=False),
    Column("source", Integer, nullable=False),
    Column("technology", Integer, nullable=False),
    Column("commissioned_on", String(10), nullable=False),
    Column("latitude", Float, nullable=False),
    Column("longitude", Float, nullable=False),
    Column("zone", String(32), nullable=False),
    Column("cell", String(16), nullable=False),
    Column("owner", String(64), nullable=False),
    Column("meter_id", String(128), nullable=False, unique=True),
    Column("renewable_ppm", Integer, nullable=False),
    Column("carbon_mg", Integer, nullable=False),
    Column("attested_by", String(64), nullable=False),
    Column("attestation_ref", String(256), nullable=False),
    Column("registered_at_ms", BigInteger, nullable=False),
)

readings = Table(
    "readings",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("device_id", String(64), nullable=False),
    Column("interval_start", BigInteger, nullable=False),
    Column("interval_end", BigInteger, nullable=False),
    Column("wh", BigInteger, nullable=False),
    Column("issued_wh", BigInteger, nullable=False, server_default="0"),
    UniqueConstraint("device_id", "interval_start", name="uq_readings_device_start"),
)

bundles = Table(
    "bundles",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("issuer", String(128), nullable=False),
    Column("serial_start", BigInteger, nullable=False),
    Column("serial_end", BigInteger, nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("interval_start", BigInteger, nullable=False),
    Column("interval_end", BigInteger, nullable=False),
    Column("source", Integer, nullable=False),
    Column("technology", Integer, nullable=False),
    Column("renewable_ppm", Integer, nullable=False),
    Column("carbon_mg", Integer, nullable=False),
    Column("zone", String(32), nullable=False),
    Column("cell", String(16), nullable=False),
    Column("owner", String(200), nullable=False),
    Column("status", Integer, nullable=False),
    Column("parent_id", String(200)),
    Column("lineage_hash", String(64), nullable=False),
    Column("issued_at_ms", BigInteger, nullable=False),
    Column("batch_seq", BigInteger),
    Column("version", Integer, nullable=False, server_default="0"),
    Column("held_by", String(128)),
    UniqueConstraint("issuer", "serial_start", "serial_end", name="uq_bundles_range"),
    Index("ix_bundles_owner_status", "owner", "status"),
    Index("ix_bundles_device", "device_id", "interval_start"),
)

#: Signed issuance batches of this node, kept as the exact bytes served to peers.
batches = Table(
    "batches",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("count", Integer, nullable=False),
    Column("wh", BigInteger, nullable=False),
    Column("merkle_root", LargeBinary, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
)

claims = Table(
    "claims",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("id", String(200), nullable=False, unique=True),
    Column("bundle_id", String(200), nullable=False, unique=True),
    Column("beneficiary", String(256), nullable=False),
    Column("purpose", String(128), nullable=False),
    Column("consumption_start", BigInteger, nullable=False),
    Column("consumption_end", BigInteger, nullable=False),
    Column("consumption_zone", String(32), nullable=False),
    Column("wh", BigInteger, nullable=False),
    Column("claimed_at_ms", BigInteger, nullable=False),
    Column("digest", LargeBinary, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("key_id", String(64), nullable=False),
)

#: Journal of every lifecycle action (issue, transfer, split, retire), for audit and replay.
journal = Table(
    "journal",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at_ms", BigInteger, nullable=False),
    Column("action", String(32), nullable=False),
    Column("bundle_id", String(200)),
    Column("from_owner", String(200)),
    Column("to_owner", String(200)),
    Column("wh", BigInteger, nullable=False),
    Column("request_id", String(128)),
)

#: First result of every mutating request, by client-chosen request id.
idempotency = Table(
    "idempotency",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("operation", String(64), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
)

#: Reads that disclosed private fields (DESIGN §8, purpose limitation).
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at_ms", BigInteger, nullable=False),
    Column("principal", String(200), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("what", String(64), nullable=False),
    Column("count", Integer, nullable=False),
)
