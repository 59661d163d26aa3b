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


def _judge(by_node: Mapping[str, list[pb.Obligation]], period: str) -> str:
    """Why an obligation stated as ``{stating node: its versions}`` is held out ("" when it
    is agreed): step 1 of the module docstring, reasons in this order."""
    versions = [o for node in sorted(by_node) for o in by_node[node]]
    first = versions[0]
    payer_node, payee_node = node_of(first.payer), node_of(first.payee)
    if any(_malformed(o, period) for o in versions):
        return "malformed (amount, currency, period or parties)"
    if any(len(v) > 1 for v in by_node.values()):
        return "stated twice by one node"
    if len({terms(o) for o in versions}) > 1:
        return "terms differ between the two nodes"
    if set(by_node) - {payer_node, payee_node}:
        return "stated by a node that is party to neither side"
    if payer_node != payee_node and set(by_node) != {payer_node, payee_node}:
        missing = sorted({payer_node, payee_node} - set(by_node))
        return f"not stated by {', '.join(missing)}"
    return ""


@dataclass
class Agreed:
    """The agreed obligations as columns, in id order: parties and currencies are indexes
    into ``names`` and ``codes``, both sorted (what the netting kernels take)."""

    ids: list[str]
    names: list[str]
    codes: list[str]
    payer: np.ndarray
    payee: np.ndarray
    amount: np.ndarray
    currency: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Reconciled:
    """Agreed obligations (as columns, and by id) and held-out ones, with the reason of
    each."""

    columns: Agreed
    held_out: list[pb.Obligation] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    #: Where the agreed version of each agreed id is (same order as the ids): row numbers
    #: over the views laid end to end, and the first row of each view.
    _views: list[pb.SettlementView] = field(default_factory=list, repr=False)
    _starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    _rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    _agreed: dict[str, pb.Obligation] | None = field(default=None, repr=False)

    @property
    def agreed(self) -> dict[str, pb.Obligation]:
        """``{id: obligation}`` of the agreed ones, by id (built on first use)."""
        if self._agreed is None:
            k = np.searchsorted(self._starts, self._rows, side="right") - 1
            j = self._rows - self._starts[k]
            self._agreed = {oid: self._views[v].obligations[i] for oid, v, i
                            in zip(self.columns.ids, k.tolist(), j.tolist(), strict=True)}
        return self._agreed

    def parties_of(self, node_id: str) -> list[str]:
        """The agreed ids whose payer or payee is an account of ``node_id``, sorted."""
        a = self.columns
        ours = np.fromiter((node_of(p) == node_id for p in a.names), bool, len(a.names))
        keep = ours[a.payer] | ours[a.payee] if len(a.names) else np.zeros(0, bool)
        return [a.ids[i] for i in np.flatnonzero(keep).tolist()]


