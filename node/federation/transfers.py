"""Exactly-once transfer of a bundle to an account on another node (DESIGN §6).

Presumed-abort two-phase commit with durable decisions.  The source node S is the coordinator,
the destination node D the only participant; the transfer id is ``"<S>/<uuid>"``.

Source (direction ``out``)::

    start ──► PREPARING ──(D answers PREPARED before expiry)──► COMMITTED   bundle EXPORTED
                   │                                                        outbox: COMMIT
                   └──(D answers ABORTED, or expiry, or a bad request)──► ABORTED
                                                                            bundle ACTIVE again
                                                                            outbox: ABORT

Destination (direction ``in``)::

    PREPARE ──(valid)──► PREPARED ──(COMMIT, or S's status says COMMITTED)──► COMMITTED
       │                    │                                            bundle ACTIVE here
       │                    └──(ABORT, or S says ABORTED / has no record)──► ABORTED
       └──(invalid)──► ABORTED (the answer says why)

Every state change is one database transaction, and a message it owes the peer is written to
the outbox in that same transaction, so the decision is durable before it is announced.  The
outbox is delivered inline right after the call that wrote it (the fast path) and by the
node's background worker (:meth:`Transfers.tick`) with backoff and jitter until the peer
acknowledges.  Incoming messages are de-duplicated by the inbox (transfer id + kind): a
replayed message gets the first answer and changes nothing.  S never commits after the
expiry; D never decides on its own: a PREPARED import it has not heard about is resolved by
asking S (``GetTransferStatus``), and S without a record means abort.

What an incoming prepare or commit must pass to be accepted is :mod:`.admission`.  Crash
points (:mod:`.crashpoints`) mark every durability point for fault tests.  The
state machines, messages and recovery rules are described in ``docs/transfers.md``.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.message import DecodeError
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from eap.node.api import convert
from eap.node.domain import (
    custody,
    holder_auth,
    idempotency,
    ledger,
    peer_credit,
    provenance,
)
from eap.node.domain import obligations as obl
from eap.node.domain.holder_auth import HolderAuth
from eap.node.domain.rules import (
    ACCOUNT_RE,
    NODE_ID_RE,
    Checker,
)
from eap.node.errors import (
    Aborted,
    EapError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    invalid,
)
from eap.node.federation import admission, crashpoints
from eap.node.federation.admission import MAX_SERIAL, MAX_TTL_S, PREPARED
from eap.node.federation.audit import PT_HOLDINGS_REQUEST, HoldingsService
from eap.node.federation.custody import (
    PT_CUSTODY_ANSWER,
    PT_CUSTODY_REQUEST,
    PT_RETIREMENT,
    PT_RETIREMENT_ACK,
    CustodyService,
)
from eap.node.federation.peers import TrustList
from eap.node.federation.settlement import Settlement
from eap.node.records.enums import Status
from eap.node.records.models import Bundle, Principal, Serialisable
from eap.node.store import custody_repos as cr
from eap.node.store import obligation_repos as ob
from eap.node.store import peer_repos, repos
from eap.node.store import transfer_repos as tr
from eap.node.telemetry import ops as telemetry_ops
from eap.node.telemetry.metrics import outbox_depth
from eap.node.telemetry.ops import traced
from eap.v1 import federation_pb2 as fed
from eap.v1 import types_pb2 as pb

log = logging.getLogger(__name__)

OUT, IN = tr.OUT, tr.IN

# States (stored as text; the wire uses eap.v1.TransferState; PREPARED, the state of an
# import admitted and waiting for the source's decision, comes with the admission rules).
PREPARING = "preparing"
COMMITTED = "committed"
ABORTED = "aborted"
FINAL = (COMMITTED, ABORTED)

# Message kinds (outbox and inbox); CUSTODY asks the issuer to move its custody, RETIRE
# reports a retirement to the issuer.
PREPARE, COMMIT, ABORT = "prepare", "commit", "abort"
CUSTODY, RETIRE = custody.CUSTODY, custody.RETIRE
#: custody_state of an outgoing transfer of a third party's serials.
REQUESTED = "requested"

PT_PREPARE = fed.TransferPrepare.DESCRIPTOR.full_name
PT_DECISION = fed.TransferDecision.DESCRIPTOR.full_name
PT_STATUS = fed.TransferStatus.DESCRIPTOR.full_name

_RPC = {PREPARE: "PrepareTransfer", COMMIT: "DecideTransfer", ABORT: "DecideTransfer",
        CUSTODY: "MoveCustody", RETIRE: "ReportRetirement"}
_PAYLOAD = {PREPARE: PT_PREPARE, COMMIT: PT_DECISION, ABORT: PT_DECISION,
            CUSTODY: PT_CUSTODY_REQUEST, RETIRE: PT_RETIREMENT}
#: Errors of the issuer that mean it recorded nothing and never will for this request.
_DEFINITE = (InvalidArgument, PermissionDenied, NotFound, FailedPrecondition)
_WIRE = {
    PREPARING: fed.TRANSFER_STATE_PREPARING,
    PREPARED: fed.TRANSFER_STATE_PREPARED,
    COMMITTED: fed.TRANSFER_STATE_COMMITTED,
    ABORTED: fed.TRANSFER_STATE_ABORTED,
}

#: ``<node id>/<token>``: the transfer id chosen by the source.
TRANSFER_ID_RE = re.compile(r"^(?P<node>[a-z0-9.-]{1,128})/[A-Za-z0-9-]{1,64}$")


class Transport(Protocol):
    """How the engine reaches a peer (``eap.node.federation.client.PeerClient`` in a node)."""

    def call(self, peer_id: str, rpc_name: str, payload_type: str, payload_bytes: bytes, *,
             timeout: float | None = None, attempts: int | None = None) -> tuple[str, bytes]: ...


@dataclass(frozen=True)
class TransferSettings:
    """Timing of the transfer engine; ``[transfers]`` in ``eap-node.toml`` overrides them."""

    #: Lifetime of a prepare: S commits only if D's PREPARED answer arrives within it.
    ttl_s: float = 30.0
    #: How long the caller that wrote an outbox message owns its delivery before the
    #: background worker may take it over (a crashed caller's message waits this long).
    lease_s: float = 2.0
    #: Deadline of one call to the peer.
    rpc_timeout_s: float = 5.0
    #: Attempts the transport makes within one delivery (it backs off between them).
    rpc_attempts: int = 2
    #: Redelivery backoff of the outbox: ``min(cap, base * 2**attempts)``, jittered to 50-100 %.
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 30.0
    #: D asks S about a PREPARED import it has not heard the decision of after this long.
    inquire_after_s: float = 10.0
    inquire_cap_s: float = 60.0
    #: How long a CLI/API call waits for its transfer to finish before returning it in flight.
    inline_wait_s: float = 10.0
    #: Messages / transfers handled per background round.
    batch: int = 64
    #: Period of the background round in ``eap-node serve``.
    worker_interval_s: float = 0.5

    @classmethod
    def from_config(cls, config: Any) -> TransferSettings:
        """``[transfers]`` of a node's config (unknown keys are a config error)."""
        from eap.node.errors import ConfigError

        table = dict((getattr(config, "extra", None) or {}).get("transfers", {}))
        known = {f for f in cls.__dataclass_fields__}
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"unknown setting transfers.{key}")
            try:
                values[key] = int(value) if key in ("rpc_attempts", "batch") else float(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"invalid transfers.{key} = {value!r}") from exc
        return cls(**values)


