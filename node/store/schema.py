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
    Numeric,
    SmallInteger,
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
    #: Raw Ed25519 public key of the holder (migration 0011); NULL = a custodial account.
    #: Never leaves the node (docs/holder-keys.md).
    Column("holder_public_key", LargeBinary(32), nullable=True),
)

#: Holder signatures the node accepted (migration 0011), one row each: a signature moves
#: bundles once, for the request id it signs, and never again.
holder_auth_uses = Table(
    "holder_auth_uses",
    metadata,
    #: Hex SHA-256 of the signature bytes.
    Column("signature_hash", String(64), primary_key=True),
    Column("account", String(64), nullable=False),
    Column("operation", String(32), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("expires_at_ms", BigInteger, nullable=False),
    Column("used_at_ms", BigInteger, nullable=False),
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

#: On PostgreSQL the table has fillfactor 50 (migration 0020): issuance's claim of each
#: reading is then a HOT update on the same page.
readings = Table(
    "readings",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("device_id", String(64), nullable=False),
    Column("interval_start", BigInteger, nullable=False),
    Column("interval_end", BigInteger, nullable=False),
    Column("wh", BigInteger, nullable=False),
    Column("issued_wh", BigInteger, nullable=False, server_default="0"),
    UniqueConstraint("device_id", "interval_start", name="uq_readings_device_start"),
)

#: The keyset of bundle listings: unique (``uq_bundles_range``), in serial order.
_PAGE_KEY = ("issuer", "serial_start", "serial_end")

def _record_attributes() -> list[Column]:
    """What a record carries from its device and owner, alike in a ``bundles`` row and a
    ``bundle_runs`` row (a record's first change copies it from one to the other)."""
    return [
        Column("source", Integer, nullable=False),
        Column("technology", Integer, nullable=False),
        Column("renewable_ppm", Integer, nullable=False),
        Column("carbon_mg", Integer, nullable=False),
        Column("zone", String(32), nullable=False),
        Column("cell", String(16), nullable=False),
        Column("owner", String(200), nullable=False),
    ]


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
    *_record_attributes(),
    Column("status", Integer, nullable=False),
    Column("parent_id", String(200)),
    Column("lineage_hash", String(64), nullable=False),
    Column("issued_at_ms", BigInteger, nullable=False),
    Column("batch_seq", BigInteger),
    Column("version", Integer, nullable=False, server_default="0"),
    Column("held_by", String(128)),
    UniqueConstraint("issuer", "serial_start", "serial_end", name="uq_bundles_range"),
    # Keyset listings in serial order (migrations 0014, 0019): each filter's index ends in the
    # page key (issuer, serial_start, serial_end), unique, so a page is an index range scan
    # with no sort (a split parent and its first child share serial_start).
    Index("ix_bundles_owner_status_serial", "owner", "status", *_PAGE_KEY),
    Index("ix_bundles_owner_serial", "owner", *_PAGE_KEY),
    Index("ix_bundles_status_serial", "status", *_PAGE_KEY),
    Index("ix_bundles_device_serial", "device_id", *_PAGE_KEY),
)

#: This node's issued records as runs (migration 0021): one row per issuance batch and device,
#: the device's records of the batch in serial order, contiguous in serials.  Per-record values
#: are packed little-endian arrays: ``ends`` (serial end, int64), ``starts`` and ``stops``
#: (interval start and end, int64) and ``lineage`` (32-byte hashes); ``interval_lo`` and
#: ``interval_hi`` bound the records' interval starts, for readers of a time window.  A
#: record stays here, and nowhere else, until its first change writes it to ``bundles``
#: (``store/run_repos.py``); from then on that row is the record and the run's copy is
#: skipped.
bundle_runs = Table(
    "bundle_runs",
    metadata,
    Column("issuer", String(128), primary_key=True),
    Column("serial_start", BigInteger, primary_key=True),
    Column("serial_end", BigInteger, nullable=False),
    Column("n", Integer, nullable=False),
    Column("batch_seq", BigInteger, nullable=False),
    Column("device_id", String(64), nullable=False),
    *_record_attributes(),
    Column("issued_at_ms", BigInteger, nullable=False),
    Column("interval_lo", BigInteger, nullable=False),
    Column("interval_hi", BigInteger, nullable=False),
    Column("ends", LargeBinary, nullable=False),
    Column("starts", LargeBinary, nullable=False),
    Column("stops", LargeBinary, nullable=False),
    Column("lineage", LargeBinary, nullable=False),
    Index("ix_bundle_runs_owner", "owner", "issuer", "serial_start"),
    Index("ix_bundle_runs_device", "device_id", "issuer", "serial_start"),
    Index("ix_bundle_runs_batch", "batch_seq"),
    Index("ix_bundle_runs_zone", "zone", "issuer", "serial_start"),
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
    #: The issuer's signature of the batch header, also inside ``payload`` (NULL in batches
    #: stored before migration 0023): anchoring reads it without the payload.
    Column("signature", LargeBinary, nullable=True),
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
    # SD-JWT receipt with all its disclosures (salts): the holder's to present; NULL before 0010.
    Column("sd_receipt", Text, nullable=True),
    Index("ix_claims_beneficiary_seq", "beneficiary", "seq"),
)

#: Running totals of the node (``eap-node status``), kept exact by triggers (migration 0014)
#: in the same transaction as the rows they count: ``accounts``, ``devices``, ``readings``,
#: ``wh_metered``, ``wh_issued``, ``bundles_<status>``, ``wh_<status>``, ``transfers_wh_<dir>``.
totals = Table(
    "totals",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger().with_variant(Numeric(40, 0), "postgresql"), nullable=False),
)

