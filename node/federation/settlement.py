"""Settlement rounds across the federation (docs/settlement.md, "Rounds" and "Failure cases").

One node, the **coordinator**, runs a round for a period; every node with an unsettled
obligation of that period is a **participant** (the coordinator always is one):

1. ``GetSettlementView``: each participant signs (tag ``EAP-SETTLE-VIEW-v1\\0``) its view of
   the period's unsettled obligations for the round, as ``ObligationColumns``, and keeps it
   (a repeated request gets the same view).  A round id whose node part is not the caller
   is ``PERMISSION_DENIED``.
2. The coordinator computes the statement (:mod:`eap.node.domain.settlement_round`) and sends
   it with every view (``SignSettlement``).  Each participant verifies every view's
   signature, that its own view is the one it gave, recomputes the statement and signs
   (tag ``EAP-SETTLE-v1\\0``) only byte-identical bytes; anything else is
   ``FAILED_PRECONDITION`` and changes nothing.
3. With every participant's signature the coordinator makes the decision durable
   (``finals_pending``) and only then sends ``FinalizeSettlement``.  Each participant
   verifies every signature and, in ONE transaction, stores the final statement, marks its
   agreed obligations ``settled_round = round`` and queues its sides of the instructions
   touching its accounts (``settlement_executions``).  Idempotent by round id.
4. The executor runs queued sides through the settlement backend hook, with the idempotency
   key ``(instruction id, side)``, retrying with backoff; the round is ``settled`` at a node
   when all its sides executed.

**Presumed abort.**  Nothing is settled anywhere before the decision.  A coordinator that
restarts before deciding fails the round; a participant that signed but never got the final
keeps its obligations unsettled, and a later round of the same coordinator supersedes the
in-doubt one (the coordinator finishes delivering its decided rounds before it starts a new
one).  A participant refuses to sign a round of another coordinator over obligations held by
a round it signed and has not seen finish.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from eap.node.domain import provenance
from eap.node.domain import settlement_round as sr
from eap.node.errors import (
    EapError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    invalid,
)
from eap.node.federation import crashpoints
from eap.node.federation.peers import PENDING, TrustList
from eap.node.records import parties
from eap.node.store import settlement_repos as srr
from eap.node.telemetry.ops import in_context, traced
from eap.v1 import federation_pb2 as fed
from eap.v1 import node_api_pb2 as api
from eap.v1 import types_pb2 as pb

log = logging.getLogger(__name__)

PT_VIEW_REQUEST = fed.SettlementViewRequest.DESCRIPTOR.full_name
PT_PROPOSAL = fed.SettlementProposal.DESCRIPTOR.full_name
PT_FINAL = fed.SettlementFinal.DESCRIPTOR.full_name
PT_ACK = fed.SettlementAck.DESCRIPTOR.full_name
PT_SIGNED = pb.Signed.DESCRIPTOR.full_name

GATHERING, SIGNING, FINAL, SETTLED, FAILED = "gathering", "signing", "final", "settled", "failed"
OPEN = (GATHERING, SIGNING)
PENDING_EXEC, EXECUTED = "pending", "executed"

ROUND_ID_RE = re.compile(
    r"^(?P<node>[a-z0-9.-]{1,128})/(?P<period>\d{4}-\d{2}-\d{2})/(?P<token>[A-Za-z0-9-]{1,64})$")
#: Participants of one round at most (each sends a view in the proposal).
MAX_PARTICIPANTS = 256


@dataclass(frozen=True)
class SettlementSettings:
    """Timing of rounds and of the executor (``[settlement]`` in ``eap-node.toml``)."""

    #: Deadline of one call to a participant; attempts of the transport per call.
    rpc_timeout_s: float = 30.0
    rpc_attempts: int = 2
    #: Executor backoff: ``min(cap, base * 2**attempts)``, jittered to 50-100 %.
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    #: Queued sides executed per executor round.
    batch: int = 256
    #: Period of the executor and of the round worker in ``eap-node serve``.
    exec_interval_s: float = 1.0
    round_interval_s: float = 5.0
    #: A settlement request whose round failed is retried after this long.
    request_retry_s: float = 60.0

    @classmethod
    def from_config(cls, config: Any) -> SettlementSettings:
        from eap.node.errors import ConfigError

        table = dict((getattr(config, "extra", None) or {}).get("settlement", {}))
        known = set(cls.__dataclass_fields__)
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key in _BACKEND_KEYS or isinstance(value, dict):
                continue  # the backend's settings (eap.node.domain.settlement_backends)
            if key not in known:
                raise ConfigError(f"unknown setting settlement.{key}")
            try:
                values[key] = int(value) if key in ("rpc_attempts", "batch") else float(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"invalid settlement.{key} = {value!r}") from exc
        return cls(**values)


#: ``[settlement]`` keys read by the backend facade, not by the rounds.
_BACKEND_KEYS = frozenset({"backend", "timeout_s"})


#: ``backend(node, item) -> receipt``: executes one side of an instruction (idempotent by
#: ``(instruction_id, side)``); raises an exception with ``transient`` (bool) on failure.
Backend = Callable[[Any, dict], dict]


#: ``many(node, items) -> [receipt | exception, ...]``: executes many sides in one call, one
#: result per item in order (``eap.node.domain.settlement_backends.execute_many``).
BatchBackend = Callable[[Any, list[dict]], list]


def batch_of(backend: Backend | None) -> BatchBackend | None:
    """How ``backend`` executes many sides in one call: the facade's ``execute_many`` for the
    default backend, a backend's own ``execute_many`` attribute, else None (one call per
    side)."""
    if backend is None:
        return None
    from eap.node.domain import settlement_backends

    if backend is settlement_backends.execute:
        return settlement_backends.execute_many
    return getattr(backend, "execute_many", None)


def _item(row: Any) -> dict:
    return {"instruction_id": row.instruction_id, "side": row.side, "round_id": row.round_id,
            "payer": row.payer, "payee": row.payee, "amount_minor": int(row.amount_minor),
            "currency": row.currency}


def default_backend() -> Backend | None:
    """The node's settlement backend hook (``eap.node.domain.settlement_backends``), if any."""
    try:
        from eap.node.domain import settlement_backends  # type: ignore[attr-defined]
    except ImportError:
        return None
    return getattr(settlement_backends, "execute", None)


