"""Reader for Green Button (NAESB ESPI) Atom feeds.

A feed is a flat list of Atom ``entry`` elements, each carrying one ESPI resource in its
``content``; resources are tied together by the entries' ``link`` hrefs.  Two styles occur
and both are followed:

* containerized (greenbuttondata.org samples): the parent's ``rel="related"`` href names a
  collection (``.../UsagePoint/1/MeterReading``) and the child's ``rel="up"`` href is that
  collection;
* direct (utility batch feeds): the parent's ``rel="related"`` href is the child's
  ``rel="self"`` href.

When neither matches, a child whose ``self`` href lies under the parent's ``self`` href
(``.../UsagePoint/1/MeterReading/01``) belongs to it.  A MeterReading's ReadingType is the
ReadingType entry whose ``self`` href is one of the MeterReading's ``related`` hrefs.

Mapping rules (see ``docs/meter-data.md``):

* UsagePoint ``ServiceCategory/kind`` must be 0 (electricity); other services (1 = gas, ...)
  are skipped and reported; a feed with no electricity usage point is rejected.
* ReadingType ``uom`` must be 72 (Wh); ``commodity`` absent or 0/1/2 (electricity);
  ``accumulationBehaviour`` absent or 4 (delta data: energy per interval);
  ``flowDirection`` 19 (reverse, received from the customer) is production, 1 (forward,
  delivered to the customer) or absent is consumption, anything else is skipped.
* Wh = ``value`` x 10^``powerOfTenMultiplier`` (absent = 0, accepted range -12..12).  With a
  negative multiplier a fraction of a Wh is rounded down, so no more Wh are ever read than
  were metered, and the dropped fractions are reported.
* An IntervalReading longer than one hour is skipped and reported (daily or monthly bins);
  the hourly and shorter readings of the same block are kept.
* The meter id is the UsagePoint's ``self`` href (its entry ``id`` when it has none).
"""

from __future__ import annotations

import contextlib
import os
import re
import xml.etree.ElementTree as ET
from array import array
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eap.node.errors import FieldViolation, InvalidArgument
from eap.node.meters.base import (
    MAX_INTERVAL_S,
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    Columns,
    MeterReadings,
    ReadingKind,
    ReadNote,
    ReadOptions,
    ViolationLog,
    check_readable,
    dedupe_and_check,
)

ATOM_NS = "http://www.w3.org/2005/Atom"
ESPI_NS = "http://naesb.org/espi"
_A = f"{{{ATOM_NS}}}"
_E = f"{{{ESPI_NS}}}"

#: ESPI ServiceKind values, for messages.
SERVICE_KINDS = {
    0: "electricity",
    1: "gas",
    2: "water",
    3: "time",
    4: "heat",
    5: "refuse",
    6: "sewerage",
    7: "rates",
    8: "tvLicence",
    9: "internet",
}
UOM_WH = 72
FLOW_FORWARD = 1  # delivered to the customer: consumption
FLOW_REVERSE = 19  # received from the customer: production
ACCUMULATION_DELTA = 4
ELECTRICITY_COMMODITIES = frozenset({0, 1, 2})
MULTIPLIER_RANGE = range(-12, 13)

_PROLOG_MAX = 1 << 20  # bytes searched for a DOCTYPE before the root element
_SNIFF_BYTES = 65536
# The first start tag: "<" then a name start character (not "<?", "<!--" or "<!DOCTYPE").
_FIRST_TAG = re.compile(rb"<[^?!/\s]")
_INT = re.compile(r"\s*[+-]?\d+\s*", re.ASCII)
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _has_doctype(head: bytes) -> bool:
    """Whether a DOCTYPE declaration precedes the root element in ``head``."""
    first = _FIRST_TAG.search(head)
    return b"<!DOCTYPE" in (head if first is None else head[: first.start()])


def sniff_feed(head: bytes) -> bool:
    """Whether ``head`` (the start of a document) is a Green Button / ESPI Atom feed.

    The root element must be ``{Atom}feed`` (any prefix, or none) and an element of the ESPI
    namespace must occur, or the ESPI namespace be declared, within ``head``.  Parse errors
    after the root element (a truncated or damaged feed) do not change the answer.
    """
    parser = ET.XMLPullParser(events=("start", "start-ns"))
    root: str | None = None
    espi = False
    with contextlib.suppress(ET.ParseError):
        parser.feed(head)
    try:
        for event, item in parser.read_events():
            if event == "start-ns":
                espi = espi or item[1] == ESPI_NS
                continue
            if root is None:
                root = item.tag
                if root != f"{_A}feed":
                    return False
            elif item.tag.startswith(_E):
                espi = True
            if espi:
                break
    except ET.ParseError:
        pass
    return root == f"{_A}feed" and espi


