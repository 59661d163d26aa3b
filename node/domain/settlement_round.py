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
import itertools
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eap.node import kernels
from eap.node.errors import OutOfRange, invalid
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


#: Longest string a view may carry (ids, parties, codes, periods): longer is refused.
MAX_STRING = 200
#: Most rows of one view (``ObligationColumns.count``).
MAX_ROWS = 2**31 - 1


@dataclass
class ViewRows:
    """One view's obligations as columns, however they came on the wire: ``ids`` in the
    view's order, dictionaries of strings and int64 index arrays into them."""

    ids: list[str]
    parties: list[str]
    payer: np.ndarray
    payee: np.ndarray
    amount: np.ndarray
    currencies: list[str]
    currency: np.ndarray
    periods: list[str]
    period: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def obligation(self, i: int) -> pb.Obligation:
        return pb.Obligation(id=self.ids[i], payer=self.parties[self.payer[i]],
                             payee=self.parties[self.payee[i]],
                             amount_minor=int(self.amount[i]),
                             currency=self.currencies[self.currency[i]],
                             period=self.periods[self.period[i]])


def _refuse(field_name: str, why: str) -> Exception:
    return invalid(f"columns.{field_name}", why, message=f"view columns: {field_name} {why}")


def _column(data: bytes, dtype: str, n: int, name: str) -> np.ndarray:
    width = np.dtype(dtype).itemsize
    if len(data) != n * width:
        raise _refuse(name, f"must hold {n} {np.dtype(dtype).name} values ({n * width} bytes), "
                            f"has {len(data)} bytes")
    return np.frombuffer(data, dtype).astype(np.int64)


def _dictionary(values: Any, most: int, name: str) -> list[str]:
    out = list(values)
    if len(out) > most:
        raise _refuse(name, f"has {len(out)} entries, more than its {most} possible")
    if out and max(map(len, out)) > MAX_STRING:
        raise _refuse(name, f"has an entry longer than {MAX_STRING} characters")
    return out


def _indexes(data: bytes, n: int, size: int, name: str) -> np.ndarray:
    ix = _column(data, "<i4", n, name)
    if n and (int(ix.min()) < 0 or int(ix.max()) >= size):
        raise _refuse(name, f"has an index outside its dictionary of {size}")
    return ix


def rows_of_columns(c: pb.ObligationColumns) -> ViewRows:
    """The obligations of a view sent as ``columns``, checked (untrusted input).

    Raises:
        InvalidArgument: a column whose length is not ``count``, an index outside its
            dictionary, an amount not positive, ids not sorted and unique, a string longer
            than :data:`MAX_STRING`.
    """
    n = int(c.count)
    if n > MAX_ROWS:
        raise _refuse("count", f"must be at most {MAX_ROWS}")
    ids = list(c.ids)
    if len(ids) != n:
        raise _refuse("ids", f"must hold count = {n} ids, holds {len(ids)}")
    if n and max(map(len, ids)) > MAX_STRING:
        raise _refuse("ids", f"has an id longer than {MAX_STRING} characters")
    if not all(map(operator.lt, ids, itertools.islice(ids, 1, None))):
        raise _refuse("ids", "must be sorted and unique")
    parties = _dictionary(c.parties, 2 * n, "parties")
    currencies = _dictionary(c.currencies, n, "currencies")
    periods = _dictionary(c.periods, n, "periods")
    amount = _column(c.amount_minor, "<i8", n, "amount_minor")
    if n and int(amount.min()) <= 0:
        raise _refuse("amount_minor", "must be > 0")
    return ViewRows(ids=ids, parties=parties,
                    payer=_indexes(c.payer, n, len(parties), "payer"),
                    payee=_indexes(c.payee, n, len(parties), "payee"), amount=amount,
                    currencies=currencies,
                    currency=_indexes(c.currency, n, len(currencies), "currency"),
                    periods=periods, period=_indexes(c.period, n, len(periods), "period"))


def rows_of_messages(obligations: Iterable[pb.Obligation]) -> ViewRows:
    """The obligations of a view sent as messages, read once into columns (as they are:
    malformed ones are held out by :func:`reconcile`, not refused)."""
    rows = [(o.id, o.payer, o.payee, o.amount_minor, o.currency, o.period) for o in obligations]
    if not rows:
        e = np.zeros(0, np.int64)
        return ViewRows([], [], e, e, e, [], e, [], e)
    ids, payers, payees, amounts, currencies, periods = (list(x) for x in zip(*rows,
                                                                              strict=True))
    n = len(ids)
    party_of, both = _intern(payers + payees)
    cur_of, cur = _intern(currencies)
    per_of, per = _intern(periods)
    return ViewRows(ids=ids, parties=list(party_of), payer=both[:n], payee=both[n:],
                    amount=np.fromiter(amounts, np.int64, n), currencies=list(cur_of),
                    currency=cur, periods=list(per_of), period=per)


