"""Anyone can check the federation's books: GetHoldings and the audit (docs/federation.md).

**GetHoldings** (:class:`HoldingsService`): a peer asks for this node's holdings statement
(:mod:`eap.node.domain.holdings`) with a nonce; the answer is the statement signed by this
node, bound to the caller (``audience``) and echoing the nonce.

**The audit** (:class:`Auditor`): a node gathers its own statement and every trusted peer's
through GetHoldings, only through the protocol, verifies each (signer = the peer, with its key
from the trust list; audience = this node; nonce echoed) and reconciles them
(:mod:`eap.node.domain.reconcile`).  Statements are snapshots taken at slightly different
times, so a transfer moving between two of them can make the books look wrong for a moment:
when every statement verified but the books do not close, the whole gathering is repeated
(up to :attr:`Auditor.attempts` times) before reporting.  Used by ``RunAudit`` (NodeApi), by
``eap-node audit`` and by the demo.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from eap.node.domain import holdings, provenance, reconcile
from eap.node.errors import EapError, invalid
from eap.node.federation.peers import TrustList
from eap.node.store import holdings_repos as hr
from eap.v1 import federation_pb2 as fed
from eap.v1 import node_api_pb2 as api
from eap.v1 import types_pb2 as pb

log = logging.getLogger(__name__)

PT_HOLDINGS_REQUEST = fed.HoldingsRequest.DESCRIPTOR.full_name
PT_SIGNED = pb.Signed.DESCRIPTOR.full_name
#: Nonce length the auditor sends.
NONCE_BYTES = 32


class HoldingsService:
    """The GetHoldings RPC of one node."""

    def __init__(self, node: Any, *, clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self.me: str = node.node_id
        self._clock = clock

    def statement(self, *, audience: str, nonce: bytes) -> pb.Signed:
        """This node's signed statement for ``audience`` (one read snapshot)."""
        if len(nonce) > holdings.MAX_NONCE:
            raise invalid("nonce", f"must be at most {holdings.MAX_NONCE} bytes")
        with self.node.store.read() as conn:
            hr.snapshot(conn)
            return holdings.signed(conn, self.me, self.node.keys, audience=audience,
                                   nonce=nonce, at_ms=int(self._clock() * 1000))

    def on_get_holdings(self, envelope: Any) -> tuple[str, bytes]:
        """GetHoldings: ``HoldingsRequest`` in, ``Signed`` (HoldingsStatement body) out.

        Raises:
            InvalidArgument: not a HoldingsRequest, or a nonce over 64 bytes.
        """
        try:
            req = fed.HoldingsRequest.FromString(envelope.payload)
        except DecodeError as exc:
            raise invalid("payload", f"not a {PT_HOLDINGS_REQUEST}") from exc
        signed = self.statement(audience=envelope.origin, nonce=req.nonce)
        log.info("GetHoldings from %s: statement of %d bytes", envelope.origin, len(signed.body))
        return PT_SIGNED, signed.SerializeToString()


@dataclass
class _Gathered:
    node_id: str
    statement: pb.HoldingsStatement | None = None
    digest: str = ""
    key_id: str = ""
    error: str = ""