@dataclass
class _Entry:
    no: int
    self_href: str | None
    up_href: str | None
    related: list[str]
    entry_id: str | None

    @property
    def where(self) -> str:
        return f"entry[{self.no}]"


@dataclass
class _UsagePoint:
    entry: _Entry
    service_kind: int | None

    @property
    def meter_id(self) -> str:
        return self.entry.self_href or self.entry.entry_id or self.entry.where


@dataclass
class _ReadingType:
    entry: _Entry
    uom: int | None
    power: int | None
    flow: int | None
    commodity: int | None
    accumulation: int | None


@dataclass
class _Block:
    entry: _Entry
    index: int  # position among the IntervalBlocks of its entry
    first: int  # ordinal of its first reading in the whole feed
    start: array
    duration: array
    value: array

    @property
    def where(self) -> str:
        return f"{self.entry.where}.IntervalBlock[{self.index}]"


@dataclass
class _MeterReading:
    entry: _Entry
    blocks: list[_Block] = field(default_factory=list)

    def readings(self) -> int:
        return sum(len(b.start) for b in self.blocks)


class _Feed:
    def __init__(self) -> None:
        self.usage_points: list[_UsagePoint] = []
        self.meter_readings: list[_MeterReading] = []
        self.reading_types: list[_ReadingType] = []
        self.blocks: list[_Block] = []
        self.readings = 0