def view_rows(view: pb.SettlementView) -> ViewRows:
    """A view's obligations as columns, from either form.

    Raises:
        InvalidArgument: both forms set, or malformed columns (:func:`rows_of_columns`).
    """
    if view.HasField("columns"):
        if len(view.obligations):
            raise invalid("columns", "a view carries obligations or columns, not both",
                          message="view carries both obligations and columns")
        return rows_of_columns(view.columns)
    return rows_of_messages(view.obligations)


def view_size(view: pb.SettlementView) -> int:
    """How many obligations a view states (either form)."""
    return int(view.columns.count) if view.HasField("columns") else len(view.obligations)


def build_columns(ids: list[str], payers: list[str], payees: list[str], amounts: np.ndarray,
                  currencies: list[str], periods: list[str]) -> pb.ObligationColumns:
    """``ObligationColumns`` of obligations given column-wise, rows sorted by id (the caller
    guarantees the ids unique).  Dictionaries are in first-seen order of the sorted rows."""
    n = len(ids)
    amount = np.asarray(amounts, np.int64)
    if any(map(operator.gt, ids, itertools.islice(ids, 1, None))):
        order = sorted(range(n), key=ids.__getitem__)
        ids = [ids[i] for i in order]
        ix = np.asarray(order, np.int64)
        pick = operator.itemgetter(*order) if n > 1 else (lambda v: tuple(v))
        payers, payees = list(pick(payers)), list(pick(payees))
        currencies, periods = list(pick(currencies)), list(pick(periods))
        amount = amount[ix]
    party_of, both = _intern(list(payers) + list(payees))
    cur_of, cur = _intern(list(currencies))
    per_of, per = _intern(list(periods))
    return pb.ObligationColumns(
        count=n, ids=ids, parties=list(party_of), payer=both[:n].astype("<i4").tobytes(),
        payee=both[n:].astype("<i4").tobytes(), amount_minor=amount.astype("<i8").tobytes(),
        currencies=list(cur_of), currency=cur.astype("<i4").tobytes(), periods=list(per_of),
        period=per.astype("<i4").tobytes())


@dataclass
class Reconciled:
    """Agreed obligations (as columns) and held-out ones, with the reason of each."""

    columns: Agreed
    held_out: list[pb.Obligation] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    #: ``{node id: bool[len(columns)]}``: which agreed ids each view stated.
    stated: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    period: str = ""

    @property
    def agreed(self) -> dict[str, pb.Obligation]:
        """``{id: obligation}`` of the agreed ones (one message each: for small rounds)."""
        a = self.columns
        return {oid: pb.Obligation(id=oid, payer=a.names[x], payee=a.names[y],
                                   amount_minor=m, currency=a.codes[c], period=self.period)
                for oid, x, y, m, c in zip(a.ids, a.payer.tolist(), a.payee.tolist(),
                                           a.amount.tolist(), a.currency.tolist(),
                                           strict=True)}

    def parties_of(self, node_id: str) -> list[str]:
        """The agreed ids whose payer or payee is an account of ``node_id``, sorted."""
        return [self.columns.ids[i] for i in np.flatnonzero(self._ours(node_id)).tolist()]

    def _ours(self, node_id: str) -> np.ndarray:
        a = self.columns
        ours = np.fromiter((node_of(p) == node_id for p in a.names), bool, len(a.names))
        return ours[a.payer] | ours[a.payee] if len(a.names) else np.zeros(0, bool)

    def unstated_by(self, node_id: str) -> list[str]:
        """Agreed ids of ``node_id``'s accounts that its own view did not state (none when
        the rules hold: reconciliation agrees an obligation only as its nodes stated it)."""
        said = self.stated.get(node_id, np.zeros(len(self.columns), bool))
        return [self.columns.ids[i]
                for i in np.flatnonzero(self._ours(node_id) & ~said).tolist()]


