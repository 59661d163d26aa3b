"""Reconciling the federation's books from verified holdings statements (pure, no I/O).

Given the statements ``{node id: HoldingsStatement}`` an auditor gathered (and verified),
:func:`reconcile` checks per issuer (DESIGN §3, docs/federation.md "Audit"):

* **live** ranges (ACTIVE, final, EXPORT_PENDING) are pairwise disjoint across all nodes, and
  inside each node: a serial live in two places is *conflicting*;
* **importing** ranges (PREPARED incoming transfers) count as in flight only for serials live
  nowhere (the source still has them EXPORT_PENDING, or already EXPORTED); a serial reserved
  by two imports is conflicting;
* the issuer's **custody** ranges are what it issued: every issued serial is accounted exactly
  once (*missing* otherwise), and nothing is accounted that the issuer never issued
  (*conflicting*);
* an ACTIVE or final range at node X has custody holder X (in-flight ranges are not checked:
  the custody moves while the transfer is undecided), and a range the custody records as
  reported retired is not ACTIVE anywhere;
* ``issued = active + retired + in flight``.

Every figure counts a serial once.  The check is a sweep over the sorted range boundaries
(``O(n log n)`` in the number of ranges, whatever their sizes: serials go to 2^62), never a
set of serials.  An issuer whose statement is missing cannot be checked against its custody:
that is a problem of its own, and only overlaps are checked for its serials.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

MAX_SERIAL = 2**62
#: Problems listed per issuer before "... and N more".
MAX_PROBLEMS = 20
LIVE_KINDS = ("active", "retired", "exporting")
#: Which kind a serial held in several places is counted as (each serial counts once).
_PRIORITY = {"retired": 0, "active": 1, "exporting": 2}


@dataclass
class IssuerBooks:
    """Per-issuer result (the fields of ``eap.v1.IssuerAudit``)."""

    issuer: str
    issued_wh: int = 0
    active_wh: int = 0
    retired_wh: int = 0
    in_flight_wh: int = 0
    missing_wh: int = 0
    conflicting_wh: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def closes(self) -> bool:
        return self.issued_wh == self.active_wh + self.retired_wh + self.in_flight_wh

    @property
    def ok(self) -> bool:
        return not self.problems and self.closes and not self.missing_wh \
            and not self.conflicting_wh

    def to_dict(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "issued_wh": self.issued_wh,
                "active_wh": self.active_wh, "retired_wh": self.retired_wh,
                "in_flight_wh": self.in_flight_wh, "missing_wh": self.missing_wh,
                "conflicting_wh": self.conflicting_wh, "ok": self.ok,
                "problems": list(self.problems)}


@dataclass(frozen=True)
class _Item:
    start: int
    end: int
    #: ``live`` / ``importing`` / ``custody``.
    cat: str
    #: Stating node (live, importing) or custody holder.
    node: str
    #: Live kind; for custody "retired" when the holder reported it retired.
    kind: str = ""


def reconcile(statements: Mapping[str, Any], *,
              expected: Iterable[str] = ()) -> dict[str, IssuerBooks]:
    """The books of every issuer the statements name, and of every ``expected`` node (asked
    for a statement, which may be missing), by issuer id (sorted)."""
    items: dict[str, list[_Item]] = {node_id: [] for node_id in expected}
    stated_issued: dict[str, int] = {}
    bad: dict[str, list[str]] = {}
    for node_id, stmt in statements.items():
        for h in stmt.issuers:
            lst = items.setdefault(h.issuer, [])
            for kind in LIVE_KINDS:
                for r in getattr(h, kind):
                    _take(lst, bad, h.issuer, node_id, r.start, r.end, "live", node_id, kind)
            for r in h.importing:
                _take(lst, bad, h.issuer, node_id, r.start, r.end, "importing", node_id)
            if h.issuer == node_id:  # only the issuer's own custody counts
                stated_issued[node_id] = int(h.issued_wh)
                for c in h.custody:
                    _take(lst, bad, h.issuer, node_id, c.start, c.end, "custody", c.holder,
                          "retired" if c.retired else "")
        items.setdefault(node_id, [])
    return {issuer: _books(issuer, items[issuer], issuer in statements,
                           stated_issued.get(issuer, 0), bad.get(issuer, []))
            for issuer in sorted(items)}


def _take(lst: list[_Item], bad: dict[str, list[str]], issuer: str, stating: str, start: int,
          end: int, cat: str, node: str, kind: str = "") -> None:
    if 0 <= start < end <= MAX_SERIAL:
        lst.append(_Item(int(start), int(end), cat, node, kind))
    else:
        bad.setdefault(issuer, []).append(
            f"{stating} states an invalid {kind or cat} range {start}-{end}")


def _books(issuer: str, items: list[_Item], known: bool, stated_issued: int,
           bad: list[str]) -> IssuerBooks:
    books = IssuerBooks(issuer)
    findings: list[tuple[tuple, int, int]] = []  # (problem key, start, end)
    for p, q, here in _segments(items):
        n = q - p
        live = [i for i in here if i.cat == "live"]
        imp = [i for i in here if i.cat == "importing"]
        cust = [i for i in here if i.cat == "custody"]
        if known:
            books.issued_wh += n if cust else 0
            if len(cust) > 1:
                findings.append((("custody-overlap",), p, q))
        holders = live or imp
        if live:
            first = min(live, key=lambda i: _PRIORITY[i.kind])
            if first.kind == "active":
                books.active_wh += n
            elif first.kind == "retired":
                books.retired_wh += n
            else:
                books.in_flight_wh += n
        elif imp:
            books.in_flight_wh += n
        custodian = cust[0] if cust else None
        where = tuple(sorted({(i.node, i.kind or "importing") for i in holders}))
        conflicting = len(holders) > 1
        if conflicting:
            findings.append((("twice", where, custodian.node if custodian else None), p, q))
        if known and holders and custodian is None:
            conflicting = True
            findings.append((("unissued", where), p, q))
        if conflicting:
            books.conflicting_wh += n
        if known and not holders and custodian is not None:
            books.missing_wh += n
            findings.append((("missing", custodian.node, custodian.kind), p, q))
        if known and custodian is not None and len(live) == 1 and live[0].kind != "exporting":
            x = live[0]
            if custodian.node != x.node:
                findings.append((("custody", x.node, x.kind, custodian.node), p, q))
            elif custodian.kind == "retired" and x.kind == "active":
                findings.append((("custody-retired", x.node), p, q))
    if not known:
        books.problems.append(
            f"no statement from the issuer {issuer}: its serials held elsewhere cannot be "
            "checked against its custody")
    elif stated_issued != books.issued_wh:
        books.problems.append(f"{issuer} states {stated_issued:,} Wh issued but its custody "
                              f"covers {books.issued_wh:,} Wh")
    books.problems.extend(bad)
    books.problems.extend(_describe(issuer, findings))
    if known and not books.problems and not books.closes:  # cannot happen: the sweep adds up
        books.problems.append(
            f"issued {books.issued_wh:,} Wh != active {books.active_wh:,} + retired "
            f"{books.retired_wh:,} + in flight {books.in_flight_wh:,}")
    if len(books.problems) > MAX_PROBLEMS:
        more = len(books.problems) - MAX_PROBLEMS
        books.problems[MAX_PROBLEMS:] = [f"... and {more} more"]
    return books


def _segments(items: list[_Item]) -> Iterable[tuple[int, int, list[_Item]]]:
    """``(p, q, items covering [p, q))`` for every elementary segment covered by something,
    in order (a sweep over the sorted boundaries)."""
    if not items:
        return
    by_start = sorted(items, key=lambda i: i.start)
    by_end = sorted(items, key=lambda i: i.end)
    points = sorted({i.start for i in items} | {i.end for i in items})
    open_: dict[int, _Item] = {}
    s = e = 0
    for p, q in pairwise(points):
        while e < len(by_end) and by_end[e].end <= p:
            open_.pop(id(by_end[e]), None)
            e += 1
        while s < len(by_start) and by_start[s].start <= p:
            open_[id(by_start[s])] = by_start[s]
            s += 1
        if open_:
            yield p, q, list(open_.values())


def _span(issuer: str, p: int, q: int) -> str:
    return f"{issuer}/{p}-{q} ({q - p:,} Wh)"


def _describe(issuer: str, findings: list[tuple[tuple, int, int]]) -> list[str]:
    """One line per finding, adjacent segments of the same finding merged, by start."""
    merged: list[tuple[int, int, tuple]] = []
    last: dict[tuple, int] = {}  # key -> index in merged of its latest range
    for key, p, q in findings:
        at = last.get(key)
        if at is not None and merged[at][1] == p:
            merged[at] = (merged[at][0], q, key)
        else:
            last[key] = len(merged)
            merged.append((p, q, key))
    out = []
    for p, q, key in sorted(merged, key=lambda m: (m[0], m[1])):
        span = _span(issuer, p, q)
        what = key[0]
        if what == "twice":
            places = " and ".join(f"{n} ({k})" for n, k in key[1])
            cust = f"; the issuer's custody says {key[2]}" if key[2] else ""
            out.append(f"{span} is accounted in two places: {places}{cust}")
        elif what == "unissued":
            places = " and ".join(f"{n} ({k})" for n, k in key[1])
            out.append(f"{span} is held at {places} but {issuer} never issued it")
        elif what == "missing":
            ret = ", reported retired" if key[2] == "retired" else ""
            out.append(f"{span} is missing: the issuer's custody says {key[1]}{ret}, "
                       "and nobody accounts for it")
        elif what == "custody":
            out.append(f"{span} is {key[2]} at {key[1]} but the issuer's custody says "
                       f"{key[3]} holds it")
        elif what == "custody-retired":
            out.append(f"{span} is active at {key[1]} but was reported retired to the issuer")
        else:
            out.append(f"{span}: the issuer's custody overlaps itself")
    return out