@dataclass
class TransferRecord(Serialisable):
    """One side's durable view of a cross-node transfer."""

    id: str
    direction: str
    peer: str
    state: str
    wh: int
    bundle_id: str | None = None
    to_account: str | None = None
    from_account: str | None = None
    source_bundle_id: str | None = None
    remainder_id: str | None = None
    expires_at_ms: int = 0
    created_at_ms: int = 0
    decided_at_ms: int | None = None
    reason: str | None = None
    #: Kinds of messages this side still owes the peer (outbox, unacknowledged).
    pending: list[str] = field(default_factory=list)
    last_error: str | None = None
    #: A priced trade: what the buyer pays the seller, minor units of ``currency`` (else 0).
    price_minor: int = 0
    currency: str = ""

    @property
    def settled(self) -> bool:
        """Decided, and nothing left to tell the peer."""
        return self.state in FINAL and not self.pending


@dataclass
class OutboundTransfer(Serialisable):
    """First result of starting a transfer (replayed for the same request id)."""

    transfer: TransferRecord
    exported: Bundle
    remainder: Bundle | None = None


def split_destination(to: str) -> tuple[str, str]:
    """``"NODE_ID/ACCOUNT"`` → ``(node id, account)``."""
    node_id, sep, account = (to or "").partition("/")
    check = Checker()
    check.require(bool(sep), "to", "must be NODE_ID/ACCOUNT")
    check.text(node_id, "to.node", max_len=128, pattern=NODE_ID_RE, hint="a DNS-like node id")
    check.text(account, "to.account", max_len=64, pattern=ACCOUNT_RE, hint="an acct_ id")
    check.done()
    return node_id, account