def _href(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip().rstrip("/")
    return text or None


def _int_field(parent: ET.Element, path: str, where: str, log: ViolationLog) -> int | None:
    text = parent.findtext(path)
    if text is None:
        return None
    if _INT.fullmatch(text) is None:
        log.add(f"{where}.{path.replace(_E, '')}", f"{text.strip()!r} is not an integer")
        return None
    value = int(text)
    if not _INT64_MIN <= value <= _INT64_MAX:
        log.add(f"{where}.{path.replace(_E, '')}", f"{value} is out of range")
        return None
    return value


class GreenButtonSource:
    """:class:`~eap.node.meters.base.MeterSource` for Green Button / ESPI Atom XML feeds."""

    name = "greenbutton"

    def __repr__(self) -> str:
        return "GreenButtonSource()"

    def sniff(self, path: Path) -> bool:
        """True for an Atom ``feed`` root element whose first 64 KB use the ESPI namespace.

        Decided by a namespace-aware parse, not by text: ``<feed xmlns="...Atom">`` and
        ``<atom:feed xmlns:atom="...Atom">`` are the same element.  A file that breaks off or
        turns malformed after that point still says yes, so that ``read`` can tell what is wrong.
        """
        try:
            with open(path, "rb") as f:
                head = f.read(_SNIFF_BYTES)
        except OSError:
            return False
        return sniff_feed(head)

    def read(
        self, path: str | os.PathLike[str], *, options: ReadOptions | None = None
    ) -> MeterReadings:
        p = check_readable(path)
        opts = options or ReadOptions()
        log = ViolationLog(opts.max_violations)
        message = f"invalid Green Button feed {p.name}"
        feed = self._parse(p, log)
        log.raise_if_any(message)
        return self._assemble(p, feed, opts, log, message)

    # -- pass 1: stream the entries ----------------------------------------------------------

    def _parse(self, path: Path, log: ViolationLog) -> _Feed:
        feed = _Feed()
        entry_no = 0
        with open(path, "rb") as f:
            head = f.read(_PROLOG_MAX)
            if _has_doctype(head):
                log.add("feed", "DOCTYPE declarations are not accepted in a Green Button feed")
                return feed
            f.seek(0)
            try:
                events = ET.iterparse(f, events=("start", "end"))
                _, root = next(events)
                if root.tag != f"{_A}feed":
                    log.add("feed", f"root element is {root.tag!r}, not an Atom feed")
                    return feed
                for event, elem in events:
                    if event != "end" or elem.tag != f"{_A}entry":
                        continue
                    self._entry(elem, entry_no, feed, log)
                    entry_no += 1
                    elem.clear()
                    if log.full:
                        break
            except ET.ParseError as exc:
                line, column = exc.position
                log.add(f"line {line}.column {column}", f"malformed XML ({exc.msg})")
        return feed

    def _entry(self, elem: ET.Element, no: int, feed: _Feed, log: ViolationLog) -> None:
        self_href = up_href = None
        related: list[str] = []
        for link in elem.iterfind(f"{_A}link"):
            rel, href = link.get("rel"), _href(link.get("href"))
            if href is None:
                continue
            if rel == "self":
                self_href = href
            elif rel == "up":
                up_href = href
            elif rel == "related":
                related.append(href)
        entry = _Entry(
            no, self_href, up_href, related, (elem.findtext(f"{_A}id") or "").strip() or None
        )
        content = elem.find(f"{_A}content")
        if content is None:
            return
        block_index = 0
        for res in content:
            tag = res.tag
            if tag == f"{_E}UsagePoint":
                kind = _int_field(
                    res, f"{_E}ServiceCategory/{_E}kind", f"{entry.where}.UsagePoint", log
                )
                feed.usage_points.append(_UsagePoint(entry, kind))
            elif tag == f"{_E}MeterReading":
                feed.meter_readings.append(_MeterReading(entry))
            elif tag == f"{_E}ReadingType":
                where = f"{entry.where}.ReadingType"
                feed.reading_types.append(
                    _ReadingType(
                        entry,
                        uom=_int_field(res, f"{_E}uom", where, log),
                        power=_int_field(res, f"{_E}powerOfTenMultiplier", where, log),
                        flow=_int_field(res, f"{_E}flowDirection", where, log),
                        commodity=_int_field(res, f"{_E}commodity", where, log),
                        accumulation=_int_field(res, f"{_E}accumulationBehaviour", where, log),
                    )
                )
            elif tag == f"{_E}IntervalBlock":
                feed.blocks.append(self._block(res, entry, block_index, feed, log))
                block_index += 1

    @staticmethod
    def _block(
        res: ET.Element, entry: _Entry, index: int, feed: _Feed, log: ViolationLog
    ) -> _Block:
        block = _Block(entry, index, feed.readings, array("q"), array("q"), array("q"))
        match = _INT.fullmatch
        for i, reading in enumerate(res.iterfind(f"{_E}IntervalReading")):
            where = f"{block.where}.IntervalReading[{i}]"
            period = reading.find(f"{_E}timePeriod")
            if period is None:
                log.add(f"{where}.timePeriod", "missing")
                continue
            texts = (
                period.findtext(f"{_E}start"),
                period.findtext(f"{_E}duration"),
                reading.findtext(f"{_E}value"),
            )
            names = ("timePeriod.start", "timePeriod.duration", "value")
            nums = []
            for text, name in zip(texts, names, strict=True):
                if text is None:
                    log.add(f"{where}.{name}", "missing")
                elif match(text) is None:
                    log.add(f"{where}.{name}", f"{text.strip()!r} is not an integer")
                elif not _INT64_MIN <= (v := int(text)) <= _INT64_MAX:
                    log.add(f"{where}.{name}", f"{v} is out of range")
                else:
                    nums.append(v)
            if len(nums) == 3:
                block.start.append(nums[0])
                block.duration.append(nums[1])
                block.value.append(nums[2])
            if log.full:
                break
        feed.readings += len(block.start)
        return block

    # -- pass 2: link, map, validate ---------------------------------------------------------

    def _assemble(
        self, path: Path, feed: _Feed, opts: ReadOptions, log: ViolationLog, message: str
    ) -> MeterReadings:
        if not feed.usage_points:
            raise InvalidArgument(message, [FieldViolation("feed", "no UsagePoint entry")])
        notes: list[ReadNote] = []
        up_of = _linker(feed.usage_points, log, "UsagePoint")
        mr_of = _linker(feed.meter_readings, log, "MeterReading")
        rt_by_self = {rt.entry.self_href: rt for rt in feed.reading_types if rt.entry.self_href}

        for block in feed.blocks:
            mr = mr_of(block.entry)
            if mr is None:
                notes.append(
                    ReadNote(
                        block.where,
                        "IntervalBlock not linked to any MeterReading",
                        len(block.start),
                    )
                )
            else:
                mr.blocks.append(block)

        # Usage points of other services (gas, water...) are reported once each, with the
        # readings under them; their MeterReadings are never mapped.
        non_electric: list[FieldViolation] = []
        up_for = {id(mr): up_of(mr.entry) for mr in feed.meter_readings}
        under: dict[int, int] = {}
        for mr in feed.meter_readings:
            up = up_for[id(mr)]
            if up is not None:
                under[id(up)] = under.get(id(up), 0) + mr.readings()
        for up in feed.usage_points:
            if up.service_kind != 0:
                if up.service_kind is None:
                    what = "no ServiceCategory kind: cannot confirm electricity"
                else:
                    service = SERVICE_KINDS.get(up.service_kind, "unknown service")
                    what = f"ServiceCategory kind {up.service_kind} ({service}) is not electricity"
                non_electric.append(
                    FieldViolation(f"{up.entry.where}.UsagePoint.ServiceCategory.kind", what)
                )
                notes.append(
                    ReadNote(
                        f"{up.entry.where}.UsagePoint",
                        f"usage point {up.meter_id} skipped: {what}",
                        under.get(id(up), 0),
                    )
                )

        # Map every MeterReading to (usage point, kind, multiplier) or to a skip reason.
        accepted: list[tuple[_UsagePoint, _MeterReading, ReadingKind, int]] = []
        for mr in feed.meter_readings:
            where = f"{mr.entry.where}.MeterReading"
            up = up_for[id(mr)]
            if up is None:
                notes.append(
                    ReadNote(where, "MeterReading not linked to any UsagePoint", mr.readings())
                )
                continue
            if up.service_kind != 0:
                continue  # reported with its usage point
            types = [rt_by_self[h] for h in mr.entry.related if h in rt_by_self]
            if len(types) > 1:
                log.add(
                    where,
                    "linked to several ReadingTypes: " + ", ".join(t.entry.where for t in types),
                )
                continue
            if not types:
                notes.append(ReadNote(where, "no ReadingType linked", mr.readings()))
                continue
            kind_or_reason = _map_reading_type(types[0])
            if not isinstance(kind_or_reason, ReadingKind):
                notes.append(
                    ReadNote(where, f"{types[0].entry.where}: {kind_or_reason}", mr.readings())
                )
                continue
            accepted.append((up, mr, kind_or_reason, types[0].power or 0))
        log.raise_if_any(message)

        if not accepted and non_electric and len(non_electric) == len(feed.usage_points):
            raise InvalidArgument(
                f"{path.name} has no electricity usage point: its usage points are gas or other "
                "services, and electricity readings are never taken from them",
                non_electric,
            )

        kinds = {kind for _, _, kind, _ in accepted}
        if opts.kind is not None:
            kind = opts.kind
        elif len(kinds) > 1:
            raise InvalidArgument(
                f"{path.name} holds both production and consumption readings",
                [FieldViolation("kind", "choose one with ReadOptions(kind=...)")],
            )
        else:
            kind = next(iter(kinds), ReadingKind.CONSUMPTION)
        for _, mr, k, _ in accepted:
            if k is not kind:
                notes.append(
                    ReadNote(
                        f"{mr.entry.where}.MeterReading",
                        f"{k.value} readings (reading {kind.value})",
                        mr.readings(),
                    )
                )
        accepted = [a for a in accepted if a[2] is kind]

        meters: dict[str, int] = {}
        parts: list[Columns] = []
        for up, mr, _, power in accepted:
            meter = meters.setdefault(up.meter_id, len(meters))
            for block in mr.blocks:
                cols = _block_columns(block, meter, power, log, notes)
                if cols is not None:
                    parts.append(cols)
                if log.full:
                    break
        log.raise_if_any(message)

        if parts:
            cols = Columns(
                *(
                    np.concatenate([getattr(c, f) for c in parts])
                    for f in ("meter", "start", "end", "wh", "ref")
                )
            )
        else:
            z = np.zeros(0, dtype=np.int64)
            cols = Columns(z, z, z, z, z)

        starts = [b.first for b in feed.blocks]

        def locate(ref: int, column: str | None) -> str:
            block = feed.blocks[bisect_right(starts, ref) - 1]
            row = f"{block.where}.IntervalReading[{ref - block.first}]"
            if column is None:
                return row
            return f"{row}." + ("value" if column == "wh" else "timePeriod")

        cols, dropped = dedupe_and_check(cols, log, locate)
        log.raise_if_any(message)
        if dropped:
            notes.append(ReadNote(path.name, "exact duplicate IntervalReadings kept once", dropped))
        if cols.meter.size == 0 and notes:
            raise InvalidArgument(
                f"no usable {kind.value} readings in {path.name}",
                [
                    *non_electric,
                    *(FieldViolation(s.where, f"{s.reason} ({s.count})") for s in notes),
                ],
            )
        used, inverse = np.unique(cols.meter, return_inverse=True)
        ids = list(meters)
        return MeterReadings(
            tuple(ids[i] for i in used.tolist()),
            inverse.astype(np.int32),
            cols.start,
            cols.end,
            cols.wh,
            kind,
            f"{self.name}:{path}",
            tuple(notes),
        )


def _map_reading_type(rt: _ReadingType) -> ReadingKind | str:
    """The reading kind of an acceptable ReadingType, else why it is not acceptable."""
    if rt.uom != UOM_WH:
        return f"uom {rt.uom} is not Wh ({UOM_WH})" if rt.uom is not None else "no uom"
    if rt.commodity is not None and rt.commodity not in ELECTRICITY_COMMODITIES:
        return f"commodity {rt.commodity} is not electricity"
    if rt.accumulation is not None and rt.accumulation != ACCUMULATION_DELTA:
        return (
            f"accumulationBehaviour {rt.accumulation} is not delta data "
            f"({ACCUMULATION_DELTA}): values are not energy per interval"
        )
    if rt.power is not None and rt.power not in MULTIPLIER_RANGE:
        return f"powerOfTenMultiplier {rt.power} outside -12..12"
    if rt.flow == FLOW_REVERSE:
        return ReadingKind.PRODUCTION
    if rt.flow in (None, FLOW_FORWARD):
        return ReadingKind.CONSUMPTION
    return f"flowDirection {rt.flow} is neither forward (1) nor reverse (19)"


def _linker(parents, log: ViolationLog, what: str):
    """A function mapping a child entry to its parent among ``parents`` (or None)."""
    by_related: dict[str, list] = {}
    for parent in parents:
        for href in parent.entry.related:
            by_related.setdefault(href, []).append(parent)
    by_self = sorted(
        ((p.entry.self_href, p) for p in parents if p.entry.self_href),
        key=lambda sp: -len(sp[0]),
    )

    def owner(child: _Entry):
        for href in (child.self_href, child.up_href):
            found = by_related.get(href) if href else None
            if found:
                if len({id(p) for p in found}) > 1:
                    log.add(
                        child.where,
                        f"linked from several {what} entries: "
                        + ", ".join(p.entry.where for p in found),
                    )
                return found[0]
        if child.self_href:
            for self_href, parent in by_self:
                if child.self_href.startswith(self_href + "/"):
                    return parent
        return None

    return owner


def _block_columns(
    block: _Block, meter: int, power: int, log: ViolationLog, notes: list[ReadNote]
) -> Columns | None:
    start = np.frombuffer(block.start, dtype=np.int64)
    duration = np.frombuffer(block.duration, dtype=np.int64)
    value = np.frombuffer(block.value, dtype=np.int64)
    n = start.size
    if n == 0:
        return None

    def report(mask: np.ndarray, name: str, why) -> None:
        for i in np.flatnonzero(mask).tolist():
            if log.full:
                return
            log.add(f"{block.where}.IntervalReading[{i}].{name}", why(i))

    report(duration <= 0, "timePeriod.duration", lambda i: f"{int(duration[i])} s: must be > 0")
    report(
        (start < MIN_TIMESTAMP) | (start >= MAX_TIMESTAMP - MAX_INTERVAL_S),
        "timePeriod.start",
        lambda i: f"{int(start[i])} is outside 1970-01-01 .. 2200-01-01",
    )
    report(value < 0, "value", lambda i: f"{int(value[i])}: metered energy cannot be negative")
    long = duration > MAX_INTERVAL_S
    if long.any():
        lengths = ", ".join(f"{d} s" for d in np.unique(duration[long]).tolist())
        notes.append(
            ReadNote(block.where, f"IntervalReadings longer than 1 h ({lengths})", int(long.sum()))
        )
    keep = ~long
    if power >= 0:
        factor = 10**power
        over = keep & (value > _INT64_MAX // factor)
        report(over, "value", lambda i: f"{int(value[i])} x 10^{power} Wh is out of range")
        wh = value * factor if not over.any() else value
    else:
        divisor = 10**-power
        wh = value // divisor
        rest = keep & (value % divisor != 0)
        if rest.any():
            dropped = int((value[rest] % divisor).sum())
            notes.append(
                ReadNote(
                    block.where,
                    f"fractions of a Wh rounded down ({dropped} x 10^{power} Wh in total)",
                    int(rest.sum()),
                )
            )
    if log.items:
        return None
    idx = np.flatnonzero(keep)
    return Columns(
        np.full(idx.size, meter, dtype=np.int64),
        start[idx],
        start[idx] + duration[idx],
        wh[idx],
        block.first + idx.astype(np.int64),
    )