def today(clock: Callable[[], float] = time.time) -> str:
    return dt.datetime.fromtimestamp(clock(), dt.UTC).strftime("%Y-%m-%d")


def parse_round_id(round_id: str) -> tuple[str, str]:
    """``(coordinator, period)`` of a round id; InvalidArgument when malformed."""
    m = ROUND_ID_RE.match(round_id or "")
    if m is None:
        raise invalid("round_id", "must be <coordinator>/<YYYY-MM-DD>/<id>")
    return m.group("node"), m.group("period")


def _parse(cls, data: bytes, name: str = "payload"):
    try:
        return cls.FromString(data)
    except DecodeError as exc:
        raise invalid(name, f"not a {cls.DESCRIPTOR.full_name}") from exc


def _why(exc: BaseException) -> str:
    code = getattr(getattr(exc, "status", None), "name", "")
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return (f"{code} {text}" if code else text)[:300]


class Settlement:
    """Participant handlers, coordinator, executor and reader of one node's rounds.

    Args:
        node: this node (store, keys, id, config).
        transport: reaches peers (``PeerClient.call`` or the in-process look-alike).
        trust: the trust list (participants asked, and their keys).
        backend: executes instruction sides (default: :func:`default_backend`).
    """

    payload_types = {"on_get_settlement_view": PT_VIEW_REQUEST,
                     "on_sign_settlement": PT_PROPOSAL,
                     "on_finalize_settlement": PT_FINAL}

    def __init__(self, node: Any, transport: Any = None, trust: TrustList | None = None, *,
                 settings: SettlementSettings | None = None,
                 clock: Callable[[], float] = time.time, backend: Backend | None = None,
                 rng: random.Random | None = None) -> None:
        self.node = node
        self.store = node.store
        self.me: str = node.node_id
        self.transport = transport
        self.trust = trust or TrustList(self.store, self.me)
        self.settings = settings or SettlementSettings.from_config(node.config)
        self._clock = clock
        self._backend = backend
        self._rng = rng or random.Random()
        self._retry_after: dict[str, float] = {}
        self._lock = threading.Lock()
        #: Rounds this instance started: never "undecided rounds of before a restart".
        self._started: set[str] = set()

    @classmethod
    def from_engine(cls, engine: Any) -> Settlement:
        return engine.settlement if getattr(engine, "settlement", None) else cls(
            engine.node, engine.transport, engine.trust, clock=engine._clock)

    @property
    def backend(self) -> Backend | None:
        return self._backend or default_backend()

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def signatures(self) -> provenance.SignatureCheck:
        """Taken before a transaction opens (reading the trust list inside a SQLite write
        transaction would wait for that transaction)."""
        return provenance.signature_check(self.me, self.node.keys, self.trust.peer_keys)

    # == participant ===============================================================================

    @traced("eap.settlement.view")
    def on_get_settlement_view(self, envelope: Any) -> tuple[str, bytes]:
        req = _parse(fed.SettlementViewRequest, envelope.payload)
        return PT_SIGNED, self.view(req.round_id, req.period, origin=envelope.origin)\
            .SerializeToString()

    @traced("eap.settlement.sign")
    def on_sign_settlement(self, envelope: Any) -> tuple[str, bytes]:
        proposal = _parse(fed.SettlementProposal, envelope.payload)
        return PT_SIGNED, self.sign(proposal, origin=envelope.origin).SerializeToString()

    @traced("eap.settlement.finalize")
    def on_finalize_settlement(self, envelope: Any) -> tuple[str, bytes]:
        final = _parse(fed.SettlementFinal, envelope.payload)
        return PT_ACK, self.finalize(final, origin=envelope.origin).SerializeToString()

    def view(self, round_id: str, period: str, *, origin: str) -> pb.Signed:
        """This node's signed view of ``period`` for the round (the same one when asked
        again).

        Raises:
            PermissionDenied: the round's node part is not the caller.
            InvalidArgument: malformed round id, or a period other than the round's.
            FailedPrecondition: the round failed here.
        """
        coordinator, round_period = parse_round_id(round_id)
        if coordinator != origin:
            raise PermissionDenied(f"round {round_id[:200]} is not {origin}'s to run")
        if period != round_period:
            raise invalid("period", "must be the round's period")
        with self.store.transaction() as conn:
            row = srr.get_round(conn, round_id, lock=True)
            if row is not None and row.view is not None:
                return pb.Signed.FromString(row.view)
            if row is not None and row.state == FAILED:
                raise FailedPrecondition(f"round {round_id} failed here")
            view = pb.SettlementView(round_id=round_id, node_id=self.me, period=period,
                                     at_ms=self.now_ms())
            self._fill(view, *srr.unsettled_columns(conn, self.me, period))
            signed = provenance.sign(self.node.keys, self.me, sr.VIEW_TAG, sr.view_bytes(view))
            data = signed.SerializeToString()
            if row is None and not sr.view_size(view):
                pass  # not a participant: nothing to remember
            elif row is None:
                if not srr.insert_round(conn, if_absent=True, round_id=round_id, period=period,
                                        coordinator=coordinator, state=GATHERING, view=data,
                                        started_at_ms=self.now_ms()):
                    # another request of the round (a retry) stored its view first: that one
                    row = srr.get_round(conn, round_id, lock=True)
                    if row.view is not None:
                        return pb.Signed.FromString(row.view)
                    srr.update_round(conn, round_id, view=data)
            else:
                srr.update_round(conn, round_id, view=data)
        log.info("settlement view for %s: %d obligation(s)", round_id, sr.view_size(view))
        return signed

    def _fill(self, view: pb.SettlementView, ids: list[str], payers: list[str],
              payees: list[str], amounts: list[int], currencies: list[str],
              periods: list[str]) -> None:
        """Set the obligations of ``view`` from the store's columns: as ``columns`` (parties
        qualified once per distinct account), or as messages in the unlikely case of an id
        stated twice (which the columns cannot carry; reconciliation holds it out)."""
        if not ids:
            return
        names = {p: parties.qualified(self.me, p) for p in {*payers, *payees}}
        payers = list(map(names.__getitem__, payers))
        payees = list(map(names.__getitem__, payees))
        if len(set(ids)) == len(ids):
            view.columns.CopyFrom(sr.build_columns(ids, payers, payees,
                                                   np.asarray(amounts, np.int64),
                                                   currencies, periods))
            return
        add = view.obligations.add
        for row in sorted(zip(ids, payers, payees, amounts, currencies, periods,
                              strict=True), key=itemgetter(0)):
            add(id=row[0], payer=row[1], payee=row[2], amount_minor=int(row[3]),
                currency=row[4], period=row[5])

    def _open_views(self, round_id: str, period: str, signed_views: Any,
                    verify: provenance.SignatureCheck) -> dict[str, tuple[pb.Signed,
                                                                           pb.SettlementView]]:
        if len(signed_views) > MAX_PARTICIPANTS:
            raise FailedPrecondition(f"more than {MAX_PARTICIPANTS} views")
        out: dict[str, tuple[pb.Signed, pb.SettlementView]] = {}
        for signed in signed_views:
            try:
                body = provenance.open_signed(signed, sr.VIEW_TAG, verify)
                view = pb.SettlementView.FromString(body)
            except (EapError, DecodeError) as exc:
                raise FailedPrecondition(
                    f"view of {signed.signer[:128]!r} refused: {_why(exc)}") from exc
            if view.node_id != signed.signer or view.round_id != round_id \
                    or view.period != period:
                raise FailedPrecondition(f"view of {signed.signer[:128]!r} is not its view of "
                                         f"round {round_id}")
            if view.node_id in out:
                raise FailedPrecondition(f"two views of {view.node_id}")
            if view.HasField("columns") and len(view.obligations):
                raise FailedPrecondition(f"view of {view.node_id[:128]!r} refused: "
                                         "INVALID_ARGUMENT it carries both obligations and "
                                         "columns")
            out[view.node_id] = (signed, view)
        return out

    def sign(self, proposal: fed.SettlementProposal, *, origin: str) -> pb.Signed:
        """Verify a proposal and sign its statement (module docstring, step 2).

        Raises:
            FailedPrecondition: not from the round's coordinator, this node or the coordinator
                not a participant, a view missing, unsigned, tampered or not this node's own,
                a statement that does not recompute to the same bytes, or the round already
                signed with other content (a replay).
        """
        verify = self.signatures()
        round_id = proposal.round_id
        coordinator, period = parse_round_id(round_id)
        if origin != coordinator:
            raise FailedPrecondition(f"{origin} is not the coordinator of round {round_id}")
        stmt = _parse(pb.SettlementStatement, proposal.statement, "statement")
        if (stmt.round_id, stmt.coordinator, stmt.period) != (round_id, coordinator, period):
            raise FailedPrecondition("the statement is not the proposal's round's")
        participants = list(stmt.participants)
        if self.me not in participants or coordinator not in participants:
            raise FailedPrecondition(f"the statement's participants {participants[:20]} do not "
                                     f"include {self.me} and the coordinator")
        views = self._open_views(round_id, period, proposal.views, verify)
        if sorted(views) != participants:
            raise FailedPrecondition("views and participants differ: views of "
                                     f"{sorted(views)[:20]}, participants {participants[:20]}")
        try:
            again, rec = sr.compute_reconciled(round_id=round_id, period=period,
                                               coordinator=coordinator,
                                               views={n: v for n, (_, v) in views.items()})
        except InvalidArgument as exc:  # a malformed view (sr.view_rows)
            raise FailedPrecondition(f"a view is refused: {_why(exc)}") from exc
        recomputed = sr.statement_bytes(again)
        if recomputed != bytes(proposal.statement):
            raise FailedPrecondition(
                f"the statement does not recompute: digest {sr.digest(proposal.statement)} "
                f"proposed, {sr.digest(recomputed)} recomputed from the views")
        mine = rec.parties_of(self.me)
        unstated = rec.unstated_by(self.me)
        if unstated:  # our own view is checked below to be the one given: never happens
            raise FailedPrecondition(f"obligation {unstated[0]} is not recorded here")
        with self.store.transaction() as conn:
            row = srr.get_round(conn, round_id, lock=True)
            if row is None or row.view is None:
                raise FailedPrecondition(f"this node gave no view for round {round_id}")
            if pb.Signed.FromString(row.view).body != views[self.me][0].body:
                raise FailedPrecondition("this node's view in the proposal is not the one it gave")
            if row.statement is not None and bytes(row.statement) != recomputed:
                raise FailedPrecondition(f"replayed round message: round {round_id} was "
                                         "proposed here with another statement")
            if row.state == FAILED:
                raise FailedPrecondition(f"round {round_id} failed here: "
                                         + "; ".join(json.loads(row.problems))[:300])
            have = {s.node_id: s for s in srr.signatures(conn, round_id)}
            if self.me in have:
                return pb.Signed.FromString(have[self.me].signed)
            self._check_unsettled(conn, round_id, period, mine)
            self._supersede(conn, round_id, coordinator, set(mine))
            signed = provenance.sign(self.node.keys, self.me, sr.STATEMENT_TAG, recomputed)
            srr.put_signature(conn, round_id, self.me, signed.SerializeToString())
            srr.update_round(conn, round_id, state=SIGNING, statement=recomputed,
                             digest=sr.digest(recomputed), participants=json.dumps(participants),
                             obligation_ids=json.dumps(mine), signed_at_ms=self.now_ms())
        crashpoints.hit("participant.after_signed")
        log.info("signed settlement statement %s of round %s", sr.digest(recomputed)[:16],
                 round_id)
        return signed

    def _check_unsettled(self, conn: Any, round_id: str, period: str, ids: list[str]) -> None:
        """Refuse when one of ``ids`` (sorted) was settled by another round: reads only the
        period's obligations settled by other rounds, not every obligation of the round."""
        hit = srr.settled_elsewhere(conn, self.me, period, round_id, ids)
        if hit is not None:
            raise FailedPrecondition(f"obligation {hit[0]} was settled by round {hit[1]}")

    def _supersede(self, conn: Any, round_id: str, coordinator: str, mine: set[str]) -> None:
        """Other signed rounds holding these obligations: the same coordinator's are dead
        (superseded); another coordinator's still await their final (refused)."""
        for other in srr.rounds_in(conn, OPEN):
            if other.round_id == round_id or not mine & set(json.loads(other.obligation_ids)):
                continue
            if other.coordinator == coordinator:
                srr.add_problem(conn, other, f"superseded by round {round_id}", state=FAILED,
                                finished_at_ms=self.now_ms())
            else:
                raise FailedPrecondition(
                    f"obligations of this round are held by round {other.round_id}, signed "
                    f"here and awaiting its final from {other.coordinator}")

    def finalize(self, final: fed.SettlementFinal, *, origin: str) -> fed.SettlementAck:
        """Verify every signature and settle this node's part (module docstring, step 3).

        Raises:
            FailedPrecondition: not from the coordinator, a signature missing or not
                verifying, a statement other than the one signed here, or a round that failed
                here.
        """
        verify = self.signatures()
        round_id = final.round_id
        coordinator, _period = parse_round_id(round_id)
        if origin != coordinator:
            raise FailedPrecondition(f"{origin} is not the coordinator of round {round_id}")
        stmt = _parse(pb.SettlementStatement, final.statement, "statement")
        if stmt.round_id != round_id:
            raise FailedPrecondition("the statement is not the round's")
        signers: set[str] = set()
        for signed in final.signatures:
            try:
                body = provenance.open_signed(signed, sr.STATEMENT_TAG, verify)
            except EapError as exc:
                raise FailedPrecondition(f"signature refused: {_why(exc)}") from exc
            if body != bytes(final.statement):
                raise FailedPrecondition(f"{signed.signer[:128]} signed another statement")
            signers.add(signed.signer)
        if signers != set(stmt.participants):
            raise FailedPrecondition("signatures and participants differ: missing "
                                     f"{sorted(set(stmt.participants) - signers)[:20]}")
        with self.store.transaction() as conn:
            row = srr.get_round(conn, round_id, lock=True)
            if row is None or row.statement is None:
                raise FailedPrecondition(f"round {round_id} was never signed here")
            if bytes(row.statement) != bytes(final.statement):
                raise FailedPrecondition("replayed round message: the final statement is not "
                                         "the one signed here")
            if row.state == FAILED:
                raise FailedPrecondition(f"round {round_id} failed here: "
                                         + "; ".join(json.loads(row.problems))[:300])
            if row.state not in (FINAL, SETTLED):
                self._settle(conn, row, stmt, final)
        crashpoints.hit("participant.after_finalized")
        return self._ack(round_id)

    def _settle(self, conn: Any, row: Any, stmt: pb.SettlementStatement,
                final: fed.SettlementFinal) -> None:
        ids = json.loads(row.obligation_ids)
        self._check_unsettled(conn, row.round_id, row.period, ids)
        settled = srr.mark_settled_ids(conn, row.period, ids, row.round_id)
        if settled != len(ids):  # rolled back with the whole transaction
            raise FailedPrecondition(f"round {row.round_id} settles {len(ids)} obligation(s) "
                                     f"here but {settled} are recorded unsettled or by it")
        for signed in final.signatures:
            srr.put_signature(conn, row.round_id, signed.signer, signed.SerializeToString())
        now = self.now_ms()
        queued = [
            {"instruction_id": ins.id, "side": side, "round_id": row.round_id,
             "payer": ins.payer, "payee": ins.payee, "amount_minor": int(ins.amount_minor),
             "currency": ins.currency, "state": PENDING_EXEC, "attempts": 0,
             "next_attempt_at_ms": now}
            for ins in stmt.instructions for side in sr.involves(ins, self.me)]
        srr.queue_executions(conn, queued)
        srr.update_round(conn, row.round_id, state=FINAL if queued else SETTLED,
                         finished_at_ms=None if queued else now)
        log.info("round %s final here: %d obligation(s) settled, %d instruction side(s) queued",
                 row.round_id, len(ids), len(queued))

    def _ack(self, round_id: str) -> fed.SettlementAck:
        with self.store.read() as conn:
            counts = srr.execution_counts(conn, round_id)
        return fed.SettlementAck(round_id=round_id, final=True,
                                 executed=counts.get(EXECUTED, 0),
                                 pending=counts.get(PENDING_EXEC, 0))

    # == coordinator ===============================================================================

    @traced("eap.settlement.round", lambda r: {
        "round_id": r.round_id, "period": r.period, "state": r.state,
        "participants": len(r.signed_by)},
        lambda m, r, _s: m.settlement_rounds.add(1, {"outcome": r.state or "unknown"}))
    def run(self, period: str = "", *, request_id: str = "") -> api.SettlementRound:
        """Run a round for ``period`` (today, UTC, when empty) with this node coordinating;
        the round as this node knows it afterwards (``failed`` with its problems when a
        participant could not be reached or refused).

        Raises:
            InvalidArgument: a malformed period.
            FailedPrecondition: a decided round's final is not delivered yet (retried first).
        """
        period = period or today(self._clock)
        if not sr.PERIOD_RE.match(period):
            raise invalid("period", "must be YYYY-MM-DD")
        if len(request_id) > 128:
            raise invalid("request_id", "at most 128 characters")
        if request_id:
            with self.store.read() as conn:
                row = srr.round_for_request(conn, request_id)
            if row is not None:
                if row.period != period:
                    raise invalid("request_id", "already used for another period")
                return self.get(row.round_id)
        self.resume()
        with self.store.read() as conn:
            stuck = srr.undelivered_finals(conn, self.me)
        if stuck:
            raise FailedPrecondition(
                f"round {stuck[0].round_id} is decided but its final is not delivered to "
                f"{', '.join(json.loads(stuck[0].finals_pending))} yet; retried in the "
                "background, run again later")
        round_id = f"{self.me}/{period}/{uuid.uuid4().hex}"
        self._started.add(round_id)
        # Held while this replica drives the round: another replica's recovery leaves it alone.
        with self.store.coordinator.exclusive(round_lock(round_id)):
            with self.store.transaction() as conn:
                srr.insert_round(conn, round_id=round_id, period=period, coordinator=self.me,
                                 state=GATHERING, request_id=request_id or None,
                                 started_at_ms=self.now_ms())
            crashpoints.hit("coordinator.after_round_created")
            log.info("settlement round %s started", round_id)
            self._drive(round_id, period)
        return self.get(round_id)

    def _drive(self, round_id: str, period: str) -> None:
        verify = self.signatures()
        peers = sorted(p.node_id for p in self.trust.all() if p.status != PENDING)
        gathered, problems = self._gather(round_id, period, peers, verify)
        if problems:
            return self._fail(round_id, problems)
        views = {n: v for n, (_, v) in gathered.items()
                 if n == self.me or sr.view_size(v) > 0}
        try:
            stmt = sr.compute(round_id=round_id, period=period, coordinator=self.me,
                              views=views)
        except OutOfRange as exc:
            return self._fail(round_id, [f"OUT_OF_RANGE {exc.message}"])
        except InvalidArgument as exc:  # a malformed view (sr.view_rows)
            return self._fail(round_id, [f"a view is refused: {_why(exc)}"])
        data = sr.statement_bytes(stmt)
        participants = list(stmt.participants)
        with self.store.transaction() as conn:
            if not srr.update_round(conn, round_id, expect_states=(GATHERING,), state=SIGNING,
                                    statement=data, digest=sr.digest(data),
                                    participants=json.dumps(participants)):
                return None
        crashpoints.hit("coordinator.after_views")
        proposal = fed.SettlementProposal(round_id=round_id, statement=data,
                                          views=[gathered[n][0] for n in participants])
        signatures, problems = self._collect(proposal, participants, verify)
        if problems:
            return self._fail(round_id, problems)
        with self.store.transaction() as conn:
            row = srr.get_round(conn, round_id, lock=True)
            if row is None or row.state != SIGNING or bytes(row.statement) != data:
                log.warning("round %s changed while collecting signatures; not decided",
                            round_id)
                return None
            for node_id, signed in signatures.items():
                srr.put_signature(conn, round_id, node_id, signed.SerializeToString())
            srr.update_round(conn, round_id, finals_pending=json.dumps(participants))
        crashpoints.hit("coordinator.after_decision")
        log.info("round %s decided: %d participant(s) signed %s", round_id, len(participants),
                 sr.digest(data)[:16])
        self._send_finals(round_id)
        return None

    def _call(self, peer: str, rpc: str, payload_type: str, payload: bytes) -> tuple[str, bytes]:
        if self.transport is None:
            raise FailedPrecondition("this node has no federation transport")
        return self.transport.call(peer, rpc, payload_type, payload,
                                   timeout=self.settings.rpc_timeout_s,
                                   attempts=self.settings.rpc_attempts)

    def _gather(self, round_id: str, period: str, peers: list[str],
                verify: provenance.SignatureCheck) -> tuple[dict, list[str]]:
        req = fed.SettlementViewRequest(round_id=round_id, period=period).SerializeToString()

        def one(node_id: str) -> tuple[str, pb.Signed | None, str]:
            try:
                if node_id == self.me:
                    return node_id, self.view(round_id, period, origin=self.me), ""
                rtype, data = self._call(node_id, "GetSettlementView", PT_VIEW_REQUEST, req)
                if rtype != PT_SIGNED:
                    return node_id, None, f"answered with {rtype[:100]!r}"
                return node_id, pb.Signed.FromString(data), ""
            except (EapError, DecodeError) as exc:
                return node_id, None, _why(exc)

        with ThreadPoolExecutor(max_workers=max(1, min(8, len(peers) + 1)),
                                thread_name_prefix="eap-settle") as pool:
            answers = list(pool.map(in_context(one), [self.me, *peers]))
        gathered: dict[str, tuple[pb.Signed, pb.SettlementView]] = {}
        problems = [f"no view from {n}: {why}" for n, s, why in answers if s is None]
        for node_id, signed, _ in answers:
            if signed is None:
                continue
            try:
                opened = self._open_views(round_id, period, [signed], verify)
                if list(opened) != [node_id]:
                    raise FailedPrecondition(f"the view is {list(opened)}'s")
                gathered.update(opened)
            except EapError as exc:
                problems.append(f"view of {node_id} refused: {_why(exc)}")
        return gathered, problems

    def _collect(self, proposal: fed.SettlementProposal, participants: list[str],
                 verify: provenance.SignatureCheck) -> tuple[dict[str, pb.Signed], list[str]]:
        data = proposal.SerializeToString()

        def one(node_id: str) -> tuple[str, pb.Signed | None, str]:
            try:
                if node_id == self.me:
                    signed = self.sign(proposal, origin=self.me)
                else:
                    rtype, raw = self._call(node_id, "SignSettlement", PT_PROPOSAL, data)
                    if rtype != PT_SIGNED:
                        return node_id, None, f"answered with {rtype[:100]!r}"
                    signed = pb.Signed.FromString(raw)
                body = provenance.open_signed(signed, sr.STATEMENT_TAG, verify, signer=node_id)
                if body != bytes(proposal.statement):
                    return node_id, None, "signed another statement"
                return node_id, signed, ""
            except (EapError, DecodeError) as exc:
                return node_id, None, _why(exc)

        with ThreadPoolExecutor(max_workers=max(1, min(8, len(participants))),
                                thread_name_prefix="eap-settle") as pool:
            answers = list(pool.map(in_context(one), participants))
        problems = [f"{n} did not sign: {why}" for n, s, why in answers if s is None]
        return {n: s for n, s, _ in answers if s is not None}, problems

    def _fail(self, round_id: str, problems: list[str]) -> None:
        with self.store.transaction() as conn:
            row = srr.get_round(conn, round_id, lock=True)
            if row is None or row.state not in OPEN or row.finals_pending is not None:
                return
            merged = [*json.loads(row.problems), *(p[:500] for p in problems)]
            srr.update_round(conn, round_id, state=FAILED, problems=json.dumps(merged),
                             finished_at_ms=self.now_ms())
        log.warning("settlement round %s failed: %s", round_id, "; ".join(problems))

    def _send_finals(self, round_id: str) -> int:
        """Deliver the decided round's final to every participant not acknowledged yet;
        how many are still pending."""
        with self.store.read() as conn:
            row = srr.get_round(conn, round_id)
            sigs = srr.signatures(conn, round_id)
        pending = json.loads(row.finals_pending or "[]")
        if not pending:
            return 0
        final = fed.SettlementFinal(round_id=round_id, statement=row.statement,
                                    signatures=[pb.Signed.FromString(s.signed) for s in sigs])
        data = final.SerializeToString()
        for node_id in pending:
            try:
                if node_id == self.me:
                    self.finalize(final, origin=self.me)
                else:
                    rtype, raw = self._call(node_id, "FinalizeSettlement", PT_FINAL, data)
                    ack = fed.SettlementAck.FromString(raw) if rtype == PT_ACK else None
                    if ack is None or not ack.final or ack.round_id != round_id:
                        raise FailedPrecondition(f"unexpected answer {rtype[:100]!r}")
            except (EapError, DecodeError) as exc:
                log.warning("round %s: final not delivered to %s: %s", round_id, node_id,
                            _why(exc))
                continue
            crashpoints.hit("coordinator.after_final_sent")
            with self.store.transaction() as conn:
                now = srr.get_round(conn, round_id, lock=True)
                left = [n for n in json.loads(now.finals_pending or "[]") if n != node_id]
                srr.update_round(conn, round_id, finals_pending=json.dumps(left))
        with self.store.read() as conn:
            return len(json.loads(srr.get_round(conn, round_id).finals_pending or "[]"))

    def resume(self) -> int:
        """Deliver the finals of every decided round of this coordinator; rounds still
        pending."""
        with self.store.read() as conn:
            rows = srr.undelivered_finals(conn, self.me)
        return sum(1 for r in rows if self._send_finals(r.round_id))

    def recover(self) -> int:
        """After a restart: fail this coordinator's undecided rounds (presumed abort), then
        deliver the finals of the decided ones.  Rounds failed.

        Rounds still driven are left alone: those started by this instance (the serve worker
        recovers a moment after start, when a round started through the node API may already
        be under way) and those whose round lock another replica holds
        (:mod:`eap.node.store.coordination`); a dead replica's lock is released with it."""
        failed = 0
        with self.store.read() as conn:
            rows = [r for r in srr.rounds_in(conn, OPEN, coordinator=self.me)
                    if r.finals_pending is None and r.round_id not in self._started]
        for candidate in rows:
            with self.store.coordinator.exclusive(round_lock(candidate.round_id)) as idle:
                if not idle:
                    continue
                with self.store.transaction() as conn:
                    row = srr.get_round(conn, candidate.round_id, lock=True)
                    if row is None or row.state not in OPEN or row.finals_pending is not None:
                        continue
                    srr.add_problem(conn, row, "the coordinator restarted before the round was "
                                    "decided (presumed abort); run it again",
                                    state=FAILED, finished_at_ms=self.now_ms())
                    failed += 1
        self.resume()
        return failed

    def take_requests(self) -> list[str]:
        """Run a round for each period with open ``settlement_requests`` (a crossed settlement
        threshold); the round ids run."""
        with self.store.read() as conn:
            rows = srr.open_requests(conn)
        by_period: dict[str, list[int]] = {}
        for r in rows:
            by_period.setdefault(r.period, []).append(int(r.id))
        ran = []
        for period, ids in sorted(by_period.items()):
            if self._retry_after.get(period, 0.0) > self._clock():
                continue
            # Shared by replicas (this node's rounds are in the database): wait after a round
            # of the period failed, whichever replica ran it.
            with self.store.read() as conn:
                failed_at = srr.last_failed_ms(conn, self.me, period)
            if failed_at and failed_at + self.settings.request_retry_s * 1000 > self.now_ms():
                continue
            try:
                result = self.run(period)
            except EapError as exc:
                log.warning("settlement request for %s: %s", period, _why(exc))
                self._retry_after[period] = self._clock() + self.settings.request_retry_s
                continue
            ran.append(result.round_id)
            if result.state == FAILED:
                self._retry_after[period] = self._clock() + self.settings.request_retry_s
                continue
            with self.store.transaction() as conn:
                srr.take_requests(conn, ids, self.now_ms())
        return ran

    # == executor ==================================================================================

    def execute_due(self, *, force: bool = False) -> int:
        """Run the due queued sides through the backend; how many executed now."""
        # One executor round at a time in this process, and among replicas of the node.
        with self._lock, self.store.coordinator.exclusive("settlement-exec") as mine:
            if not mine:
                return 0
            now = self.now_ms()
            with self.store.read() as conn:
                due = srr.due_executions(conn, 2**62 if force else now, self.settings.batch)
            if not due:
                return 0
            backend = self.backend
            many = batch_of(backend)
            if many is not None:
                return self._execute_many(due, many)
            done = 0
            for row in due:
                done += self._execute(row, backend)
            return done

    def _execute_many(self, rows: list[Any], many: BatchBackend) -> int:
        """The due ``rows`` in one backend call (the co-op ledger posts them in one
        transaction) and one transaction recording the outcomes; executed now.

        A crash between the two leaves the sides pending: the next round replays them with
        the same idempotency keys and the backend returns its first receipts, moving nothing
        twice (as for one side in :meth:`_execute`).
        """
        items = [_item(r) for r in rows]
        try:
            results = list(many(self.node, items))
            if len(results) != len(items):
                raise FailedPrecondition(f"the backend answered {len(results)} results for "
                                         f"{len(items)} sides")
        except Exception as exc:  # the whole call failed: every side failed alike
            results = [exc] * len(items)
        crashpoints.hit("executor.after_backend_call")
        done = 0
        now = self.now_ms()
        with self.store.transaction() as conn:
            executed = []
            for row, result in zip(rows, results, strict=True):
                attempts = int(row.attempts) + 1
                if isinstance(result, BaseException):
                    self._record_failure(conn, row, attempts, result)
                    continue
                receipt = dict(result or {})
                executed.append({"instruction_id": row.instruction_id, "side": row.side,
                                 "attempts": attempts,
                                 "backend": str(receipt.get("backend", ""))[:64] or None,
                                 "receipt": json.dumps(receipt, sort_keys=True, default=str)})
            done += srr.mark_executed(conn, executed, now)
            for round_id in sorted({r.round_id for r in rows}):
                if srr.execution_counts(conn, round_id).get(PENDING_EXEC, 0) == 0:
                    srr.update_round(conn, round_id, expect_states=(FINAL,), state=SETTLED,
                                     finished_at_ms=now)
        return done

    def _record_failure(self, conn: Any, row: Any, attempts: int, exc: BaseException) -> None:
        transient = bool(getattr(exc, "transient", True))
        delay = self._backoff_ms(attempts) if transient else \
            int(self.settings.backoff_cap_s * 1000)
        srr.update_execution(conn, row.instruction_id, row.side, attempts=attempts,
                             last_error=_why(exc), next_attempt_at_ms=self.now_ms() + delay)
        log.warning("settlement %s (%s) failed (attempt %d, %s): %s", row.instruction_id,
                    row.side, attempts, "transient" if transient else "permanent", _why(exc))

    def _execute(self, row: Any, backend: Backend | None) -> int:
        item = _item(row)
        attempts = int(row.attempts) + 1
        try:
            if backend is None:
                raise FailedPrecondition("no settlement backend is installed")
            receipt = dict(backend(self.node, item) or {})
        except Exception as exc:
            with self.store.transaction() as conn:
                self._record_failure(conn, row, attempts, exc)
            return 0
        crashpoints.hit("executor.after_backend_call")
        with self.store.transaction() as conn:
            if not srr.update_execution(
                    conn, row.instruction_id, row.side, state=EXECUTED, attempts=attempts,
                    backend=str(receipt.get("backend", ""))[:64] or None,
                    receipt=json.dumps(receipt, sort_keys=True, default=str),
                    last_error=None, executed_at_ms=self.now_ms()):
                return 0
            if srr.execution_counts(conn, row.round_id).get(PENDING_EXEC, 0) == 0:
                srr.update_round(conn, row.round_id, expect_states=(FINAL,), state=SETTLED,
                                 finished_at_ms=self.now_ms())
        return 1

    def _backoff_ms(self, attempts: int) -> int:
        s = self.settings
        delay = min(s.backoff_cap_s, s.backoff_base_s * 2 ** min(attempts, 30))
        return int(delay * 1000 * self._rng.uniform(0.5, 1.0))

    # == reading ===================================================================================

    def get(self, round_id: str) -> api.SettlementRound:
        """Raises NotFound when this node knows no such round."""
        with self.store.read() as conn:
            row = srr.get_round(conn, round_id)
            if row is None:
                raise NotFound(f"no settlement round {round_id[:300]}")
            return self._message(conn, row)

    def list(self, *, page_size: int = 50, page_token: str = "") \
            -> api.ListSettlementRoundsResponse:
        size = page_size if 0 < page_size <= 500 else 50
        after = None
        if page_token:
            at, sep, rid = page_token.partition(":")
            if not sep or not at.isdigit():
                raise invalid("page_token", "malformed page token")
            after = (int(at), rid)
        with self.store.read() as conn:
            rows = srr.list_rounds(conn, size + 1, after)
            out = api.ListSettlementRoundsResponse(
                rounds=[self._message(conn, r) for r in rows[:size]])
        if len(rows) > size:
            last = rows[size - 1]
            out.next_page_token = f"{last.started_at_ms}:{last.round_id}"
        return out

    def _message(self, conn: Any, row: Any) -> api.SettlementRound:
        msg = api.SettlementRound(
            round_id=row.round_id, period=row.period, state=row.state,
            statement=bytes(row.statement or b""), digest=row.digest or "",
            signed_by=[s.node_id for s in srr.signatures(conn, row.round_id)],
            problems=json.loads(row.problems), coordinator=row.coordinator,
            started_at_ms=int(row.started_at_ms))
        if row.statement is None:
            return msg
        stmt = pb.SettlementStatement.FromString(row.statement)
        msg.currencies.extend(stmt.currencies)
        msg.held_out.extend(stmt.held_out)
        execs: dict[str, list[Any]] = {}
        for e in srr.executions(conn, row.round_id):
            execs.setdefault(e.instruction_id, []).append(e)
        for ins in stmt.instructions:
            sides = execs.get(ins.id, [])
            status = msg.instructions.add(instruction=ins)
            if not sides:
                status.state = "pending" if sr.involves(ins, self.me) else "not ours"
                continue
            status.state = EXECUTED if all(e.state == EXECUTED for e in sides) else PENDING_EXEC
            status.attempts = sum(int(e.attempts) for e in sides)
            status.backend = ",".join(sorted({e.backend for e in sides if e.backend}))
            status.receipt = ";".join(_receipt_ref(e) for e in sides if e.receipt)
            status.last_error = "; ".join(e.last_error for e in sides
                                          if e.last_error and e.state != EXECUTED)
        return msg