class Transfers:
    """The transfer engine of one node: source operations, destination handlers, recovery.

    Args:
        node: the :class:`~eap.node.domain.node.Node` (its store, id, and spend rules).
        transport: reaches peers (a ``PeerClient``); without one, messages wait in the outbox.
        settings: timings (default: the node's ``[transfers]`` config).
        clock: seconds since the epoch (tests pass a fake clock).
        rng: jitter source.

    It is also the handler of the federation server's transfer RPCs (``on_prepare``,
    ``on_decision``, ``on_status``).  Thread-safe: all state lives in the database.
    """

    #: Payload type each handler accepts (the federation servicer checks it when opening).
    payload_types = {"on_prepare": PT_PREPARE, "on_decision": PT_DECISION,
                     "on_status": PT_STATUS, "on_move_custody": PT_CUSTODY_REQUEST,
                     "on_report_retirement": PT_RETIREMENT,
                     "on_get_holdings": PT_HOLDINGS_REQUEST,
                     **Settlement.payload_types}

    def __init__(self, node: Any, transport: Transport | None = None, *,
                 settings: TransferSettings | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 trust: TrustList | None = None) -> None:
        self.node = node
        self.store = node.store
        self.me: str = node.node_id
        self.transport = transport
        self.settings = settings or TransferSettings.from_config(node.config)
        self._clock = clock
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._local = threading.local()  # what the current thread's start() just wrote
        self.trust = trust or TrustList(self.store, self.me)
        self.custody = CustodyService(node, self.trust, clock=clock)
        #: ``fetch_batches(issuer)``: syncs that peer's batches now (set by the runtime).
        self.fetch_batches: Callable[[str], Any] | None = None
        self._synced: set[tuple[str, int]] = set()
        self.holdings = HoldingsService(node, clock=clock)
        #: Settlement rounds: participant handlers, coordinator and executor.
        self.settlement = Settlement(node, transport, self.trust, clock=clock)

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def signatures(self) -> provenance.SignatureCheck:
        """Checks signatures by this node or a trusted peer, with the trust list as it is now.

        Taken before a transaction opens: reading the trust list inside a SQLite write
        transaction would wait for that transaction.
        """
        return provenance.signature_check(self.me, self.node.keys, self.trust.peer_keys)

    # -- record lifecycle events (eap_record_event), told after the commit ----------------------

    def _queue_event(self, kind: str, **fields: Any) -> None:
        """Queue an event of the transaction in progress; :meth:`_flush_events` tells it once
        that transaction committed (an attempt that rolls back drops it)."""
        self._local.__dict__.setdefault("events", []).append((kind, fields))

    def _drop_events(self) -> None:
        self._local.__dict__.pop("events", None)
        self._local.__dict__.pop("aborts", None)

    def _flush_events(self) -> None:
        record = getattr(self.node, "record_event", None)
        for direction in self._local.__dict__.pop("aborts", []):
            telemetry_ops.transfer_aborted(self.node, direction)
        for kind, fields in self._local.__dict__.pop("events", []):
            if record is not None:
                record(kind, fields.pop("request_id", "") or "", **fields)

    def on_move_custody(self, envelope: Any) -> tuple[str, bytes]:
        """MoveCustody (this node is the issuer): see :class:`CustodyService`."""
        return self.custody.on_move_custody(envelope)

    def on_report_retirement(self, envelope: Any) -> tuple[str, bytes]:
        """ReportRetirement (this node is the issuer): see :class:`CustodyService`."""
        return self.custody.on_report_retirement(envelope)

    def on_get_holdings(self, envelope: Any) -> tuple[str, bytes]:
        """GetHoldings (any trusted peer): see :class:`~.audit.HoldingsService`."""
        return self.holdings.on_get_holdings(envelope)

    def on_get_settlement_view(self, envelope: Any) -> tuple[str, bytes]:
        """GetSettlementView (the round's coordinator): see :class:`~.settlement.Settlement`."""
        return self.settlement.on_get_settlement_view(envelope)

    def on_sign_settlement(self, envelope: Any) -> tuple[str, bytes]:
        """SignSettlement (the round's coordinator): see :class:`~.settlement.Settlement`."""
        return self.settlement.on_sign_settlement(envelope)

    def on_finalize_settlement(self, envelope: Any) -> tuple[str, bytes]:
        """FinalizeSettlement (the round's coordinator): see :class:`~.settlement.Settlement`."""
        return self.settlement.on_finalize_settlement(envelope)

    # == source ===================================================================================

    @traced("eap.transfer.prepare", lambda o: {
        "scope": "cross_node", "transfer_id": o.transfer.id, "wh": o.transfer.wh,
        "split": o.remainder is not None})
    def start(self, bundle_ref: str, *, to: str, wh: int = 0, request_id: str,
              principal: Principal | None = None, ttl_s: float | None = None,
              price_minor: int = 0, currency: str = "",
              holder: HolderAuth | None = None) -> OutboundTransfer:
        """Lock ``wh`` Wh of a bundle (all of it by default) for ``to`` = ``NODE_ID/ACCOUNT``.

        One transaction: spend rules, split if partial, range ``EXPORT_PENDING``, the transfer
        row (``preparing``) and the PREPARE message in the outbox.  Nothing is sent: see
        :meth:`send` / :meth:`pump`.  Idempotent by ``request_id``.

        With ``price_minor`` (integer minor units of ``currency``) it is a priced trade: the
        buyer ``to`` owes the source account that amount.  The prepare carries the price and
        the seller; each node records the obligation in the transaction of its side of the
        commit (:meth:`_decide`, :meth:`_finish_import`), under the transfer id, in the period
        of the prepare's expiry.  The peer's credit limit is checked here
        (:mod:`eap.node.domain.peer_credit`).

        Raises:
            InvalidArgument: malformed destination, amount or price (unknown currency).
            NotFound / PermissionDenied / FailedPrecondition: as a local transfer; also
                FailedPrecondition when the destination node is not on the trust list, or
                when the price would take the peer's balance past its credit limit.
        """
        principal = principal or Principal.operator()
        to_node, to_account = split_destination(to)
        check = Checker()
        check.int_range(wh, "wh", 0, MAX_SERIAL, "Wh")
        priced = bool(price_minor or currency)
        if priced:
            obl.check_price(check, price_minor, currency)
        check.require(to_node != self.me, "to.node",
                      "is this node; use a local transfer to one of its accounts")
        ttl = self.settings.ttl_s if ttl_s is None else ttl_s
        check.require(isinstance(ttl, int | float) and 0 < ttl <= MAX_TTL_S, "ttl_s",
                      f"must be within (0, {MAX_TTL_S}] seconds")
        check.done()

        def op(conn: Connection) -> OutboundTransfer:
            self._local.created = None
            peer = peer_repos.get_peer(conn, to_node)
            if peer is None:
                raise FailedPrecondition(f"{to_node} is not on this node's trust list",
                                         [_fv("to.node", "not a peer")])
            bundle, version = ledger.spendable(conn, bundle_ref, principal, wh)
            holder_auth.require(conn, holder_auth.Intent(
                node_id=self.me, account=bundle.owner, operation=holder_auth.TRANSFER_OUT,
                moves=((bundle.id, wh),), destination=f"{to_node}/{to_account}",
                price_minor=price_minor, currency=currency, request_id=request_id,
                expires_at_ms=holder.expires_at_ms if holder else 0), holder)
            if priced:
                peer_credit.check_credit(conn, self.me, to_node, currency, price_minor)
            now = self.now_ms()
            amount = wh or bundle.wh
            if amount == bundle.wh:
                if not repos.set_bundle_state(conn, bundle.id, version,
                                              expect_status=Status.ACTIVE,
                                              status=int(Status.EXPORT_PENDING)):
                    raise Aborted(f"bundle {bundle.id} changed concurrently; retry")
                bundle.status = int(Status.EXPORT_PENDING)
                moved, rest = bundle, None
                parent_lineage = _lineage_of(conn, bundle.parent_id)
            else:
                moved, rest = ledger.split(conn, bundle, version, amount, bundle.owner,
                                           Status.EXPORT_PENDING)
                parent_lineage = bundle.lineage_hash
            tid = f"{self.me}/{uuid.uuid4()}"
            expires = now + int(ttl * 1000)
            row = {
                "id": tid, "direction": OUT, "peer": to_node, "state": PREPARING,
                "bundle_id": moved.id, "issuer": moved.issuer,
                "serial_start": moved.serial_start, "serial_end": moved.serial_end,
                "wh": amount, "from_account": bundle.owner, "to_account": to_account,
                "source_bundle_id": bundle.id, "remainder_id": rest.id if rest else None,
                "expires_at_ms": expires, "created_at_ms": now, "request_id": request_id,
            }
            seller = f"{self.me}/{bundle.owner}"
            if priced:
                row.update(price_minor=price_minor, currency=currency, seller=seller)
            tr.insert_transfer(conn, row)
            wire = convert.bundle(moved)
            wire.owner = ""  # the source account stays private; the holder is this node
            wire.held_by = self.me
            proof, _ = ledger.proof(conn, self.me, moved)
            prepare = fed.TransferPrepare(transfer_id=tid, bundle=wire, to_account=to_account,
                                          expires_at_ms=expires,
                                          parent_lineage_hash=parent_lineage or "", proof=proof)
            if priced:
                prepare.price.CopyFrom(pb.Price(amount_minor=price_minor, currency=currency))
                prepare.seller = seller
            payload = prepare.SerializeToString()
            mid = tr.outbox_put(conn, transfer_id=tid, peer=to_node, kind=PREPARE,
                                payload=payload, now_ms=now,
                                next_attempt_at_ms=now + self._lease_ms(),
                                traceparent=telemetry_ops.traceparent())
            ledger.journal(conn, "export_prepare", moved.id, bundle.owner,
                               f"{to_node}/{to_account}", amount, request_id)
            crashpoints.hit("source.in_prepare_txn")
            self._local.created = _Msg(mid, tid, to_node, PREPARE, payload, 0)
            return OutboundTransfer(_record(row), moved, rest)

        payload: dict[str, Any] = {"bundle": bundle_ref, "to": to, "wh": wh}
        if priced:
            payload["price"] = [price_minor, currency]
        return idempotency.run(self.store, request_id=request_id, operation="transfer_out",
                               principal=principal, payload=payload,
                               result_type=OutboundTransfer, fn=op)

    @traced("eap.transfer.cross_node", lambda r: {
        "scope": "cross_node", "direction": "out", "transfer_id": r[1].id, "wh": r[1].wh,
        "peer": r[1].peer, "state": r[1].state})
    def send(self, bundle_ref: str, *, to: str, wh: int = 0, request_id: str,
             principal: Principal | None = None, ttl_s: float | None = None,
             wait_s: float | None = None, price_minor: int = 0,
             currency: str = "",
             holder: HolderAuth | None = None) -> tuple[OutboundTransfer, TransferRecord]:
        """:meth:`start`, then deliver its messages inline (:meth:`pump`).

        Returns:
            the first result of the request and the transfer's state when the call returns
            (``committed``/``aborted``, or still ``preparing`` if the peer did not answer
            within ``wait_s``: the background worker finishes it).
        """
        self._local.created = None
        first = self.start(bundle_ref, to=to, wh=wh, request_id=request_id,
                           principal=principal, ttl_s=ttl_s, price_minor=price_minor,
                           currency=currency, holder=holder)
        crashpoints.hit("source.after_prepare_commit")
        created, self._local.created = self._local.created, None
        if created is not None and created.transfer_id == first.transfer.id:
            self._deliver_all([created])  # just written by this call: no need to read it back
        return first, self.pump(first.transfer.id, wait_s=wait_s)

    def pump(self, transfer_id: str, *, wait_s: float | None = None) -> TransferRecord:
        """Deliver one transfer's owed messages now, until it settles or ``wait_s`` passes.

        Messages never tried are sent at once (their writer owns them); failed ones wait for
        their backoff.  Safe to run beside the background worker: handlers are idempotent.
        """
        wait_s = self.settings.inline_wait_s if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s
        while True:
            with self.store.read() as conn:
                rec = tr.get_transfer(conn, transfer_id)
                msgs = tr.outbox_unacked(conn, transfer_id)
            if rec is None:
                raise NotFound(f"no transfer {transfer_id}", [_fv("transfer_id", "unknown")])
            now = self.now_ms()
            if _expirable(rec, now) and self._expire(transfer_id):
                continue
            due = [m for m in msgs if m.attempts == 0 or m.next_attempt_at_ms <= now]
            if due:
                self._deliver_all(due)
                continue
            if not msgs or deadline - time.monotonic() <= 0:
                return _record(rec, msgs)
            left = deadline - time.monotonic()
            wake = min(m.next_attempt_at_ms for m in msgs)
            if _expirable(rec):
                wake = min(wake, rec.expires_at_ms)
            self._sleep(min(left, max(0.001, (wake - now) / 1000)))

    # == destination handlers (called by the federation servicer) =================================

    @traced("eap.transfer.accept_prepare", lambda r: {"direction": "in", "phase": "prepare"})
    def on_prepare(self, envelope: Any) -> tuple[str, bytes]:
        """PREPARE from the source: validate, record the import PREPARED (or ABORTED), answer.

        Raises:
            InvalidArgument: not a TransferPrepare, or a malformed transfer id (not recorded).
            PermissionDenied: the transfer id is not the sender's.
        """
        msg = _parse(fed.TransferPrepare, envelope.payload)
        _check_transfer_id(msg.transfer_id, source=envelope.origin)
        self._catch_up(msg)
        reply = self._record_prepare(envelope.origin, msg, self.signatures())
        crashpoints.hit("dest.after_prepared_commit")
        return PT_STATUS, reply.SerializeToString()

    @traced("eap.transfer.accept_decision", lambda r: {"direction": "in", "phase": "decision"})
    def on_decision(self, envelope: Any) -> tuple[str, bytes]:
        """COMMIT or ABORT from the source: finish the import; a replay changes nothing."""
        msg = _parse(fed.TransferDecision, envelope.payload)
        _check_transfer_id(msg.transfer_id, source=envelope.origin)
        if msg.decision == fed.TRANSFER_STATE_COMMITTED:
            kind = COMMIT
        elif msg.decision == fed.TRANSFER_STATE_ABORTED:
            kind = ABORT
        else:
            raise invalid("decision", "must be COMMITTED or ABORTED")
        reply = self._record_decision(envelope.origin, msg.transfer_id, kind,
                                      msg.custody if msg.HasField("custody") else None)
        crashpoints.hit("dest.after_commit_commit" if kind == COMMIT else "dest.after_abort_commit")
        return PT_STATUS, reply.SerializeToString()

    def on_status(self, envelope: Any) -> tuple[str, bytes]:
        """GetTransferStatus from the other party: this node's durable view of the transfer.

        The source answers for an undecided transfer past its expiry by aborting it first;
        without a record it answers UNKNOWN (presumed abort).
        """
        msg = _parse(fed.TransferStatus, envelope.payload)
        tid = msg.transfer_id
        if not TRANSFER_ID_RE.match(tid or ""):
            raise invalid("transfer_id", "malformed transfer id")
        with self.store.read() as conn:
            rec = tr.get_transfer(conn, tid)
        if rec is None:
            return PT_STATUS, fed.TransferStatus(
                transfer_id=tid, state=fed.TRANSFER_STATE_UNKNOWN,
                reason=f"{self.me} has no record of this transfer").SerializeToString()
        if rec.peer != envelope.origin:
            raise PermissionDenied(f"{envelope.origin} is not a party to transfer {tid}")
        if _expirable(rec, self.now_ms()):
            self._expire(tid)
            with self.store.read() as conn:
                rec = tr.get_transfer(conn, tid)
        return PT_STATUS, _status(rec).SerializeToString()

    # == background work ==========================================================================

    def tick(self, *, force: bool = False) -> int:
        """One round of the background worker; returns how many things it moved on.

        Aborts this node's undecided transfers past their expiry, (re)delivers due outbox
        messages, and asks sources about PREPARED imports that have waited too long.
        ``force`` ignores leases and backoff (a restarted node catching up at once).
        """
        moved = self._expire_overdue()
        moved += self._dispatch_due(force=force)
        moved += self._resolve_in_doubt(force=force)
        return moved

    def recover(self) -> int:
        """Finish or abort whatever this node began before a restart (``tick(force=True)``)."""
        return self.tick(force=True)

    # == reads ====================================================================================

    def get(self, transfer_id: str) -> TransferRecord:
        with self.store.read() as conn:
            row = tr.get_transfer(conn, transfer_id)
            if row is None:
                raise NotFound(f"no transfer {transfer_id}", [_fv("transfer_id", "unknown")])
            msgs = tr.outbox_unacked(conn, transfer_id)
        return _record(row, msgs)

    def list(self, *, direction: str | None = None, state: str | None = None, after: str = "",
             limit: int = 100) -> list[TransferRecord]:
        """Transfers oldest first; ``after`` is :meth:`page_token` of the last one seen."""
        if direction not in (None, "", OUT, IN):
            raise invalid("direction", "must be 'out' or 'in'")
        if state not in (None, "", PREPARING, PREPARED, COMMITTED, ABORTED):
            raise invalid("state", "must be preparing, prepared, committed or aborted")
        with self.store.read() as conn:
            rows = tr.list_transfers(conn, direction=direction or None, state=state or None,
                                     after=_parse_token(after), limit=max(1, min(limit, 1000)))
            pending = tr.outbox_unacked_for(conn, [r.id for r in rows if r.direction == OUT])
        return [_record(r, pending.get(r.id, ())) for r in rows]

    @staticmethod
    def page_token(record: TransferRecord) -> str:
        return f"{record.created_at_ms}:{record.id}"

    def backlog(self) -> dict[str, int]:
        """Unacknowledged outbox messages by kind."""
        with self.store.read() as conn:
            return tr.outbox_backlog(conn)

    # == source internals =========================================================================

    def _lease_ms(self) -> int:
        return int(self.settings.lease_s * 1000)

    def _backoff_ms(self, attempts: int, base_s: float, cap_s: float) -> int:
        delay = min(cap_s, base_s * 2 ** min(attempts, 32))
        return max(1, int(delay * (0.5 + self._rng.random() / 2) * 1000))

    def _deliver_all(self, msgs: list) -> int:
        """Deliver messages, then at once the messages their answers made owed (a PREPARED
        answer makes the COMMIT); returns how many were acknowledged."""
        queue, done = list(msgs), 0
        while queue:
            ok, follow = self._deliver(queue.pop(0))
            done += ok
            queue += follow
        return done

    def _deliver(self, m: Any) -> tuple[bool, list]:
        """Send one outbox message and record the answer, as the span
        ``eap.transfer.deliver``: in the trace that queued it when the background worker
        sends it (:func:`~eap.node.telemetry.ops.resumed`)."""
        with telemetry_ops.resumed(self.node, "eap.transfer.deliver",
                                   getattr(m, "traceparent", None), phase=m.kind, peer=m.peer,
                                   transfer_id=m.transfer_id) as s:
            answered, follow = self._deliver_message(m)
            telemetry_ops.annotate(s, outcome="ok" if answered else "unanswered")
            return answered, follow

    def _deliver_message(self, m: Any) -> tuple[bool, list]:
        """Send one outbox message and record the answer.

        Returns:
            whether the peer answered, and the messages its answer made owed (written by this
            call, hence owned by it: the caller sends them next).
        """
        if m.kind in (CUSTODY, RETIRE):
            return self._deliver_to_issuer(m)
        self._drop_events()
        try:
            if self.transport is None:
                raise Unavailable("no federation transport on this node process")
            rtype, data = self.transport.call(
                m.peer, _RPC[m.kind], _PAYLOAD[m.kind], bytes(m.payload),
                timeout=self.settings.rpc_timeout_s, attempts=self.settings.rpc_attempts)
            if rtype != PT_STATUS:
                raise InvalidArgument(f"{m.peer} answered {_RPC[m.kind]} with {rtype}")
            reply = fed.TransferStatus.FromString(data)
            if reply.transfer_id != m.transfer_id:
                raise InvalidArgument(f"{m.peer} answered about another transfer")
        except Exception as exc:  # every failure is retried (or aborts a prepare)
            return False, self._failed(m, exc)
        crashpoints.hit(f"source.after_send_{m.kind}")
        decided, follow = False, []
        now = self.now_ms()
        # Recording an acknowledgement need not be forced to disk: if it is lost, the message
        # is sent again and the peer's inbox answers it again.  A decision is always forced.
        with (self.store.transaction() if m.kind == PREPARE
              else tr.lazy_transaction(self.store)) as conn:
            note = None
            if m.kind != PREPARE and reply.state != _WIRE[COMMITTED if m.kind == COMMIT
                                                          else ABORTED]:
                note = (f"{m.peer} answered {fed.TransferState.Name(reply.state)} to "
                        f"{m.kind.upper()}: {reply.reason}")[:500]
                log.error("transfer %s: %s", m.transfer_id, note)
            tr.outbox_ack(conn, m.id, now, note)
            if m.kind == PREPARE:
                decided, follow = self._apply_vote(conn, m.transfer_id, reply)
        self._flush_events()
        if decided:
            crashpoints.hit("source.after_decision_commit")
        return True, follow

    def _deliver_to_issuer(self, m: Any) -> tuple[bool, list]:
        """Send a CUSTODY or RETIRE message to the issuer and record its answer."""
        expected = PT_CUSTODY_ANSWER if m.kind == CUSTODY else PT_RETIREMENT_ACK
        try:
            if self.transport is None:
                raise Unavailable("no federation transport on this node process")
            rtype, data = self.transport.call(
                m.peer, _RPC[m.kind], _PAYLOAD[m.kind], bytes(m.payload),
                timeout=self.settings.rpc_timeout_s, attempts=self.settings.rpc_attempts)
            if rtype != expected:
                raise InvalidArgument(f"{m.peer} answered {_RPC[m.kind]} with {rtype}")
            if m.kind == CUSTODY:
                answer: Any = fed.CustodyAnswer.FromString(data)
                if answer.transfer_id != m.transfer_id:
                    raise InvalidArgument(f"{m.peer} answered about another transfer")
            else:
                answer = fed.RetirementAck.FromString(data)
        except _DEFINITE as exc:  # the issuer recorded nothing and never will for this
            why = f"{m.peer} refused {_RPC[m.kind]}: {exc.message}"[:500]
            answer = (fed.CustodyAnswer(transfer_id=m.transfer_id,
                                        outcome=fed.CUSTODY_OUTCOME_REFUSED, reason=why)
                      if m.kind == CUSTODY else fed.RetirementAck(claim_id=m.transfer_id,
                                                                   reason=why))
        except Exception as exc:  # unreachable or in doubt: ask again (never abort here)
            return False, self._failed(m, exc)
        crashpoints.hit(f"source.after_send_{m.kind}")
        now = self.now_ms()
        if m.kind == RETIRE:
            note = None if answer.recorded else f"not recorded by {m.peer}: {answer.reason}"
            if note:
                log.warning("retirement %s: %s", m.transfer_id, note)
            with tr.lazy_transaction(self.store) as conn:
                tr.outbox_ack(conn, m.id, now, note[:500] if note else None)
            return True, []
        follow: list = []
        sig = self.signatures()
        self._drop_events()
        with self.store.transaction() as conn:  # the answer decides the transfer: forced
            tr.outbox_ack(conn, m.id, now, answer.reason[:500] or None)
            rec = tr.get_transfer(conn, m.transfer_id, lock=True)
            if rec is None or rec.direction != OUT or rec.state != PREPARING:
                return True, []
            msg = self._apply_custody(conn, rec, answer, sig)
            follow = [msg] if msg else []
        self._flush_events()
        crashpoints.hit("source.after_decision_commit")
        return True, follow

    def _apply_custody(self, conn: Connection, rec: Any, answer: fed.CustodyAnswer,
                       sig: provenance.SignatureCheck) -> _Msg | None:
        """The issuer's answer decides: MOVED (with a record that verifies) commits, anything
        else aborts."""
        if answer.outcome == fed.CUSTODY_OUTCOME_MOVED:
            try:
                cust = provenance.custody_record(answer.custody, sig,
                                                 issuer=rec.issuer)
                why = custody.check_record(cust, tid=rec.id, issuer=rec.issuer,
                                           start=rec.serial_start, end=rec.serial_end,
                                           frm=self.me, to=rec.peer)
            except provenance.ProofError as exc:
                why = exc.reason
            if why is None:
                signed = answer.custody.SerializeToString()
                tr.update_transfer(conn, rec.id, custody_state=cr.MOVED, custody=signed)
                return self._decide(conn, rec, COMMITTED, None, notify=True,
                                    prepare_acked=True, signed_custody=answer.custody)
            reason = f"the issuer {rec.issuer}'s custody record does not verify: {why}"
            log.error("transfer %s: %s", rec.id, reason)
        else:
            reason = f"the issuer {rec.issuer} refused custody: {answer.reason}"
        tr.update_transfer(conn, rec.id, custody_state=cr.REFUSED)
        return self._decide(conn, rec, ABORTED, reason[:500], notify=True, prepare_acked=True)

    def _request_custody(self, conn: Connection, rec: Any) -> _Msg:
        """D is PREPARED and the serials are a third party's: ask their issuer to move the
        custody; from now on only its answer decides (no abort at the expiry)."""
        now = self.now_ms()
        tr.update_transfer(conn, rec.id, custody_state=REQUESTED)
        payload = fed.CustodyRequest(
            transfer_id=rec.id, issuer=rec.issuer, serial_start=rec.serial_start,
            serial_end=rec.serial_end, to_node=rec.peer,
            expires_at_ms=rec.expires_at_ms).SerializeToString()
        mid = tr.outbox_put(conn, transfer_id=rec.id, peer=rec.issuer, kind=CUSTODY,
                            payload=payload, now_ms=now, next_attempt_at_ms=now + self._lease_ms(),
                            traceparent=telemetry_ops.traceparent())
        log.info("transfer %s: %s PREPARED; asking the issuer %s to move custody", rec.id,
                 rec.peer, rec.issuer)
        return _Msg(mid, rec.id, rec.issuer, CUSTODY, payload, 0)

    def _failed(self, m: Any, exc: BaseException) -> list:
        """Record a failed delivery (retry with backoff); returns messages it made owed."""
        error = str(exc) or type(exc).__name__
        if m.kind == PREPARE and isinstance(exc, InvalidArgument):
            # The destination rejected the request itself: it will never prepare it.
            log.warning("transfer %s: PREPARE refused by %s: %s", m.transfer_id, m.peer, error)
            follow = None
            with self.store.transaction() as conn:
                tr.outbox_ack(conn, m.id, self.now_ms(), error[:500])
                rec = tr.get_transfer(conn, m.transfer_id, lock=True)
                if rec is not None and rec.state == PREPARING:
                    follow = self._decide(conn, rec, ABORTED,
                                          f"refused by {m.peer}: {error}"[:500], notify=True,
                                          prepare_acked=True)
            if rec is not None and rec.state == PREPARING:
                crashpoints.hit("source.after_decision_commit")
            return [follow] if follow else []
        delay = self._backoff_ms(m.attempts, self.settings.backoff_base_s,
                                 self.settings.backoff_cap_s)
        log.info("transfer %s: %s to %s failed (attempt %d), retry in %d ms: %s",
                 m.transfer_id, m.kind.upper(), m.peer, m.attempts + 1, delay, error)
        with tr.lazy_transaction(self.store) as conn:
            tr.outbox_retry(conn, m.id, attempts=m.attempts + 1,
                            next_attempt_at_ms=self.now_ms() + delay, error=error)
        return []

    def _apply_vote(self, conn: Connection, tid: str,
                    reply: fed.TransferStatus) -> tuple[bool, list]:
        """Record D's answer to PREPARE: (decided now?, the decision message it owes)."""
        rec = tr.get_transfer(conn, tid, lock=True)
        if rec is None or rec.direction != OUT or rec.state != PREPARING:
            return False, []
        if reply.state == fed.TRANSFER_STATE_PREPARED:
            if self.now_ms() < rec.expires_at_ms and rec.issuer not in (self.me, rec.peer):
                return False, [self._request_custody(conn, rec)]
            if self.now_ms() < rec.expires_at_ms:
                msg = self._decide(conn, rec, COMMITTED, None, notify=True, prepare_acked=True)
            else:
                msg = self._decide(conn, rec, ABORTED,
                                   "the destination's PREPARED answer arrived after the expiry",
                                   notify=True, prepare_acked=True)
        elif reply.state == fed.TRANSFER_STATE_ABORTED:
            msg = self._decide(conn, rec, ABORTED,
                               f"refused by {rec.peer}: {reply.reason}"[:500], notify=False,
                               prepare_acked=True)
        else:
            msg = self._decide(conn, rec, ABORTED,
                               f"unexpected answer {fed.TransferState.Name(reply.state)}",
                               notify=True, prepare_acked=True)
        return True, [msg] if msg else []

    def _decide(self, conn: Connection, rec: Any, state: str, reason: str | None, *,
                notify: bool, prepare_acked: bool = False,
                signed_custody: pb.Signed | None = None) -> _Msg | None:
        """The source's decision, in the caller's transaction: state, bundle, outbox.

        A commit carries the issuer's signed custody record: the one ``signed_custody`` the
        issuer answered, or, when this node is the issuer, one it makes here (a local move).
        Returns the COMMIT / ABORT message it put in the outbox (None when D need not hear).
        """
        now = self.now_ms()
        found = repos.get_bundle(conn, rec.bundle_id, lock=True)
        if found is None:
            raise EapError(f"transfer {rec.id}: bundle {rec.bundle_id} is missing")
        bundle, version = found
        kept = None
        if state == COMMITTED and rec.issuer == self.me:
            signed_custody = custody.move_local(
                conn, me=self.me, keys=self.node.keys, tid=rec.id, start=rec.serial_start,
                end=rec.serial_end, to=rec.peer, cell=bundle.cell, now_ms=now)
            kept = signed_custody.SerializeToString()
        if not tr.set_transfer_state(conn, rec.id, expect=PREPARING, state=state,
                                     decided_at_ms=now, reason=reason,
                                     **({"custody": kept} if kept else {})):
            raise Aborted(f"transfer {rec.id} was decided concurrently")
        if state == COMMITTED:
            ok = repos.set_bundle_state(conn, bundle.id, version,
                                        expect_status=Status.EXPORT_PENDING,
                                        status=int(Status.EXPORTED), held_by=rec.peer,
                                        owner=f"{rec.peer}/{rec.to_account}")
            action, to_owner = "export", f"{rec.peer}/{rec.to_account}"
            if rec.price_minor:
                self._record_obligation(conn, rec, payer=f"{rec.peer}/{rec.to_account}",
                                        payee=rec.seller or f"{self.me}/{rec.from_account}",
                                        now=now)
        else:
            ok = repos.set_bundle_state(conn, bundle.id, version,
                                        expect_status=Status.EXPORT_PENDING,
                                        status=int(Status.ACTIVE))
            action, to_owner = "export_abort", bundle.owner
        if not ok:
            raise EapError(f"transfer {rec.id}: bundle {bundle.id} is not locked for it")
        ledger.journal(conn, action, bundle.id, rec.from_account, to_owner, rec.wh,
                       rec.request_id)
        if state == ABORTED:  # counted once the transaction commits (_flush_events)
            self._local.__dict__.setdefault("aborts", []).append("out")
        if state == COMMITTED:
            self._queue_event("exported", request_id=rec.request_id, bundle=bundle.id,
                              wh=rec.wh, transfer=rec.id, to=f"{rec.peer}/{rec.to_account}")
        if not prepare_acked:
            for m in tr.outbox_unacked(conn, rec.id):
                if m.kind == PREPARE:  # the decision supersedes it
                    tr.outbox_ack(conn, m.id, now, f"superseded by the decision ({state})")
        msg = None
        if state == COMMITTED or notify:
            kind = COMMIT if state == COMMITTED else ABORT
            payload = fed.TransferDecision(
                transfer_id=rec.id, decision=_WIRE[state],
                custody=signed_custody if state == COMMITTED else None).SerializeToString()
            mid = tr.outbox_put(conn, transfer_id=rec.id, peer=rec.peer, kind=kind,
                                payload=payload, now_ms=now,
                                next_attempt_at_ms=now + self._lease_ms(),
                                traceparent=telemetry_ops.traceparent())
            msg = _Msg(mid, rec.id, rec.peer, kind, payload, 0)
        log.info("transfer %s %s (%d Wh of %s to %s/%s)%s", rec.id, state.upper(), rec.wh,
                 rec.bundle_id, rec.peer, rec.to_account, f": {reason}" if reason else "")
        return msg

    def _record_obligation(self, conn: Connection, rec: Any, *, payer: str, payee: str,
                           now: int) -> None:
        """This node's copy of a committed priced trade's obligation, in the transaction of
        its side of the commit (both nodes: same id = transfer id, same terms, same period,
        the UTC day of the prepare's expiry); then the peer's settlement threshold."""
        if ob.has_obligation(conn, rec.id):  # belt and braces: the state guard already holds
            log.error("transfer %s: obligation already recorded", rec.id)
            return
        period = obl.period_of(rec.expires_at_ms)
        ob.insert_obligation(
            conn, obligation_id=rec.id, transfer_id=rec.id, peer=rec.peer, period=period,
            payer=payer, payee=payee, amount_minor=int(rec.price_minor), currency=rec.currency,
            bundle_id=rec.bundle_id, wh=int(rec.wh), request_id=(rec.request_id or rec.id)[:128],
            created_at_ms=now)
        if peer_credit.after_commit(conn, self.me, rec.peer, rec.currency, period, now):
            log.info("transfer %s: balance with %s reached the settlement threshold; "
                     "settlement of %s requested", rec.id, rec.peer, period)

    def _expire(self, tid: str) -> bool:
        """Abort an undecided outgoing transfer past its expiry; True if this call did.

        The ABORT it owes is left to the outbox (the destination may well be unreachable).
        """
        decided = False
        with self.store.transaction() as conn:
            rec = tr.get_transfer(conn, tid, lock=True)
            if rec is not None and _expirable(rec, self.now_ms()):
                self._decide(conn, rec, ABORTED,
                             "expired before the destination's PREPARED answer arrived",
                             notify=True)
                decided = True
        if decided:
            crashpoints.hit("source.after_decision_commit")
        return decided

    def _expire_overdue(self) -> int:
        with self.store.read() as conn:
            ids = tr.overdue_outbound(conn, PREPARING, self.now_ms(), self.settings.batch)
        return sum(self._expire(tid) for tid in ids)

    def _dispatch_due(self, *, force: bool) -> int:
        now = self.now_ms()
        horizon = 2**62 if force else now
        with self.store.transaction() as conn:
            msgs = tr.outbox_claim_due(conn, horizon, now + self._lease_ms(), self.settings.batch)
        return self._deliver_all(list(msgs))

    # == destination internals ====================================================================

    def _catch_up(self, msg: fed.TransferPrepare) -> None:
        """Pull the issuer's batches first when the proof names one not synced yet, so a
        transfer right after issuance need not wait for the periodic sync.  A failure here
        only means the prepare is refused as unpublished."""
        h = msg.proof.batch
        if (self.fetch_batches is None or not msg.HasField("proof") or h.issuer == self.me
                or (h.issuer, h.seq) in self._synced or self.trust.get(h.issuer) is None):
            return
        with self.store.read() as conn:
            if cr.known_root(conn, h.issuer, h.seq) is not None:
                self._synced.add((h.issuer, h.seq))  # synced batches never change
                return
        try:
            self.fetch_batches(h.issuer)
        except Exception as exc:  # the issuer may be down: the prepare is refused below
            log.info("transfer %s: could not sync %s first: %s", msg.transfer_id[:200],
                     h.issuer, exc)

    def _record_prepare(self, origin: str, msg: fed.TransferPrepare,
                        sig: provenance.SignatureCheck) -> fed.TransferStatus:
        tid = msg.transfer_id
        for _ in range(3):
            refused = False
            try:
                with self.store.transaction() as conn:
                    rec = tr.get_transfer(conn, tid, lock=True)
                    now = self.now_ms()
                    if rec is not None:
                        _require_party(rec, origin, IN)
                        stored = tr.inbox_get(conn, tid, PREPARE)
                        if stored is not None:  # a replay: the first answer again
                            return fed.TransferStatus.FromString(stored)
                        reply = _status(rec)  # an ABORT overtook this PREPARE
                    else:
                        reply = self._prepare_new(conn, origin, msg, now, sig)
                        refused = reply.state == fed.TRANSFER_STATE_ABORTED
                    tr.inbox_put(conn, transfer_id=tid, kind=PREPARE, origin=origin,
                                 response=reply.SerializeToString(), now_ms=now)
                    crashpoints.hit("dest.in_prepare_txn")
                if refused:  # committed: count the refused import once
                    telemetry_ops.transfer_aborted(self.node, "in")
                return reply
            except IntegrityError:  # a duplicate delivered concurrently won: answer as it did
                continue
        raise Aborted(f"transfer {tid}: concurrent duplicates; retry")

    def _prepare_new(self, conn: Connection, origin: str, msg: fed.TransferPrepare,
                     now: int, sig: provenance.SignatureCheck) -> fed.TransferStatus:
        b = msg.bundle
        tr.lock_range_issuer(conn, b.issuer[:253])
        reason = admission.refusal(conn, me=self.me, origin=origin, msg=msg, now=now, sig=sig)
        row: dict[str, Any] = {
            "id": msg.transfer_id, "direction": IN, "peer": origin,
            "bundle_id": b.id[:200], "issuer": b.issuer[:253], "wh": 0,
            "to_account": msg.to_account[:64], "expires_at_ms": _int64(msg.expires_at_ms),
            "created_at_ms": now,
        }
        if reason is None:
            bundle = admission.bundle_from_wire(b, owner=msg.to_account, at_ms=now)
            if msg.HasField("price"):
                row.update(price_minor=msg.price.amount_minor, currency=msg.price.currency,
                           seller=msg.seller)
            row.update(state=PREPARED, serial_start=b.serial_start, serial_end=b.serial_end,
                       proof=msg.proof.SerializeToString(),
                       wh=bundle.wh, bundle_data=json.dumps(bundle.to_dict(), sort_keys=True),
                       next_check_at_ms=now + int(self.settings.inquire_after_s * 1000))
            tr.insert_transfer(conn, row)
            log.info("transfer %s PREPARED (%d Wh of %s from %s for %s)", msg.transfer_id,
                     bundle.wh, b.id, origin, msg.to_account)
            return fed.TransferStatus(transfer_id=msg.transfer_id,
                                      state=fed.TRANSFER_STATE_PREPARED)
        row.update(state=ABORTED, reason=reason[:500], decided_at_ms=now)
        if 0 <= b.serial_start < b.serial_end <= MAX_SERIAL:
            row.update(serial_start=b.serial_start, serial_end=b.serial_end)
        tr.insert_transfer(conn, row)
        log.warning("transfer %s from %s refused: %s", msg.transfer_id, origin, reason)
        return fed.TransferStatus(transfer_id=msg.transfer_id, state=fed.TRANSFER_STATE_ABORTED,
                                  reason=reason[:500])

    def _record_decision(self, origin: str, tid: str, kind: str,
                         signed_custody: pb.Signed | None = None) -> fed.TransferStatus:
        sig = self.signatures()
        # Not forced to disk before answering: the PREPARED record is, and should this commit
        # be lost with the machine's power, the import is PREPARED again and resolved by
        # asking the source, whose decision is durable (presumed-abort two-phase commit).
        for _ in range(3):
            self._drop_events()
            try:
                with tr.lazy_transaction(self.store) as conn:
                    rec = tr.get_transfer(conn, tid, lock=True)
                    if rec is not None and rec.state != PREPARED:
                        stored = tr.inbox_get(conn, tid, kind)
                        if stored is not None:  # a replay: the first answer again
                            return fed.TransferStatus.FromString(stored)
                    now = self.now_ms()
                    if rec is None and kind == COMMIT:
                        log.error("transfer %s: COMMIT from %s for an unknown transfer", tid,
                                  origin)
                        return fed.TransferStatus(
                            transfer_id=tid, state=fed.TRANSFER_STATE_UNKNOWN,
                            reason=f"{self.me} has no record of this transfer")
                    if rec is None:  # ABORT before (or instead of) the PREPARE: tombstone
                        tr.insert_transfer(conn, {
                            "id": tid, "direction": IN, "peer": origin, "state": ABORTED,
                            "wh": 0, "expires_at_ms": 0, "created_at_ms": now,
                            "decided_at_ms": now,
                            "reason": "aborted by the source before its prepare arrived"})
                        reply = fed.TransferStatus(transfer_id=tid,
                                                   state=fed.TRANSFER_STATE_ABORTED)
                    else:
                        _require_party(rec, origin, IN)
                        reply = self._finish_import(
                            conn, rec, COMMITTED if kind == COMMIT else ABORTED,
                            "aborted by the source", signed_custody, sig)
                    tr.inbox_put(conn, transfer_id=tid, kind=kind, origin=origin,
                                 response=reply.SerializeToString(), now_ms=now)
                    if kind == COMMIT:
                        crashpoints.hit("dest.in_commit_txn")
                self._flush_events()
                return reply
            except IntegrityError:
                continue
        raise Aborted(f"transfer {tid}: concurrent duplicates; retry")

    def _finish_import(self, conn: Connection, rec: Any, decision: str,
                       reason: str | None, signed_custody: pb.Signed | None = None,
                       sig: provenance.SignatureCheck | None = None) -> fed.TransferStatus:
        """Apply the source's decision to a PREPARED import (idempotent).

        A commit of another issuer's serials needs that issuer's custody record of the move
        (:func:`.admission.check_custody`); serials of this node come home into its own custody.
        """
        if rec.state == PREPARED:
            now = self.now_ms()
            if decision == COMMITTED:
                bundle = Bundle(**json.loads(rec.bundle_data))  # plain JSON fields
                kept = None
                if rec.issuer == self.me:
                    custody.take_back(conn, me=self.me, origin=rec.peer, tid=rec.id,
                                      start=rec.serial_start, end=rec.serial_end, now_ms=now)
                    bundle.cell = cr.issued_cell(conn, self.me, rec.serial_start,
                                                 rec.serial_end) or bundle.cell
                else:
                    bundle.cell = admission.check_custody(rec, signed_custody, sig, me=self.me).cell
                    kept = signed_custody.SerializeToString()  # type: ignore[union-attr]
                    tr.update_transfer(conn, rec.id, custody=kept)
                self._materialise(conn, bundle)
                if rec.proof is not None:
                    cr.put_provenance(conn, bundle.id, bytes(rec.proof), kept)
                ledger.journal(conn, "import", bundle.id, rec.peer, rec.to_account,
                               bundle.wh, rec.id[:128])
                self._queue_event("imported", request_id=rec.id[:128], bundle=bundle.id,
                                  wh=bundle.wh, transfer=rec.id, to_account=rec.to_account,
                                  source=rec.peer)
                if rec.price_minor:
                    self._record_obligation(conn, rec, payer=f"{self.me}/{rec.to_account}",
                                            payee=rec.seller, now=now)
                ok = tr.set_transfer_state(conn, rec.id, expect=PREPARED, state=COMMITTED,
                                           decided_at_ms=now)
                log.info("transfer %s COMMITTED: %s is live on %s for %s", rec.id, bundle.id,
                         self.me, rec.to_account)
            else:
                ok = tr.set_transfer_state(conn, rec.id, expect=PREPARED, state=ABORTED,
                                           decided_at_ms=now, reason=reason)
                self._local.__dict__.setdefault("aborts", []).append("in")  # see _flush_events
                log.info("transfer %s ABORTED: %s", rec.id, reason)
            if not ok:
                raise Aborted(f"transfer {rec.id} changed concurrently; retry")
            return fed.TransferStatus(transfer_id=rec.id, state=_WIRE[decision])
        if rec.state != decision:
            log.error("transfer %s: the source says %s but this node has it %s", rec.id,
                      decision.upper(), rec.state.upper())
        return _status(rec)

    def _materialise(self, conn: Connection, bundle: Bundle) -> None:
        """The committed import becomes a live bundle (reviving the row if it left before)."""
        found = repos.get_bundle(conn, bundle.id, lock=True)
        if found is None:
            repos.insert_bundles(conn, [bundle])
            return
        old, version = found
        if old.status != Status.EXPORTED or not repos.set_bundle_state(
                conn, bundle.id, version, expect_status=Status.EXPORTED,
                status=int(Status.ACTIVE), owner=bundle.owner, held_by=None):
            raise FailedPrecondition(f"bundle {bundle.id} is {Status(old.status).name} here; "
                                     "it cannot be imported again")

    def _resolve_in_doubt(self, *, force: bool) -> int:
        """Ask the source about PREPARED imports whose decision has not arrived."""
        if self.transport is None:
            return 0
        now = self.now_ms()
        with self.store.read() as conn:
            rows = tr.in_doubt_inbound(conn, PREPARED, 2**62 if force else now,
                                       self.settings.batch)
        done = 0
        for rec in rows:
            try:
                rtype, data = self.transport.call(
                    rec.peer, "GetTransferStatus", PT_STATUS,
                    fed.TransferStatus(transfer_id=rec.id).SerializeToString(),
                    timeout=self.settings.rpc_timeout_s, attempts=self.settings.rpc_attempts)
                if rtype != PT_STATUS:
                    raise InvalidArgument(f"{rec.peer} answered GetTransferStatus with {rtype}")
                reply = fed.TransferStatus.FromString(data)
            except Exception as exc:  # the source is unreachable: ask later
                self._inquire_later(rec, str(exc) or type(exc).__name__)
                continue
            crashpoints.hit("dest.after_status_reply")
            if reply.state == fed.TRANSFER_STATE_COMMITTED:
                decision, reason = COMMITTED, None
            elif reply.state == fed.TRANSFER_STATE_ABORTED:
                decision, reason = ABORTED, f"the source says aborted: {reply.reason}"[:500]
            elif reply.state == fed.TRANSFER_STATE_UNKNOWN:
                decision, reason = ABORTED, "the source has no record of it (presumed abort)"
            else:
                self._inquire_later(rec, "the source has not decided yet")
                continue
            sig = self.signatures()
            self._drop_events()
            try:
                with self.store.transaction() as conn:
                    fresh = tr.get_transfer(conn, rec.id, lock=True)
                    if fresh is not None and fresh.state == PREPARED:
                        self._finish_import(conn, fresh, decision, reason,
                                            reply.custody if reply.HasField("custody") else None,
                                            sig)
                        done += 1
                self._flush_events()
            except FailedPrecondition as exc:  # COMMITTED without a custody record: wait
                log.error("transfer %s: %s", rec.id, exc.message)
                self._inquire_later(rec, exc.message)
        return done

    def _inquire_later(self, rec: Any, why: str) -> None:
        checks = int(rec.checks or 0) + 1
        delay = self._backoff_ms(checks, self.settings.inquire_after_s / 4,
                                 self.settings.inquire_cap_s)
        log.info("transfer %s in doubt (check %d): %s; asking again in %d ms", rec.id, checks,
                 why, delay)
        with self.store.transaction() as conn:
            tr.update_transfer(conn, rec.id, checks=checks, next_check_at_ms=self.now_ms() + delay)