def reconcile(views: Mapping[str, pb.SettlementView], period: str) -> Reconciled:
    """Step 1 of the module docstring over ``{node id: its view}``.

    Columnar: each view is read once into columns (:func:`view_rows`; a view sent as
    ``columns`` without a Python object per obligation); the rules are checked over arrays
    (each string predicate once per distinct value), and only ids some rule may hold out go
    through :func:`_judge` one by one, which decides them exactly.

    Raises:
        InvalidArgument: a view is malformed (:func:`view_rows`).
    """
    nodes = sorted(views)
    per_view = [view_rows(views[x]) for x in nodes]
    ids: list[str] = []
    starts: list[int] = []
    party_of: dict[str, int] = {}
    cur_of: dict[str, int] = {}
    per_of: dict[str, int] = {}
    pay_parts, rec_parts, amt_parts, cur_parts, per_parts = [], [], [], [], []

    def remap(table: dict[str, int], names: list[str]) -> np.ndarray:
        return np.fromiter((table.setdefault(x, len(table)) for x in names), np.int64,
                           len(names))

    for rows in per_view:
        starts.append(len(ids))
        ids += rows.ids
        lut = remap(party_of, rows.parties)
        pay_parts.append(lut[rows.payer] if len(rows) else rows.payer)
        rec_parts.append(lut[rows.payee] if len(rows) else rows.payee)
        amt_parts.append(rows.amount)
        cut = remap(cur_of, rows.currencies)
        cur_parts.append(cut[rows.currency] if len(rows) else rows.currency)
        put = remap(per_of, rows.periods)
        per_parts.append(put[rows.period] if len(rows) else rows.period)
    n = len(ids)
    empty = np.zeros(0, np.int64)
    payer = np.concatenate(pay_parts) if n else empty
    payee = np.concatenate(rec_parts) if n else empty
    amount = np.concatenate(amt_parts) if n else empty
    cur = np.concatenate(cur_parts) if n else empty
    per = np.concatenate(per_parts) if n else empty
    first_row = np.asarray(starts, np.int64)
    node_ix = np.repeat(np.arange(len(nodes), dtype=np.int64),
                        np.diff(np.append(first_row, n)))
    # ids coded in sorted order (each view is sorted when sent as columns: a cheap merge)
    uids = list(dict.fromkeys(sorted(ids)))
    code = {x: k for k, x in enumerate(uids)}
    uid = np.fromiter(map(code.__getitem__, ids), np.int64, n)
    del code
    n_ids = len(uids)
    parties = list(party_of)
    cur_names = list(cur_of)
    per_names = list(per_of)

    # per distinct value: the string rules and the node of each party
    party_nodes = [node_of(p) for p in parties]
    node_code = {x: k for k, x in enumerate(sorted(set(party_nodes)))}
    pnode = np.fromiter((node_code[x] for x in party_nodes), np.int64, len(parties))
    view_code = np.fromiter((node_code.get(x, -1) for x in nodes), np.int64, len(nodes))
    bad_party = np.fromiter((not x for x in party_nodes), bool, len(parties))
    bad_id = np.fromiter((not i or len(i) > 200 for i in uids), bool, n_ids)
    bad_cur = np.fromiter((not CURRENCY_RE.match(c) for c in cur_names), bool, len(cur_names))
    bad_per = np.fromiter((p != period for p in per_names), bool, len(per_names))

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
    per_node = np.bincount(uid * len(nodes) + node_ix,
                           minlength=n_ids * len(nodes)).reshape(n_ids, len(nodes))
    suspect |= (per_node > 1).any(axis=1)
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
        for u in suspects:  # codes are in id order
            by_node: dict[str, list[pb.Obligation]] = {}
            for r in rows_of[u]:
                k = int(node_ix[r])
                by_node.setdefault(nodes[k], []).append(
                    per_view[k].obligation(r - int(first_row[k])))
            why = _judge(by_node, period)
            if not why:
                cleared[u] = True
                continue
            versions_u = [o for node in sorted(by_node) for o in by_node[node]]
            unique = {o.SerializeToString(deterministic=True): o for o in versions_u}
            out_held.extend(unique[key] for key in sorted(unique))
            reasons[uids[u]] = why
    ok = np.flatnonzero(~suspect | cleared)  # in id order
    rows = first[ok]

    # parties and currencies of the agreed ones, indexed in sorted order
    a_payer, a_payee, a_cur = payer[rows], payee[rows], cur[rows]
    used = np.unique(np.concatenate([a_payer, a_payee]))
    names_ix = sorted(used.tolist(), key=parties.__getitem__)
    lut = np.full(max(len(parties), 1), -1, np.int64)
    lut[np.asarray(names_ix, np.int64)] = np.arange(len(names_ix))
    codes_ix = sorted(np.unique(a_cur).tolist(), key=cur_names.__getitem__)
    clut = np.full(max(len(cur_names), 1), -1, np.int64)
    clut[np.asarray(codes_ix, np.int64)] = np.arange(len(codes_ix))
    columns = Agreed(
        ids=[uids[u] for u in ok.tolist()], names=[parties[i] for i in names_ix],
        codes=[cur_names[i] for i in codes_ix], payer=lut[a_payer].astype(np.int32),
        payee=lut[a_payee].astype(np.int32), amount=amount[rows],
        currency=clut[a_cur].astype(np.int32))
    stated = {x: per_node[ok, k] > 0 for k, x in enumerate(nodes)} if n_ids else \
        {x: np.zeros(0, bool) for x in nodes}
    return Reconciled(columns=columns, held_out=out_held, reasons=reasons, stated=stated,
                      period=period)


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
