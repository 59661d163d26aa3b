"""The ledger of bundles: the moves local and cross-node operations share.

Spend checks (:func:`spendable`), hash-chained splits (:func:`split`), the journal
(:func:`journal`) and bundle provenance (:func:`proof`) in the caller's transaction.  The local
operations of :class:`~eap.node.domain.node.Node` and the federation's transfer engine both go
through these functions, so a Wh moves by the same rules whichever way it goes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np
from sqlalchemy import Connection

from eap.node import batches
from eap.node.domain import provenance
from eap.node.domain.provenance import lineage
from eap.node.errors import Aborted, EapError, FailedPrecondition, NotFound, PermissionDenied
from eap.node.records.enums import Status
from eap.node.records.models import Bundle, Principal
from eap.node.store import custody_repos as cr
from eap.node.store import repos
from eap.v1 import types_pb2 as pb


def now_ms() -> int:
    return int(time.time() * 1000)


def bundle_id(issuer: str, start: int, end: int) -> str:
    return f"{issuer}/{start}-{end}"


def spendable(conn: Connection, ref: str, principal: Principal, wh: int) -> tuple[Bundle, int]:
    """The bundle ``ref`` locked for a move of ``wh`` Wh (0 = all) by ``principal``.

    Raises:
        NotFound: unknown bundle.
        PermissionDenied: the principal may not act for the bundle's owner.
        FailedPrecondition: not ACTIVE, or fewer Wh than asked.
    """
    found = repos.get_bundle(conn, ref, lock=True)
    if found is None:
        raise NotFound(f"no bundle {ref}", [_fv("bundle_id", "unknown bundle")])
    bundle, version = found
    if not principal.may_act_for(bundle.owner):
        raise PermissionDenied(f"bundle {ref} is not held by the calling account")
    if bundle.status != Status.ACTIVE:
        raise FailedPrecondition(
            f"bundle {ref} is {Status(bundle.status).name}; only ACTIVE bundles can move")
    if wh > bundle.wh:
        raise FailedPrecondition(f"bundle {ref} holds {bundle.wh} Wh; {wh} Wh requested",
                                 [_fv("wh", f"at most {bundle.wh}")])
    return bundle, version


def split(conn: Connection, parent: Bundle, version: int, amount: int, new_owner: str,
          new_status: Status) -> tuple[Bundle, Bundle]:
    """Split ``parent`` into ``[start, start+amount)`` (to ``new_owner`` with ``new_status``)
    and the remainder (unchanged owner, ACTIVE).  Lineage hashes chain to the parent."""
    if not repos.set_bundle_state(conn, parent.id, version, expect_status=Status.ACTIVE,
                                  status=int(Status.SPLIT)):
        raise Aborted(f"bundle {parent.id} changed concurrently; retry")
    cut = parent.serial_start + amount
    parent_lineage = bytes.fromhex(parent.lineage_hash)
    at = now_ms()

    def child(start: int, end: int, owner: str, status: Status) -> Bundle:
        cid = bundle_id(parent.issuer, start, end)
        return Bundle(**{**parent.to_dict(), "id": cid, "serial_start": start,
                         "serial_end": end, "owner": owner, "status": int(status),
                         "parent_id": parent.id, "lineage_hash": lineage(parent_lineage, cid),
                         "issued_at_ms": at})

    first = child(parent.serial_start, cut, new_owner, new_status)
    rest = child(cut, parent.serial_end, parent.owner, Status.ACTIVE)
    repos.insert_bundles(conn, [first, rest])
    return first, rest


def journal(conn: Connection, action: str, bundle: str | None, frm: str | None, to: str | None,
            wh: int, request_id: str | None) -> None:
    """One line of the node's journal of moves."""
    repos.journal(conn, [{"at_ms": now_ms(), "action": action, "bundle_id": bundle,
                          "from_owner": frm, "to_owner": to, "wh": wh,
                          "request_id": request_id}])


# -- provenance ------------------------------------------------------------------------------------


class _BatchCache:
    """Decoded own batches and their leaf hashes, by (database, seq): proofs of bundles of one
    batch reuse one leaf computation.  Batches never change once written."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, int], tuple[Any, Any, np.ndarray]] = OrderedDict()

    def get(self, conn: Connection, seq: int) -> tuple[pb.RecordBatch, Any, np.ndarray]:
        key = (str(conn.engine.url), seq)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        row = cr.own_batch(conn, seq)
        if row is None:
            raise EapError(f"batch {seq} is missing from this node's store")
        msg = batches.parse(bytes(row.payload))
        cols = batches.from_proto(msg)
        item = (msg, cols, cols.leaf_hashes())
        with self._lock:
            self._items[key] = item
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return item


_batches = _BatchCache()


def proof(conn: Connection, me: str, bundle: Bundle) -> tuple[pb.RecordProof, bytes | None]:
    """The provenance of a bundle held (or once held) here, and the serialised ``Signed``
    custody record that brought its serials here (None for serials that never left).

    Walks the split lineage up to the issued record (issued here) or to the bundle that came
    from another node (its stored proof), then extends the lineage down to ``bundle``.

    Raises:
        EapError: the lineage is broken in this store (an ancestor is missing).
    """
    made, custody, steps = _walk(conn, me, bundle)
    if steps > 1:
        # Memo for the next proof below the same (SPLIT, never changing) parent: a bundle
        # sold piece by piece grows a long lineage, and each piece would walk all of it.
        cut = pb.RecordProof()
        cut.CopyFrom(made)
        del cut.lineage[-1]
        cr.put_provenance(conn, made.lineage[-2], cut.SerializeToString(), custody, new=True)
    return made, custody


def _walk(conn: Connection, me: str,
          bundle: Bundle) -> tuple[pb.RecordProof, bytes | None, int]:
    """The proof, its custody record, and how many bundles up the walk went to find it (0:
    ``bundle`` itself had it stored; a memo is worth writing beyond 1)."""
    ids: list[str] = []
    cur = bundle
    for _ in range(provenance.MAX_LINEAGE + 1):
        ids.append(cur.id)
        stored = cr.get_provenance(conn, cur.id)
        if stored is not None:
            base = pb.RecordProof.FromString(bytes(stored.proof))
            custody = bytes(stored.custody) if stored.custody is not None else None
            return provenance.extend(base, ids[-2::-1]), custody, len(ids) - 1
        seq = cr.batch_seq_of(conn, cur.id) if cur.parent_id is None and cur.issuer == me else None
        if seq is not None:
            msg, cols, leaves = _batches.get(conn, seq)
            return (_own_proof(msg, cols, leaves, cur.serial_start, ids[::-1]), None,
                    len(ids) - 1)
        if cur.parent_id is None:
            break
        found = repos.get_bundle(conn, cur.parent_id)
        if found is None:
            break
        cur = found[0]
    raise EapError(f"bundle {bundle.id}: its lineage is broken in this store at {cur.id}")


def _own_proof(msg: pb.RecordBatch, cols: Any, leaves: np.ndarray, serial_start: int,
               ids: list[str]) -> pb.RecordProof:
    from eap.node import kernels

    starts = cols.arrays["serial_start"]
    index = int(np.searchsorted(starts, serial_start))
    if index >= len(starts) or int(starts[index]) != serial_start:
        raise EapError(f"batch #{msg.seq} has no record at serial {serial_start}")
    return pb.RecordProof(batch=provenance.header_of(msg), index=index,
                          record=provenance.record_from_columns(cols, index),
                          path=kernels.inclusion_proof(leaves, index), lineage=ids)


def _fv(name: str, description: str):
    from eap.node.errors import FieldViolation

    return FieldViolation(name, description)