def install(runtime: Any) -> Transfers:
    """Federation runtime extension: serve the transfer RPCs and run the background round.

    The first round after start is :meth:`Transfers.recover` (leases and backoff ignored), so
    a restarted node finishes or aborts what it began at once, unless other replicas of the
    node serve the same database: their leases are then respected (the worker's rounds run in
    one replica at a time, :mod:`eap.node.store.coordination`).
    """
    engine = Transfers(runtime.node, runtime.client, trust=runtime.trust)
    engine.fetch_batches = runtime.syncer.sync_peer
    runtime.servicer.set_transfers(engine)
    runtime.transfers = engine
    telemetry_ops.of(runtime.node).metrics.observe("outbox", outbox_depth(engine))
    first = [True]

    def round_() -> None:
        if first[0]:
            # Alone, catch up at once; beside live replicas, respect their leases.
            alone = not runtime.node.store.coordinator.others_alive()
            first[0] = False
            engine.tick(force=alone)
        else:
            engine.tick()

    runtime.worker.every("transfers", engine.settings.worker_interval_s, round_)
    return engine


# -- helpers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Msg:
    """An outbox message just written (same fields as an outbox row the sender reads)."""

    id: int
    transfer_id: str
    peer: str
    kind: str
    payload: bytes
    attempts: int
    #: The trace that wrote it (as stored in its row): its deliveries continue that trace.
    traceparent: str | None = field(default_factory=telemetry_ops.traceparent)