def reconcile(views: Mapping[str, pb.SettlementView], period: str) -> Reconciled:
    """Step 1 of the module docstring over ``{node id: its view}``.

    Columnar: every obligation is read once; the rules are checked over arrays (each string
    predicate once per distinct value), and only ids some rule may hold out go through
    :func:`_judge` one by one, which decides them exactly.
    """
    nodes = sorted(views)
    ids: list[str] = []
    payers: list[str] = []
    payees: list[str] = []
    amounts: list[int] = []
    currencies: list[str] = []
    periods: list[str] = []
    starts: list[int] = []
    for node in nodes:
        obs = views[node].obligations
        rows = [(o.id, o.payer, o.payee, o.amount_minor, o.currency, o.period) for o in obs]
        starts.append(len(ids))
        if not rows:
            continue
        i, a, b, m, c, p = zip(*rows, strict=True)
        ids += i
        payers += a
        payees += b
        amounts += m
        currencies += c
        periods += p
    n = len(ids)
    first_row = np.asarray(starts, np.int64)
    node_ix = np.repeat(np.arange(len(nodes), dtype=np.int64),
                        np.diff(np.append(first_row, n)))
    uid_of, uid = _intern(ids)
    party_of, both = _intern(payers + payees)
    payer, payee = both[:n], both[n:]
    cur_of, cur = _intern(currencies)
    per_of, per = _intern(periods)
    amount = np.fromiter(amounts, np.int64, n)
    del payers, payees, currencies, periods, amounts
    n_ids = len(uid_of)
    uids = list(uid_of)
    parties = list(party_of)

    # per distinct value: the string rules and the node of each party
    party_nodes = [node_of(p) for p in parties]
    node_code = {x: k for k, x in enumerate(sorted(set(party_nodes)))}
    pnode = np.fromiter((node_code[x] for x in party_nodes), np.int64, len(parties))
    view_code = np.fromiter((node_code.get(x, -1) for x in nodes), np.int64, len(nodes))
    bad_party = np.fromiter((not x for x in party_nodes), bool, len(parties))
    bad_id = np.fromiter((not i or len(i) > 200 for i in uids), bool, n_ids)
    bad_cur = np.fromiter((not CURRENCY_RE.match(c) for c in cur_of), bool, len(cur_of))
    bad_per = np.fromiter((p != period for p in per_of), bool, len(per_of))

    # per row, then per id: does any rule fire?  (ids stated more than once compare every
    # version with the first one stated)
    first = np.full(n_ids, n, np.int64)
    np.minimum.at(first, uid, np.arange(n, dtype=np.int64))
    ref = first[uid]
    sn = view_code[node_ix]
    flagged = (bad_id[uid] | bad_party[payer] | bad_party[payee] | (payer == payee)
               | (amount <= 0) | bad_cur[cur] | bad_per[per]
               | (payer != payer[ref]) | (payee != payee[ref]) | (amount != amount[ref])
               | (cur != cur[ref]) | (per != per[ref])
               | ((sn != pnode[payer]) & (sn != pnode[payee])))
    suspect = np.bincount(uid, weights=flagged, minlength=n_ids) > 0
    per_node = np.bincount(uid * len(nodes) + node_ix, minlength=n_ids * len(nodes))
    suspect |= (per_node.reshape(n_ids, len(nodes)) > 1).any(axis=1)
    versions = np.bincount(uid, minlength=n_ids)
    suspect |= (pnode[payer[first]] != pnode[payee[first]]) & (versions < 2) if n_ids else \
        np.zeros(0, bool)

    # the suspects, decided one by one
    out_held: list[pb.Obligation] = []
    reasons: dict[str, str] = {}
    cleared = np.zeros(n_ids, bool)
    suspects = np.flatnonzero(suspect).tolist()
    if suspects:
        rows_of: dict[int, list[int]] = {u: [] for u in suspects}
        for r in np.flatnonzero(suspect[uid]).tolist():
            rows_of[int(uid[r])].append(r)
        for u in sorted(suspects, key=uids.__getitem__):
            by_node: dict[str, list[pb.Obligation]] = {}
            for r in rows_of[u]:
                k = int(node_ix[r])
                by_node.setdefault(nodes[k], []).append(
                    views[nodes[k]].obligations[r - int(first_row[k])])
            why = _judge(by_node, period)
            if not why:
                cleared[u] = True
                continue
            versions_u = [o for node in sorted(by_node) for o in by_node[node]]
            unique = {o.SerializeToString(deterministic=True): o for o in versions_u}
            out_held.extend(unique[key] for key in sorted(unique))
            reasons[uids[u]] = why
    ok = np.flatnonzero(~suspect | cleared)
    ok = np.asarray(sorted(ok.tolist(), key=uids.__getitem__), np.int64)
    rows = first[ok]

    # parties and currencies of the agreed ones, indexed in sorted order
    a_payer, a_payee, a_cur = payer[rows], payee[rows], cur[rows]
    used = np.unique(np.concatenate([a_payer, a_payee]))
    names_ix = sorted(used.tolist(), key=parties.__getitem__)
    lut = np.full(max(len(parties), 1), -1, np.int64)
    lut[np.asarray(names_ix, np.int64)] = np.arange(len(names_ix))
    codes_all = list(cur_of)
    codes_ix = sorted(np.unique(a_cur).tolist(), key=codes_all.__getitem__)
    clut = np.full(max(len(codes_all), 1), -1, np.int64)
    clut[np.asarray(codes_ix, np.int64)] = np.arange(len(codes_ix))
    columns = Agreed(
        ids=[uids[u] for u in ok.tolist()], names=[parties[i] for i in names_ix],
        codes=[codes_all[i] for i in codes_ix], payer=lut[a_payer].astype(np.int32),
        payee=lut[a_payee].astype(np.int32), amount=amount[rows],
        currency=clut[a_cur].astype(np.int32))
    return Reconciled(columns=columns, held_out=out_held, reasons=reasons,
                      _views=[views[x] for x in nodes], _starts=first_row, _rows=rows)