class Auditor:
    """Gathers and reconciles the federation's holdings statements (module docstring).

    Args:
        node: this node (store, keys, id).
        transport: reaches peers (``PeerClient.call`` or the in-process look-alike); without
            one every peer is reported unreachable.
        trust: the trust list (peers asked, and their keys).
    """

    #: Gatherings at most, when the books do not close (transfers moving in between).
    attempts = 3
    #: Pause before gathering again (times the attempt number).
    retry_delay_s = 0.5
    #: Deadline of one GetHoldings call; attempts of the transport per call.
    rpc_timeout_s = 10.0
    rpc_attempts = 2

    def __init__(self, node: Any, transport: Any, trust: TrustList | None = None, *,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.node = node
        self.me: str = node.node_id
        self.transport = transport
        self.trust = trust or TrustList(node.store, node.node_id)
        self.service = HoldingsService(node, clock=clock)
        self._clock = clock
        self._sleep = sleep

    @classmethod
    def from_engine(cls, engine: Any) -> Auditor:
        """The auditor of a running transfer engine (its transport, trust list and clock)."""
        return cls(engine.node, engine.transport, engine.trust,
                   clock=getattr(engine, "_clock", time.time),
                   sleep=getattr(engine, "_sleep", time.sleep))

    def run(self, *, skip_peers: Iterable[str] = ()) -> api.AuditReport:
        """Gather, verify and reconcile; the :class:`~eap.v1.node_api_pb2.AuditReport`."""
        skip = set(skip_peers)
        peers = sorted(p.node_id for p in self.trust.all() if p.node_id not in skip)
        report = api.AuditReport()
        for attempt in range(1, self.attempts + 1):
            report = self._once(peers)
            if report.ok or not all(s.verified for s in report.statements):
                break
            if attempt < self.attempts:
                log.info("audit %d/%d: the books do not close; gathering again", attempt,
                         self.attempts)
                self._sleep(self.retry_delay_s * attempt)
        log.log(logging.INFO if report.ok else logging.WARNING, "audit by %s: %s (%d issuers, "
                "%d statements)", self.me, "ok" if report.ok else "NOT ok", len(report.issuers),
                len(report.statements))
        return report

    # -- one gathering -------------------------------------------------------------------------

    def _once(self, peers: list[str]) -> api.AuditReport:
        verify = provenance.signature_check(self.me, self.node.keys, self.trust.peer_keys)
        nonce = secrets.token_bytes(NONCE_BYTES)
        at_ms = int(self._clock() * 1000)
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(peers) + 1)),
                                thread_name_prefix="eap-audit") as pool:
            futures = [pool.submit(self._own, nonce, verify)]
            futures += [pool.submit(self._peer, p, nonce, verify) for p in peers]
            gathered = [f.result() for f in futures]
        report = api.AuditReport(at_ms=at_ms, auditor=self.me)
        for g in gathered:
            report.statements.add(node_id=g.node_id, digest=g.digest, key_id=g.key_id,
                                  verified=g.statement is not None, error=g.error)
            if g.statement is None:
                report.problems.append(f"no verified statement from {g.node_id}: {g.error}")
        books = reconcile.reconcile(
            {g.node_id: g.statement for g in gathered if g.statement is not None},
            expected=[g.node_id for g in gathered])
        for b in books.values():
            report.issuers.add(issuer=b.issuer, issued_wh=b.issued_wh, active_wh=b.active_wh,
                               retired_wh=b.retired_wh, in_flight_wh=b.in_flight_wh,
                               missing_wh=b.missing_wh, conflicting_wh=b.conflicting_wh,
                               ok=b.ok, problems=b.problems)
        report.ok = not report.problems and all(b.ok for b in books.values())
        return report

    def _own(self, nonce: bytes, verify: provenance.SignatureCheck) -> _Gathered:
        try:
            signed = self.service.statement(audience=self.me, nonce=nonce)
        except Exception as exc:  # the own store failed: reported, not raised
            log.exception("audit: own statement")
            return _Gathered(self.me, error=_why(exc))
        return self._check(self.me, signed, nonce, verify)

    def _peer(self, peer: str, nonce: bytes, verify: provenance.SignatureCheck) -> _Gathered:
        if self.transport is None:
            return _Gathered(peer, error="unreachable: this node has no federation transport")
        try:
            rtype, data = self.transport.call(
                peer, "GetHoldings", PT_HOLDINGS_REQUEST,
                fed.HoldingsRequest(nonce=nonce).SerializeToString(),
                timeout=self.rpc_timeout_s, attempts=self.rpc_attempts)
        except Exception as exc:
            return _Gathered(peer, error=f"unreachable: {_why(exc)}")
        if rtype != PT_SIGNED:
            return _Gathered(peer, error=f"answered GetHoldings with {rtype[:100]!r}")
        try:
            signed = pb.Signed.FromString(data)
        except DecodeError:
            return _Gathered(peer, error="answer is not a Signed")
        return self._check(peer, signed, nonce, verify)

    def _check(self, node_id: str, signed: pb.Signed, nonce: bytes,
               verify: provenance.SignatureCheck) -> _Gathered:
        """Signature by ``node_id``, its own statement, for this node and this nonce."""
        out = _Gathered(node_id, digest=hashlib.sha256(bytes(signed.body)).hexdigest(),
                        key_id=signed.key_id[:100])
        try:
            stmt = holdings.open_statement(signed, verify, signer=node_id)
        except EapError as exc:
            out.error = f"statement refused: {exc.message}"[:500]
            return out
        if stmt.audience != self.me:
            out.error = f"statement made for {stmt.audience[:128]!r}, not for {self.me}"
        elif stmt.nonce != nonce:
            out.error = "statement does not echo this audit's nonce (replayed?)"
        else:
            out.statement = stmt
        return out


def _why(exc: Exception) -> str:
    return (getattr(exc, "message", None) or str(exc) or type(exc).__name__)[:300]


def report_dict(report: api.AuditReport) -> dict[str, Any]:
    """An AuditReport as plain JSON-able data (integers stay integers)."""
    return {
        "ok": report.ok,
        "at_ms": report.at_ms,
        "auditor": report.auditor,
        "statements": [{"node_id": s.node_id, "digest": s.digest, "key_id": s.key_id,
                        "verified": s.verified, "error": s.error} for s in report.statements],
        "issuers": [{"issuer": i.issuer, "issued_wh": i.issued_wh, "active_wh": i.active_wh,
                     "retired_wh": i.retired_wh, "in_flight_wh": i.in_flight_wh,
                     "missing_wh": i.missing_wh, "conflicting_wh": i.conflicting_wh,
                     "ok": i.ok, "problems": list(i.problems)} for i in report.issuers],
        "problems": list(report.problems),
    }