def _fv(name: str, description: str):
    from eap.node.errors import FieldViolation

    return FieldViolation(name, description)


def _parse_token(token: str) -> tuple[int, str] | None:
    if not token:
        return None
    at, sep, tid = token.partition(":")
    if not sep or not at.isdigit():
        raise invalid("page_token", "malformed page token")
    return int(at), tid


def _parse(cls, payload: bytes):
    try:
        return cls.FromString(payload)
    except DecodeError as exc:
        raise invalid("payload", f"not a {cls.DESCRIPTOR.full_name}") from exc


def _check_transfer_id(tid: str, *, source: str) -> None:
    m = TRANSFER_ID_RE.match(tid or "")
    if m is None:
        raise invalid("transfer_id", "must be <source node>/<id>")
    if m.group("node") != source:
        raise PermissionDenied(f"transfer {tid} does not belong to {source}")


def _require_party(rec: Any, origin: str, direction: str) -> None:
    if rec.peer != origin or rec.direction != direction:
        raise PermissionDenied(f"{origin} is not the source of transfer {rec.id}")


def _status(rec: Any) -> fed.TransferStatus:
    custody = getattr(rec, "custody", None)
    return fed.TransferStatus(
        transfer_id=rec.id, state=_WIRE[rec.state], reason=rec.reason or "",
        custody=pb.Signed.FromString(bytes(custody))
        if custody is not None and rec.state == COMMITTED else None)