def _receipt_ref(row: Any) -> str:
    try:
        receipt = json.loads(row.receipt)
    except ValueError:
        return str(row.receipt)[:200]
    ref = receipt.get("reference") or receipt.get("receipt") or receipt.get("id")
    return f"{row.side}:{ref if ref else row.receipt}"[:300]


def round_lock(round_id: str) -> str:
    """Name of the lock a coordinator holds while it drives ``round_id``."""
    return f"settlement-round:{round_id}"


def round_dict(msg: api.SettlementRound) -> dict[str, Any]:
    """A SettlementRound as plain JSON-able data (the statement decoded; integers stay
    integers)."""
    stmt = pb.SettlementStatement.FromString(msg.statement) if msg.statement else None
    return {
        "round_id": msg.round_id, "period": msg.period, "state": msg.state,
        "coordinator": msg.coordinator, "started_at_ms": msg.started_at_ms,
        "digest": msg.digest, "signed_by": list(msg.signed_by),
        "participants": list(stmt.participants) if stmt else [],
        "obligations": stmt.obligations if stmt else 0,
        "currencies": [{"currency": c.currency, "gross": c.gross_minor, "net": c.net_minor,
                        "efficiency": c.efficiency, "obligations": c.obligations}
                       for c in msg.currencies],
        "positions": [{"party": p.party, "currency": p.currency, "net_minor": p.net_minor}
                      for p in (stmt.positions if stmt else [])],
        "instructions": [{"id": s.instruction.id, "payer": s.instruction.payer,
                          "payee": s.instruction.payee,
                          "amount_minor": s.instruction.amount_minor,
                          "currency": s.instruction.currency, "state": s.state,
                          "backend": s.backend, "receipt": s.receipt,
                          "attempts": s.attempts, "last_error": s.last_error}
                         for s in msg.instructions],
        "held_out": [{"id": o.id, "payer": o.payer, "payee": o.payee,
                      "amount_minor": o.amount_minor, "currency": o.currency,
                      "period": o.period} for o in msg.held_out],
        "problems": list(msg.problems),
    }


def install(runtime: Any) -> Settlement | None:
    """Federation runtime extension: the round worker (:meth:`Settlement.recover` -- rounds
    no live coordinator drives fail, finals still owed are delivered -- then settlement
    requests) and the executor."""
    engine = getattr(runtime, "transfers", None)
    if engine is None:
        log.warning("settlement rounds need the transfer engine; not installed")
        return None
    svc: Settlement = engine.settlement
    runtime.settlement = svc

    def rounds() -> None:
        # Every round, not only the first: a replica of this node that died driving a round
        # left it open with its lock released; another replica fails it (presumed abort).
        svc.recover()
        svc.take_requests()

    runtime.worker.every("settlement", svc.settings.round_interval_s, rounds,
                         initial_delay_s=1.0)
    runtime.worker.every("settlement-exec", svc.settings.exec_interval_s, svc.execute_due)
    return svc