def _intern(values: list[str]) -> tuple[dict[str, int], np.ndarray]:
    """``({value: code}, codes of values)``, codes in order of first appearance."""
    table = {v: i for i, v in enumerate(dict.fromkeys(values))}
    return table, np.fromiter(map(table.__getitem__, values), np.int64, len(values))



def obligations_digest(ids: Iterable[str]) -> bytes:
    """SHA-256 of the ids, sorted, each followed by ``"\\n"``."""
    ordered = sorted(ids)
    return hashlib.sha256("".join(f"{i}\n" for i in ordered).encode()).digest()


@dataclass
class Netted:
    """Step 2 of the module docstring: net positions ``[party, currency]``, the settlement
    instructions and the netting efficiency per currency."""

    positions: np.ndarray
    plan: kernels.Payments
    efficiency: np.ndarray


def net(agreed: Agreed) -> Netted:
    """Net the agreed obligations through the kernels.

    Raises:
        OutOfRange: a net position does not fit int64.
    """
    a = agreed
    positions = kernels.net_positions(a.payer, a.payee, a.amount, a.currency, len(a.names),
                                      len(a.codes))
    plan = kernels.settlement_instructions(positions)
    eff = kernels.efficiency(a.amount, a.currency, positions)
    return Netted(positions, plan, eff)


def statement(*, round_id: str, period: str, coordinator: str, participants: Iterable[str],
              rec: Reconciled, netted: Netted | None) -> pb.SettlementStatement:
    """Step 3 of the module docstring: the statement of the reconciled and netted round
    (``netted`` None when nothing is agreed).

    Raises:
        OutOfRange: the gross of a currency does not fit int64.
    """
    a = rec.columns
    stmt = pb.SettlementStatement(
        round_id=round_id, period=period, coordinator=coordinator,
        participants=sorted(participants), obligations_digest=obligations_digest(a.ids),
        obligations=len(a.ids))
    if len(a.ids) and netted is not None:
        names, codes, positions, plan = a.names, a.codes, netted.positions, netted.plan
        add = stmt.positions.add
        for c, code in enumerate(codes):
            for p in np.flatnonzero(positions[:, c]).tolist():
                add(party=names[p], currency=code, net_minor=int(positions[p, c]))
        moved = [0] * len(codes)
        add = stmt.instructions.add
        for i, (x, y, c, m) in enumerate(zip(plan.payer.tolist(), plan.payee.tolist(),
                                              plan.currency.tolist(), plan.amount.tolist(),
                                              strict=True)):
            add(id=f"{round_id}/{i}", payer=names[x], payee=names[y], amount_minor=m,
                currency=codes[c])
            moved[c] += m
        for c, code in enumerate(codes):
            mask = a.currency == c
            gross = sum(a.amount[mask].tolist())
            if gross > INT64_MAX or moved[c] > INT64_MAX:
                raise OutOfRange(f"the gross of {code} obligations does not fit int64")
            stmt.currencies.add(currency=code, gross_minor=gross, net_minor=moved[c],
                                efficiency=round(float(netted.efficiency[c]), 6),
                                obligations=int(np.count_nonzero(mask)))
    stmt.held_out.extend(rec.held_out)
    return stmt


def compute_reconciled(*, round_id: str, period: str, coordinator: str,
                       views: Mapping[str, pb.SettlementView]
                       ) -> tuple[pb.SettlementStatement, Reconciled]:
    """:func:`compute`, with the reconciliation it made."""
    rec = reconcile(views, period)
    netted = net(rec.columns) if len(rec.columns) else None
    return statement(round_id=round_id, period=period, coordinator=coordinator,
                     participants=views, rec=rec, netted=netted), rec


def compute(*, round_id: str, period: str, coordinator: str,
            views: Mapping[str, pb.SettlementView]) -> pb.SettlementStatement:
    """The statement of a round from its participants' views (``{node id: view}``; the
    participants are its keys).

    Raises:
        OutOfRange: a gross or a net position does not fit int64.
    """
    return compute_reconciled(round_id=round_id, period=period, coordinator=coordinator,
                              views=views)[0]


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