def _expirable(rec: Any, now_ms: int | None = None) -> bool:
    """An outgoing transfer the source may still abort at its expiry (and, with ``now_ms``,
    past it): undecided, and not waiting for the issuer's custody answer, which alone decides
    once asked."""
    return (rec.direction == OUT and rec.state == PREPARING
            and getattr(rec, "custody_state", None) != REQUESTED
            and (now_ms is None or now_ms >= rec.expires_at_ms))


def _record(row: Any, msgs: Any = ()) -> TransferRecord:
    m = row if isinstance(row, dict) else row._mapping
    errors = [x.last_error for x in msgs if x.last_error]
    return TransferRecord(
        id=m["id"], direction=m["direction"], peer=m["peer"], state=m["state"],
        wh=int(m.get("wh") or 0), bundle_id=m.get("bundle_id"), to_account=m.get("to_account"),
        from_account=m.get("from_account"), source_bundle_id=m.get("source_bundle_id"),
        remainder_id=m.get("remainder_id"), expires_at_ms=int(m.get("expires_at_ms") or 0),
        created_at_ms=int(m.get("created_at_ms") or 0), decided_at_ms=m.get("decided_at_ms"),
        reason=m.get("reason"), pending=[x.kind for x in msgs],
        last_error=errors[-1] if errors else None,
        price_minor=int(m.get("price_minor") or 0), currency=m.get("currency") or "",
    )


def _lineage_of(conn: Connection, bundle_id: str | None) -> str | None:
    if not bundle_id:
        return None
    found = repos.get_bundle(conn, bundle_id)
    return found[0].lineage_hash if found else None


def _int64(value: int) -> int:
    return max(-(2**63), min(2**63 - 1, int(value)))
