"""The statement of a settlement round, from the participants' views (docs/settlement.md).

Pure and deterministic: no I/O, no clock.  Every participant of a round runs
:func:`compute` over the same verified views and gets the same statement bytes, whatever
the order of the views or of the obligations inside them:

1. **Bilateral reconciliation.**  A cross-node obligation (payer and payee on two nodes; its
   id is the transfer id) is *agreed* when the payer's node and the payee's node both state
   it with identical terms (payer, payee, amount, currency, period).  Stated by one side
   only, or with different terms, or stated by a node that is party to neither side, it is
   *held out*: reported in the statement, never settled.  A local obligation (both parties
   on one node) is agreed as its node states it.  Malformed obligations (amount not
   positive, not a currency code, another period, payer = payee) are held out too.
2. **Multilateral net** of the agreed obligations through the ``_core`` netting kernels
   (:mod:`eap.node.kernels`): parties indexed in sorted order, currencies in sorted order,
   obligations in id order.  An overflow is :class:`~eap.node.errors.OutOfRange`.
3. **Serialisation.**  The statement is a ``SettlementStatement`` built field by field in
   the fixed order of :func:`compute` (participants sorted; positions by (currency, party);
   instructions in the kernel's order, ids ``"<round>/<index>"``; currencies sorted; held
   out by (id, serialised obligation)), serialised with ``deterministic=True``.  Protobuf
   serialisation is not canonical in general, but it is a function of the message for one
   implementation: every node running this code derives the same bytes, and the digest is
   ``SHA-256`` of them.  Nodes only ever compare bytes they recomputed themselves.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from eap.node import kernels
from eap.node.errors import OutOfRange
from eap.v1 import types_pb2 as pb

VIEW_TAG = b"EAP-SETTLE-VIEW-v1\x00"
STATEMENT_TAG = b"EAP-SETTLE-v1\x00"

PERIOD_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
#: ``<node id>/<account>``: a party of an obligation as it appears in a view.
PARTY_RE = re.compile(r"^(?P<node>[a-z0-9.-]{1,128})/(?P<account>[A-Za-z0-9_]{1,64})$")
INT64_MAX = 2**63 - 1


def node_of(party: str) -> str:
    """The node part of ``"<node id>/acct_..."`` ("" when malformed)."""
    m = PARTY_RE.match(party or "")
    return m.group("node") if m else ""


def terms(o: pb.Obligation) -> tuple[str, str, int, str, str]:
    return (o.payer, o.payee, int(o.amount_minor), o.currency, o.period)


def _malformed(o: pb.Obligation, period: str) -> bool:
    return (not o.id or len(o.id) > 200 or not node_of(o.payer) or not node_of(o.payee)
            or o.payer == o.payee or not 0 < o.amount_minor <= INT64_MAX
            or not CURRENCY_RE.match(o.currency) or o.period != period)


@dataclass
class Reconciled:
    """Agreed obligations (by id) and held-out ones, with the reason of each."""

    agreed: dict[str, pb.Obligation] = field(default_factory=dict)
    held_out: list[pb.Obligation] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)


def reconcile(views: Mapping[str, pb.SettlementView], period: str) -> Reconciled:
    """Step 1 of the module docstring over ``{node id: its view}``."""
    # id -> stating node -> the obligations it states under that id
    stated: dict[str, dict[str, list[pb.Obligation]]] = {}
    for node, view in views.items():
        for o in view.obligations:
            stated.setdefault(o.id, {}).setdefault(node, []).append(o)
    out = Reconciled()
    for oid in sorted(stated):
        by_node = stated[oid]
        versions = [o for node in sorted(by_node) for o in by_node[node]]
        first = versions[0]
        payer_node, payee_node = node_of(first.payer), node_of(first.payee)
        why = ""
        if any(_malformed(o, period) for o in versions):
            why = "malformed (amount, currency, period or parties)"
        elif any(len(v) > 1 for v in by_node.values()):
            why = "stated twice by one node"
        elif len({terms(o) for o in versions}) > 1:
            why = "terms differ between the two nodes"
        elif set(by_node) - {payer_node, payee_node}:
            why = "stated by a node that is party to neither side"
        elif payer_node != payee_node and set(by_node) != {payer_node, payee_node}:
            missing = sorted({payer_node, payee_node} - set(by_node))
            why = f"not stated by {', '.join(missing)}"
        if why:
            unique = {o.SerializeToString(deterministic=True): o for o in versions}
            out.held_out.extend(unique[k] for k in sorted(unique))
            out.reasons[oid] = why
        else:
            out.agreed[oid] = first
    return out


def obligations_digest(ids: Iterable[str]) -> bytes:
    """SHA-256 of the ids, sorted, each followed by ``"\\n"``."""
    h = hashlib.sha256()
    for oid in sorted(ids):
        h.update(oid.encode() + b"\n")
    return h.digest()


def compute(*, round_id: str, period: str, coordinator: str,
            views: Mapping[str, pb.SettlementView]) -> pb.SettlementStatement:
    """The statement of a round from its participants' views (``{node id: view}``; the
    participants are its keys).

    Raises:
        OutOfRange: a gross or a net position does not fit int64.
    """
    rec = reconcile(views, period)
    stmt = pb.SettlementStatement(
        round_id=round_id, period=period, coordinator=coordinator,
        participants=sorted(views), obligations_digest=obligations_digest(rec.agreed),
        obligations=len(rec.agreed))
    agreed = [rec.agreed[k] for k in sorted(rec.agreed)]
    if agreed:
        names = sorted({o.payer for o in agreed} | {o.payee for o in agreed})
        codes = sorted({o.currency for o in agreed})
        party = {p: i for i, p in enumerate(names)}
        cur_ix = {c: i for i, c in enumerate(codes)}
        n = len(agreed)
        payer = np.fromiter((party[o.payer] for o in agreed), np.int32, n)
        payee = np.fromiter((party[o.payee] for o in agreed), np.int32, n)
        cur = np.fromiter((cur_ix[o.currency] for o in agreed), np.int32, n)
        amount = np.fromiter((o.amount_minor for o in agreed), np.int64, n)
        positions = kernels.net_positions(payer, payee, amount, cur, len(names), len(codes))
        plan = kernels.settlement_instructions(positions)
        eff = kernels.efficiency(amount, cur, positions)
        for c, code in enumerate(codes):
            for p, name in enumerate(names):
                if positions[p, c]:
                    stmt.positions.add(party=name, currency=code, net_minor=int(positions[p, c]))
        moved = [0] * len(codes)
        for i, (a, b, c, m) in enumerate(zip(plan.payer.tolist(), plan.payee.tolist(),
                                              plan.currency.tolist(), plan.amount.tolist(),
                                              strict=True)):
            stmt.instructions.add(id=f"{round_id}/{i}", payer=names[a], payee=names[b],
                                  amount_minor=int(m), currency=codes[c])
            moved[c] += int(m)
        for c, code in enumerate(codes):
            mask = cur == c
            gross = sum(amount[mask].tolist())
            if gross > INT64_MAX or moved[c] > INT64_MAX:
                raise OutOfRange(f"the gross of {code} obligations does not fit int64")
            stmt.currencies.add(currency=code, gross_minor=gross, net_minor=moved[c],
                                efficiency=round(float(eff[c]), 6),
                                obligations=int(np.count_nonzero(mask)))
    stmt.held_out.extend(rec.held_out)
    return stmt


def statement_bytes(stmt: pb.SettlementStatement) -> bytes:
    """The exact bytes every participant signs (module docstring, step 3)."""
    return stmt.SerializeToString(deterministic=True)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def view_bytes(view: pb.SettlementView) -> bytes:
    return view.SerializeToString(deterministic=True)


def involves(instruction: pb.SettlementInstruction, node_id: str) -> list[str]:
    """The sides of ``instruction`` that ``node_id`` executes: ``debit`` (its account pays),
    ``credit`` (its account is paid)."""
    sides = []
    if node_of(instruction.payer) == node_id:
        sides.append("debit")
    if node_of(instruction.payee) == node_id:
        sides.append("credit")
    return sides
