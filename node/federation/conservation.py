"""Federation-wide conservation check: every issued Wh serial is in exactly one place.

Given the stores of all nodes of a federation, :func:`check` gathers the serial ranges each
node accounts for (ACTIVE, EXPORT_PENDING, RETIRED, EXPIRED, WITHDRAWN — not SPLIT parents,
not EXPORTED copies, not PREPARED imports) and verifies, per issuer, that they never overlap
(nothing duplicated) and that they add up to what the issuer issued (nothing lost).  Used by
the transfer fault tests and available to the demo.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from eap.node.records.enums import Status
from eap.node.store import Store
from eap.node.store import transfer_repos as tr


@dataclass
class Holding:
    node: str
    bundle_id: str
    start: int
    end: int
    status: int


@dataclass
class ConservationReport:
    """Result of :func:`check`; ``ok`` when nothing is duplicated, lost or unknown."""

    issued: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    #: ``(issuer, first holding, overlapping holding)`` pairs.
    duplicated: list[tuple[str, Holding, Holding]] = field(default_factory=list)
    #: Holdings of serials their issuer never issued (or of an issuer not in the check).
    unknown: list[tuple[str, Holding]] = field(default_factory=list)
    #: Wh held per node and status name.
    per_node: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def lost(self) -> dict[str, int]:
        return {i: w - self.held.get(i, 0) for i, w in self.issued.items()
                if w != self.held.get(i, 0)}

    @property
    def ok(self) -> bool:
        return not self.duplicated and not self.unknown and not self.lost

    def describe(self) -> str:
        if self.ok:
            return f"conserved: {sum(self.issued.values()):,} Wh in {len(self.issued)} issuer(s)"
        parts = []
        for issuer, a, b in self.duplicated[:5]:
            parts.append(f"{issuer}: {a.bundle_id}@{a.node} overlaps {b.bundle_id}@{b.node}")
        for issuer, h in self.unknown[:5]:
            parts.append(f"{issuer}: {h.bundle_id}@{h.node} was never issued")
        for issuer, diff in self.lost.items():
            parts.append(f"{issuer}: issued {self.issued[issuer]:,} Wh, held "
                         f"{self.held.get(issuer, 0):,} ({diff:+,} missing)")
        return "NOT conserved: " + "; ".join(parts)


def check(stores: Mapping[str, Store]) -> ConservationReport:
    """Check conservation over the nodes ``{node id: store}`` of a federation."""
    report = ConservationReport()
    issued: dict[str, list[tuple[int, int]]] = {}
    holdings: dict[str, list[Holding]] = {}
    for node_id, store in stores.items():
        with store.read() as conn:
            issued[node_id] = [(int(r[0]), int(r[1])) for r in tr.issued_ranges(conn, node_id)]
            rows = tr.held_ranges(conn)
        per = report.per_node.setdefault(node_id, {})
        for issuer, start, end, status, bid in rows:
            h = Holding(node_id, bid, int(start), int(end), int(status))
            holdings.setdefault(issuer, []).append(h)
            name = Status(int(status)).name.lower()
            per[name] = per.get(name, 0) + h.end - h.start
    for issuer, ranges in issued.items():
        report.issued[issuer] = sum(e - s for s, e in ranges)
    for issuer, items in holdings.items():
        items.sort(key=lambda h: (h.start, h.end))
        report.held[issuer] = sum(h.end - h.start for h in items)
        reach: Holding | None = None  # the holding reaching furthest so far
        for cur in items:
            if reach is not None and cur.start < reach.end:
                report.duplicated.append((issuer, reach, cur))
            if reach is None or cur.end > reach.end:
                reach = cur
        spans = issued.get(issuer)
        for h in items:
            if spans is None or not any(s <= h.start and h.end <= e for s, e in spans):
                report.unknown.append((issuer, h))
    return report