#: Journal of every lifecycle action (issue, transfer, split, retire), for audit and replay.
journal = Table(
    "journal",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
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

#: Reads that disclosed private fields (DESIGN §8, purpose limitation): append-only and
#: hash-chained (migration 0012; ``eap.node.store.audit_repos``).  On PostgreSQL a trigger
#: refuses UPDATE, DELETE and TRUNCATE.
audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at_ms", BigInteger, nullable=False),
    Column("principal", String(200), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("what", String(64), nullable=False),
    Column("count", Integer, nullable=False),
    #: 1, 2, 3, ... in append order.
    Column("seq", BigInteger, nullable=False),
    #: How the reader came in: "local" (CLI, in-process) or "grpc".
    Column("via", String(64), nullable=False, server_default=""),
    #: JSON list of the account ids whose personal data the read returned, sorted.
    Column("accounts", Text, nullable=False, server_default="[]"),
    #: Comma-separated personal fields the read disclosed.
    Column("fields", String(256), nullable=False, server_default=""),
    #: row_hash of the previous row (64 zeros for the first).
    Column("prev_hash", String(64), nullable=False),
    #: Hex SHA-256 over the row's canonical content and prev_hash.
    Column("row_hash", String(64), nullable=False),
    UniqueConstraint("seq", name="uq_audit_log_seq"),
)

#: Index of audit rows by the account whose data was read (derived from audit_log.accounts;
#: ``audit-log verify`` checks it against the chain).  Append-only like audit_log.
audit_subjects = Table(
    "audit_subjects",
    metadata,
    Column("account", String(200), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
)

#: The chain's head: number of rows and last row_hash, signed with the node key.  One row
#: (id 1), rewritten on every append in the same transaction.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("count", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("key_id", String(64), nullable=False, server_default=""),
    #: Hex Ed25519 signature over ``EAP-AUDIT-HEAD-v1``, node id, count and last_hash; empty
    #: when written by the migration (no key there) until the next append.
    Column("signature", Text, nullable=False, server_default=""),
)

# -- federation (migration 0002) -----------------------------------------------------------------

#: The trust list: peer nodes this node accepts, with what the handshake and sync learned.
peers = Table(
    "peers",
    metadata,
    Column("node_id", String(253), primary_key=True),
    Column("endpoint", String(255), nullable=False),
    #: The peer's signed descriptor (JSON text) as last accepted; NULL when added by fingerprint.
    Column("descriptor", Text),
    #: ``[{key_id, public_key (base64), created_at_ms, retired_at_ms, valid_until_ms}]``.
    Column("public_keys", Text, nullable=False, server_default="[]"),
    #: ``SHA256:…`` fingerprint of the key the operator pinned (``peer add --fingerprint``).
    Column("fingerprint", String(64)),
    Column("protocol_version", String(32)),
    Column("capabilities", Text, nullable=False, server_default="[]"),
    Column("status", String(16), nullable=False),
    Column("added_at_ms", BigInteger, nullable=False),
    Column("last_hello_ms", BigInteger),
    Column("last_sync_ms", BigInteger),
    #: Seq of the last batch of this peer imported (0 = none yet).
    Column("cursor", BigInteger, nullable=False, server_default="0"),
    Column("last_error", Text),
)

#: Headers of the peers' signed batches that were imported (verified, validated).
peer_batches = Table(
    "peer_batches",
    metadata,
    Column("issuer", String(253), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("count", Integer, nullable=False),
    Column("wh", BigInteger, nullable=False),
    Column("serial_lo", BigInteger, nullable=False),
    Column("serial_hi", BigInteger, nullable=False),
    Column("merkle_root", LargeBinary, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("received_at_ms", BigInteger, nullable=False),
)

#: Peers' issued records, read-only here (verification, matching, statistics).
peer_records = Table(
    "peer_records",
    metadata,
    Column("issuer", String(253), nullable=False),
    Column("serial_start", BigInteger, nullable=False),
    Column("serial_end", BigInteger, nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("interval_start", BigInteger, nullable=False),
    Column("interval_end", BigInteger, nullable=False),
    Column("source", SmallInteger, nullable=False),
    Column("technology", SmallInteger, nullable=False),
    Column("renewable_ppm", Integer, nullable=False),
    Column("carbon_mg", Integer, nullable=False),
    Column("zone", String(32), nullable=False),
    Column("owner", String(200), nullable=False),
    Column("batch_seq", BigInteger, nullable=False),
    # Unique (issuer, serial_start), declared integer-first: the same constraint, but index
    # maintenance on import rarely compares strings (about 25% faster bulk loads).
    UniqueConstraint("serial_start", "issuer", name="uq_peer_records_serial"),
)

#: Cross-node transfers (DESIGN §6), one row per transfer and side: ``out`` on the source node
#: (states preparing → committed | aborted), ``in`` on the destination (prepared → committed |
#: aborted).  Destination rows keep the prepared bundle in ``bundle_data`` until the commit.
transfers = Table(
    "transfers",
    metadata,
    #: ``<source node>/<uuid>``, chosen by the source.
    Column("id", String(200), primary_key=True),
    Column("direction", String(3), nullable=False),
    #: The other party: destination node for ``out``, source node for ``in``.
    Column("peer", String(253), nullable=False),
    Column("state", String(16), nullable=False),
    Column("bundle_id", String(200)),
    Column("issuer", String(253)),
    Column("serial_start", BigInteger),
    Column("serial_end", BigInteger),
    Column("wh", BigInteger, nullable=False, server_default="0"),
    #: Source account (``out`` only; never sent to the destination).
    Column("from_account", String(200)),
    Column("to_account", String(64)),
    #: ``out``: the bundle the caller named (the parent when the transfer split it).
    Column("source_bundle_id", String(200)),
    Column("remainder_id", String(200)),
    Column("expires_at_ms", BigInteger, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("decided_at_ms", BigInteger),
    Column("reason", String(512)),
    Column("bundle_data", Text),
    Column("request_id", String(128)),
    #: ``in``: the serialised RecordProof that came with the prepare (kept with the bundle).
    Column("proof", LargeBinary),
    #: Custody step (transfers of serials issued elsewhere, docs/custody.md): ``requested``
    #: (source asked the issuer; its answer decides), ``moved`` or ``refused``.
    Column("custody_state", String(16)),
    #: The issuer's signed CustodyRecord (serialised ``Signed``) once the range moved.
    Column("custody", LargeBinary),
    #: ``in``: in-doubt resolution (GetTransferStatus to the source) attempts and next time.
    Column("checks", Integer, nullable=False, server_default="0"),
    Column("next_check_at_ms", BigInteger),
    #: Priced trade (migration 0006): what the destination account pays the source account,
    #: integer minor units of ``currency``; NULL for a plain transfer.
    Column("price_minor", BigInteger),
    Column("currency", String(3)),
    #: The paid account, ``<source node>/acct_...`` (``out``: this node's ``from_account``).
    Column("seller", String(200)),
    # Keyset pages of `eap-node transfers` (oldest first, migration 0014), per filter.
    Index("ix_transfers_direction_state_created", "direction", "state", "created_at_ms", "id"),
    Index("ix_transfers_direction_created", "direction", "created_at_ms", "id"),
    Index("ix_transfers_state_created", "state", "created_at_ms", "id"),
    Index("ix_transfers_created", "created_at_ms", "id"),
    Index("ix_transfers_range", "issuer", "serial_start"),
)

#: Messages a transfer owes a peer, written in the same transaction as the state change that
#: owes them; delivered (and re-delivered with backoff) until the peer acknowledges.
transfer_outbox = Table(
    "transfer_outbox",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("transfer_id", String(200), nullable=False),
    Column("peer", String(253), nullable=False),
    #: ``prepare`` | ``commit`` | ``abort``.
    Column("kind", String(16), nullable=False),
    #: The serialised TransferPrepare / TransferDecision (sealed afresh on every attempt).
    Column("payload", LargeBinary, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at_ms", BigInteger, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("acked_at_ms", BigInteger),
    Column("last_error", String(512)),
    #: W3C ``traceparent`` of the operation that queued the message: a delivery by the
    #: background worker continues that trace (docs/observability.md).  Never sent as is.
    Column("traceparent", String(64)),
    UniqueConstraint("transfer_id", "kind", name="uq_transfer_outbox_kind"),
    Index("ix_transfer_outbox_due", "acked_at_ms", "next_attempt_at_ms"),
)

#: Transfer messages received, by transfer id and kind, with the first answer given: a
#: replayed or duplicated message gets that answer again and changes nothing.
transfer_inbox = Table(
    "transfer_inbox",
    metadata,
    Column("transfer_id", String(200), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("origin", String(253), nullable=False),
    Column("response", LargeBinary, nullable=False),
    Column("received_at_ms", BigInteger, nullable=False),
)

#: Payment obligations from priced trades (a transfer paired with a price), netted per period
#: (docs/operator-guide.md "Trades").  A cross-node trade is recorded by both nodes, each in the
#: transaction of its side of the commit, under the same ``obligation_id``.
obligations = Table(
    "obligations",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    #: Federation-wide id (0006): the transfer id of a cross-node trade (the same on both
    #: nodes), ``<node>/trade/<n>`` for a trade inside this node.
    Column("obligation_id", String(200), nullable=False),
    #: Cross-node trades: the transfer that carried the Wh.
    Column("transfer_id", String(200)),
    #: Cross-node trades: the other node (destination on the source, source on the destination).
    Column("peer", String(253)),
    #: Settlement period, the UTC day ("YYYY-MM-DD"): of the trade for a local one, of the
    #: prepare's expiry for a cross-node one (known to both nodes, so they agree).
    Column("period", String(10), nullable=False),
    #: Accounts: bare ``acct_...`` of this node for a local trade, qualified
    #: ``<node>/acct_...`` on both sides of a cross-node trade; read them through
    #: :func:`eap.node.records.parties.qualified`.
    Column("payer", String(200), nullable=False),
    Column("payee", String(200), nullable=False),
    #: Integer minor units of ``currency`` (cents), > 0.
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("bundle_id", String(200), nullable=False),
    Column("wh", BigInteger, nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    #: The settlement round that settled it (set by the round, never cleared); NULL = unsettled.
    Column("settled_round", String(200)),
    UniqueConstraint("obligation_id", name="uq_obligations_obligation_id"),
    Index("ix_obligations_period", "period", "currency"),
    Index("ix_obligations_settled_round", "settled_round"),
)

#: Per peer node and currency: how much its accounts may owe this node's accounts (net), and
#: the net balance either way past which a settlement round is requested (0 = never).
peer_limits = Table(
    "peer_limits",
    metadata,
    Column("peer", String(253), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("credit_limit_minor", BigInteger, nullable=False),
    Column("settle_threshold_minor", BigInteger, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
)

#: Settlement rounds asked for by a trade whose commit took a peer balance to its threshold.
#: Trades only insert (at most one open request per peer and period); the settlement worker
#: takes a request by setting ``taken_at_ms`` and runs the period's round.
settlement_requests = Table(
    "settlement_requests",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("period", String(10), nullable=False),
    Column("peer", String(253), nullable=False),
    Column("reason", String(512), nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("taken_at_ms", BigInteger),
    Index("ix_settlement_requests_open", "taken_at_ms", "id"),
)

#: Settlement rounds this node ran or took part in (docs/settlement.md "Rounds").  One row per
#: round at every participant; the coordinator's row also carries ``finals_pending`` (JSON list
#: of participants not yet acknowledging the final) once the round is decided.
settlement_rounds = Table(
    "settlement_rounds",
    metadata,
    Column("round_id", String(300), primary_key=True),
    Column("period", String(10), nullable=False),
    Column("coordinator", String(253), nullable=False),
    #: gathering | signing | final | settled | failed
    Column("state", String(16), nullable=False),
    #: RunSettlement idempotency key (coordinator only).
    Column("request_id", String(128), nullable=True),
    #: This node's own signed view (serialised ``Signed``), replayed to a repeated request.
    Column("view", LargeBinary, nullable=True),
    #: The serialised ``SettlementStatement`` (the exact bytes signed).
    Column("statement", LargeBinary, nullable=True),
    Column("digest", String(64), nullable=True),
    #: JSON list of participant node ids.
    Column("participants", Text, nullable=False),
    #: JSON list of this node's agreed obligation ids in the round.
    Column("obligation_ids", Text, nullable=False),
    Column("finals_pending", Text, nullable=True),
    #: JSON list of lines.
    Column("problems", Text, nullable=False),
    Column("started_at_ms", BigInteger, nullable=False),
    Column("signed_at_ms", BigInteger, nullable=True),
    Column("finished_at_ms", BigInteger, nullable=True),
    UniqueConstraint("request_id", name="uq_settlement_rounds_request_id"),
    Index("ix_settlement_rounds_started", "started_at_ms"),
    Index("ix_settlement_rounds_state", "state"),
)

#: Every participant's signature of a round's statement (serialised ``Signed``).
settlement_signatures = Table(
    "settlement_signatures",
    metadata,
    Column("round_id", String(300), primary_key=True),
    Column("node_id", String(253), primary_key=True),
    Column("signed", LargeBinary, nullable=False),
)

#: The sides of settlement instructions this node executes through its backend: ``debit``
#: when the payer is this node's account, ``credit`` when the payee is.  Idempotency key of
#: the backend call: ``(instruction_id, side)``.
settlement_executions = Table(
    "settlement_executions",
    metadata,
    Column("instruction_id", String(320), primary_key=True),
    Column("side", String(8), primary_key=True),
    Column("round_id", String(300), nullable=False),
    Column("payer", String(200), nullable=False),
    Column("payee", String(200), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    #: pending | executed
    Column("state", String(16), nullable=False),
    Column("backend", String(64), nullable=True),
    #: The backend's receipt (JSON).
    Column("receipt", Text, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at_ms", BigInteger, nullable=False),
    Column("last_error", String(500), nullable=True),
    Column("executed_at_ms", BigInteger, nullable=True),
    Index("ix_settlement_executions_due", "state", "next_attempt_at_ms"),
    Index("ix_settlement_executions_round", "round_id"),
)


#: Issuer side: where each range of this node's own serials is held (docs/custody.md).  Rows
#: are disjoint and cover every serial issued; a move splits a row.  ``holder`` is this node for
#: what never left (its ``bundles`` say active or retired), else the node holding it now.
custody = Table(
    "custody",
    metadata,
    Column("serial_start", BigInteger, primary_key=True, autoincrement=False),
    Column("serial_end", BigInteger, nullable=False),
    Column("holder", String(253), nullable=False),
    #: The (remote) holder reported the range retired.
    Column("retired", Boolean, nullable=False, server_default="0"),
    #: Transfer that last moved it, or the claim that retired it.
    Column("ref", String(200)),
    Column("updated_at_ms", BigInteger, nullable=False),
)

#: Issuer side: every MoveCustody asked of this node, by transfer id, with its final answer
#: (the inbox of the custody step: a replay gets the same answer).
custody_moves = Table(
    "custody_moves",
    metadata,
    Column("transfer_id", String(200), primary_key=True),
    Column("origin", String(253), nullable=False),
    Column("to_node", String(253), nullable=False),
    Column("serial_start", BigInteger, nullable=False),
    Column("serial_end", BigInteger, nullable=False),
    #: ``moved`` or ``refused``.
    Column("outcome", String(16), nullable=False),
    Column("reason", String(512)),
    #: The signed CustodyRecord (serialised ``Signed``) for ``moved``.
    Column("record", LargeBinary),
    Column("at_ms", BigInteger, nullable=False),
)

#: Issuer side: retirements of its serials reported by the nodes holding them.
retirement_reports = Table(
    "retirement_reports",
    metadata,
    Column("claim_id", String(200), primary_key=True),
    Column("origin", String(253), nullable=False),
    Column("serial_start", BigInteger, nullable=False),
    Column("serial_end", BigInteger, nullable=False),
    Column("recorded", Boolean, nullable=False),
    Column("reason", String(512)),
    Column("at_ms", BigInteger, nullable=False),
)

#: Holder side: the proof (and issuer's custody record) of each bundle that came from another
#: node; proofs of its descendants extend its lineage.
provenance = Table(
    "provenance",
    metadata,
    Column("bundle_id", String(200), primary_key=True),
    #: Serialised RecordProof whose lineage ends at ``bundle_id``.
    Column("proof", LargeBinary, nullable=False),
    #: Serialised ``Signed`` CustodyRecord of the move that brought it here (None coming home).
    Column("custody", LargeBinary),
)

# -- co-op ledger (migration 0008) ----------------------------------------------------------------

#: Accounts of the built-in double-entry ledger (``eap.plugins.coop_ledger``), one row per
#: account and currency.  ``member``: a local account (``acct_...``) that may not go below
#: ``-credit_line_minor``; ``clearing``: ``clearing:<node id>``, what this node's members owe
#: (negative) or are owed by (positive) another node's members, no limit.  ``balance_minor`` is
#: the sum of the account's postings, kept in the same transaction as each posting.
ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", String(300), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("credit_line_minor", BigInteger, nullable=False, server_default="0"),
    Column("balance_minor", BigInteger, nullable=False, server_default="0"),
    Column("updated_at_ms", BigInteger, nullable=False),
)

#: One balanced journal entry per executed settlement instruction side, posted once per
#: idempotency key (``<instruction id>:<side>``); ``digest`` (SHA-256 of the instruction's
#: terms) tells a replay from a reuse of the key with other terms.
ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("entry_id", String(64), primary_key=True),
    Column("idempotency_key", String(400), nullable=False, unique=True),
    Column("round_id", String(300), nullable=False),
    Column("instruction_id", String(320), nullable=False),
    Column("side", String(8), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Index("ix_ledger_entries_round", "round_id"),
)

#: The postings of each entry: signed minor units (credit > 0, debit < 0); the postings of an
#: entry sum to zero per currency.
ledger_postings = Table(
    "ledger_postings",
    metadata,
    Column("entry_id", String(64), primary_key=True),
    Column("account", String(300), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("amount_minor", BigInteger, nullable=False),
    Index("ix_ledger_postings_account", "account", "currency"),
)

#: Issuance batches waiting to be anchored, one row per (batch seq, anchoring plugin), written
#: in the issuance transaction and marked done once the plugin returned: a crash or an outage
#: between issuance and anchoring leaves the row pending, and the anchor worker (or
#: ``eap-node anchor catch-up``) sends it later.  Plugins are idempotent per seq.
anchor_queue = Table(
    "anchor_queue",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("plugin", String(128), primary_key=True),
    Column("enqueued_at_ms", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("anchored_at_ms", BigInteger, nullable=True),
    Index("ix_anchor_queue_pending", "plugin", "anchored_at_ms", "seq"),
)

#: Duplicate-device check (docs/security.md "Duplicate devices"): this node's published tag of
#: each local meter, ``tag(self, F_k(meter))`` under its own OPRF key, in registration order;
#: peers page through it by ``seq``.  Never holds the meter id.
device_tags = Table(
    "device_tags",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("device_id", String(64), nullable=False, unique=True),
    Column("tag", LargeBinary(16), nullable=False),
    Column("added_at_ms", BigInteger, nullable=False),
    Index("ix_device_tags_tag", "tag"),
)

#: Tags a peer published (its ``device_tags``), copied by ``seq``: compared locally with
#: ``device_peer_tags`` to find a meter registered at both nodes.
peer_device_tags = Table(
    "peer_device_tags",
    metadata,
    Column("peer", String(253), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("tag", LargeBinary(16), nullable=False),
    Index("ix_peer_device_tags_tag", "peer", "tag"),
)

#: The tag of each local meter under a peer's key, obtained once by a blinded evaluation at
#: that peer: what this node would find in the peer's ``device_tags`` if it had the meter too.
device_peer_tags = Table(
    "device_peer_tags",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("peer", String(253), primary_key=True),
    Column("tag", LargeBinary(16), nullable=False),
    Column("checked_at_ms", BigInteger, nullable=False),
    Index("ix_device_peer_tags_tag", "peer", "tag"),
)

#: Durable duplicate alerts: a local meter (``device_id``; empty when the registration was
#: refused) whose tag a peer publishes too.  ``action``: ``refused`` or ``flagged``.
device_duplicates = Table(
    "device_duplicates",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("peer", String(253), nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("local_ref", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("peer_tag", LargeBinary(16), nullable=False),
    Column("detected_at_ms", BigInteger, nullable=False),
    UniqueConstraint("peer", "peer_tag", "device_id", "action", name="uq_device_duplicates"),
)
