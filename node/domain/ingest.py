"""Meter import: readings from a file (or a pull) into the store, streamed in chunks.

A file is read chunk by chunk (a source with ``read_chunks``, like the CSV reader, in constant
memory; any other source whole, then cut into chunks).  Each chunk is checked with the rules
of :func:`check_readings` (NumPy, no row loop), compared with what is stored for the same
devices and time range by one range query (identical readings are skipped as unchanged, a
changed or overlapping one is refused naming its meter and time), and bulk-inserted.  All
chunks go into one transaction: a bad chunk anywhere leaves nothing of the file stored.

Readings repeated inside one file are kept once; when the repeats fall into different chunks
the later copy counts as ``unchanged`` (it equals the stored one), and a repeat with other Wh
is refused as a conflict with the stored reading.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from sqlalchemy import Connection

from eap.node.domain import idempotency, plugin_calls
from eap.node.domain.rules import (
    MAX_CAPACITY_W,
    MAX_INTERVAL_S,
    MAX_READING_WH,
    Checker,
    interval_violation,
)
from eap.node.errors import FieldViolation, NotFound, invalid
from eap.node.meters import MeterReadings, reader_for
from eap.node.records.models import ImportResult, Principal
from eap.node.store import repos

if TYPE_CHECKING:
    from eap.node.domain.node import Node

T = TypeVar("T")
#: Multiplier keying (device rank, start) in one int64: starts are < 2**33 (year 2200).
_SHIFT = np.int64(1 << 34)
#: "No stored reading" for a device's latest start.
_NEVER = -(1 << 40)
#: Readings stored per chunk when a source returns a whole file.
CHUNK_ROWS = 200_000
#: Bytes of file per chunk assumed for progress when a source does not say.
CHUNK_BYTES = 12 << 20
#: Called with (bytes of the file read, file size) as chunks are stored.
Progress = Callable[[int, int], None]


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def import_file(
    node: Node,
    path: Path,
    *,
    request_id: str,
    fmt: str = "",
    principal: Principal | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """Import production readings from a meter-data file (CSV or Green Button)."""
    principal = principal or Principal.operator()
    node._operator_only(principal, "import meter data")
    path = Path(path)
    if not path.is_file():
        raise invalid("file", f"{path} is not a readable file")
    source = reader_for(path, node.meter_sources(fmt))
    payload = {"sha256": file_digest(path), "format": source.name}
    size = path.stat().st_size

    def chunks() -> Iterator[tuple[MeterReadings, int]]:
        read_chunks = getattr(source, "read_chunks", None)
        if read_chunks is None:
            whole = source.read(path, options=None)
            yield from ((part, size) for part in _slices(whole))
            return
        done = 0
        step = getattr(source, "chunk_bytes", CHUNK_BYTES)
        for part in read_chunks(path, options=None):
            done += step
            yield part, min(done, size)

    def op(conn: Connection) -> ImportResult:
        store = Storer(node, conn)
        if progress:
            progress(0, size)
        for part, done in read_ahead(chunks()):
            _validate_with_plugins(node, part, source.name)
            store.add(part)
            if progress:
                progress(done, size)
        if progress:
            progress(size, size)
        if store.unknown and not (store.readings or store.unchanged):
            _refuse_unknown(sorted(store.unknown))  # rolls the import back: nothing stored
        return store.result()

    return idempotency.run(
        node.store,
        request_id=request_id,
        operation="import_readings",
        principal=principal,
        payload=payload,
        result_type=ImportResult,
        fn=op,
    )


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """``items``, each next one produced by a helper thread while the caller works on the one
    before: a file's next chunk is parsed while this one is stored (the parser is Python, the
    store mostly waits on the database).  At most one item is ahead; an error of the producer
    is raised here, in order."""
    end = object()
    with ThreadPoolExecutor(1, thread_name_prefix="eap-read-ahead") as reader:
        ahead = reader.submit(next, items, end)
        while (item := ahead.result()) is not end:
            ahead = reader.submit(next, items, end)
            yield item


def import_readings(
    node: Node,
    readings: MeterReadings,
    *,
    request_id: str,
    payload: dict,
    principal: Principal | None = None,
) -> ImportResult:
    """Import readings already in memory (a meter puller's), with the same checks."""
    principal = principal or Principal.operator()
    node._operator_only(principal, "import meter data")
    digest = hashlib.sha256()
    for column in (readings.meter, readings.interval_start, readings.interval_end, readings.wh):
        digest.update(column.tobytes())
    digest.update("\n".join(readings.meters).encode())

    def op(conn: Connection) -> ImportResult:
        store = Storer(node, conn)
        for part in _slices(readings):
            store.add(part)
        return store.result()

    return idempotency.run(
        node.store,
        request_id=request_id,
        operation="import_readings",
        principal=principal,
        payload={**payload, "sha256": digest.hexdigest(), "format": readings.source},
        result_type=ImportResult,
        fn=op,
    )


def _refuse_unknown(unknown: list[str]) -> None:
    """A file none of whose meters has a registered device is an error naming them (for Green
    Button, the UsagePoint URLs), not an empty import."""
    shown = ", ".join(unknown[:10]) + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else "")
    raise NotFound(
        f"none of the file's meters has a registered device: {shown}",
        [FieldViolation("file", f"no registered device for meter {m}") for m in unknown[:50]],
    )


def _slices(rd: MeterReadings) -> Iterator[MeterReadings]:
    if len(rd) <= CHUNK_ROWS:
        yield rd
        return
    for i in range(0, len(rd), CHUNK_ROWS):
        yield rd[i : i + CHUNK_ROWS]  # type: ignore[misc]


def _validate_with_plugins(node: Node, readings: MeterReadings, source: str) -> None:
    plugin_calls.violations(
        node.plugins,
        "eap_validate_readings",
        {"readings": readings, "source": source, "config": dict(node.config.extra)},
        plugin_calls.timeout_of(node),
        "meter readings refused by a validation policy",
    )


class Storer:
    """Stores the chunks of one import inside one transaction and sums up what it did.

    Devices are small integer codes for the whole import: each meter id is looked up once (one
    narrow query for the meters a chunk brings that were not seen before), and a chunk's rows
    are mapped to devices, capacities and device id order by array indexing.  No step of a
    chunk does Python work per reading, and the work per distinct meter is a dictionary
    lookup, so many meters per chunk cost about what few do."""

    def __init__(self, node: Node, conn: Connection) -> None:
        self.node = node
        self.conn = conn
        self.meter_codes: dict[str, int] = {}  # meter id -> device code, -1 if unknown
        self._names = np.zeros(0, dtype=object)  # code -> device id
        self._caps = np.zeros(0, dtype=np.int64)  # code -> capacity_w
        self._by_name = np.zeros(0, dtype=np.int64)  # codes in device id order
        self._rank = np.zeros(0, dtype=np.int64)  # code -> position in device id order
        # code -> start of the device's last stored reading (before the import or by it), so
        # that a chunk asks only for devices with stored readings that can reach it
        self._latest = np.zeros(0, dtype=np.int64)
        self.readings = 0
        self.wh = 0
        self.unchanged = 0
        self.unknown: set[str] = set()

    def result(self) -> ImportResult:
        return ImportResult(
            readings=self.readings,
            wh=self.wh,
            unchanged=self.unchanged,
            unknown_meters=sorted(self.unknown),
        )

    def _codes_of(self, meters: tuple[str, ...]) -> np.ndarray:
        """Device code of each meter id (-1: no registered device), asking for unseen ones."""
        lookup = self.meter_codes
        table = np.fromiter(map(lookup.get, meters, repeat(-2)), np.int64, len(meters))
        unseen = np.flatnonzero(table == -2)
        if unseen.size == 0:
            return table
        missing = [meters[i] for i in unseen.tolist()]
        rows = repos.device_keys_by_meter(self.conn, missing)
        # meter_id and device id are both unique: every device found here is new
        base, k = len(self._names), len(rows)
        lookup.update(dict.fromkeys(missing, -1))
        lookup.update(zip(map(itemgetter(0), rows), range(base, base + k), strict=True))
        if k:
            ids = np.empty(k, dtype=object)
            ids[:] = list(map(itemgetter(1), rows))
            self._names = np.concatenate([self._names, ids])
            caps = np.fromiter(map(itemgetter(2), rows), np.int64, k)
            self._caps = np.concatenate([self._caps, caps])
            latest = (_NEVER if x is None else x for x in map(itemgetter(3), rows))
            self._latest = np.append(self._latest, np.fromiter(latest, np.int64, k))
            self._by_name = np.argsort(self._names.astype(str), kind="stable")
            self._rank = np.empty(len(self._names), dtype=np.int64)
            self._rank[self._by_name] = np.arange(len(self._names), dtype=np.int64)
        table[unseen] = np.fromiter(map(lookup.__getitem__, missing), np.int64, len(missing))
        return table

    def add(self, rd: MeterReadings) -> None:
        if rd.kind != "production":
            raise invalid(
                "file",
                f"readings are {rd.kind}; records are only issued from "
                "production or storage discharge",
            )
        if len(rd) == 0:
            return
        table = self._codes_of(rd.meters)
        unknown = np.flatnonzero(table < 0)
        if unknown.size:
            self.unknown.update(rd.meters[i] for i in unknown.tolist())
        codes = table[rd.meter]
        meter_idx, start, end, wh = rd.meter, rd.interval_start, rd.interval_end, rd.wh
        if unknown.size:
            keep = codes >= 0
            codes, meter_idx = codes[keep], meter_idx[keep]
            start, end, wh = start[keep], end[keep], wh[keep]
        if len(start) == 0:
            return
        check_readings(rd, meter_idx, start, end, wh, self._caps[codes])
        rank = self._rank[codes]  # (rank, start): device id order, the order of the index
        new = self._compare(rd, meter_idx, rank, start, end, wh)
        n = int(new.sum())
        if n:
            if n < len(new):
                rank, start, end, wh = rank[new], start[new], end[new], wh[new]
            order = np.lexsort((start, rank))  # index-friendly order
            repos.insert_readings(
                self.conn,
                {
                    "device_id": self._names[self._by_name[rank[order]]],
                    "interval_start": start[order],
                    "interval_end": end[order],
                    "wh": wh[order],
                    "issued_wh": np.zeros(n, dtype=np.int64),
                },
            )
            np.maximum.at(self._latest, self._by_name[rank], start)
            self.wh += int(wh.sum())
        self.readings += n
        self.unchanged += len(new) - n

    def _stored(self, rank: np.ndarray, start: np.ndarray, lo: int, hi: int):
        """Stored readings of the chunk's devices meeting ``[lo, hi)`` as columns (rank of
        the device, start, end, Wh) sorted by (rank, start)."""
        # A device whose last stored reading starts MAX_INTERVAL_S or more before its first
        # reading in the chunk has nothing stored that this chunk could repeat or overlap:
        # leave it out of the question.  (A file that comes hour by hour then asks about no
        # device at all; before, every device of a chunk that began mid-hour was asked.)
        first = np.full(len(self._rank), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, rank, start)
        latest = np.full(len(self._rank), np.iinfo(np.int64).max, dtype=np.int64)
        latest[self._rank] = self._latest  # by rank, as ``first``
        ranks = np.flatnonzero(latest > first - MAX_INTERVAL_S)  # in device id order
        if ranks.size == 0:
            return None
        rows = repos.readings_in_range(
            self.conn, self._names[self._by_name[ranks]].tolist(), lo, hi
        )
        m = len(rows)
        if m == 0:
            return None
        s_rank = ranks[np.fromiter(map(itemgetter(0), rows), np.int64, m)]
        s_start = np.fromiter(map(itemgetter(1), rows), np.int64, m)
        s_end = np.fromiter(map(itemgetter(2), rows), np.int64, m)
        s_wh = np.fromiter(map(itemgetter(3), rows), np.int64, m)
        key = s_rank * _SHIFT + s_start
        if (key[1:] <= key[:-1]).any():  # rows usually come in this order, but need not
            order = np.argsort(key, kind="stable")
            key, s_rank, s_start, s_end, s_wh = (
                key[order],
                s_rank[order],
                s_start[order],
                s_end[order],
                s_wh[order],
            )
        return key, s_rank, s_start, s_end, s_wh

    def _compare(self, rd, meter_idx, rank, start, end, wh) -> np.ndarray:
        """Mask of readings not stored yet; refuses changed or overlapping ones.

        One query fetches the stored readings of the chunk's devices meeting its time range;
        both sides are keyed (device rank, start) and matched with a sorted search."""
        new = np.ones(len(start), dtype=bool)
        stored = self._stored(rank, start, int(start.min()), int(end.max()))
        if stored is None:
            return new
        s_key, s_rank, s_start_a, s_end_a, s_wh_a = stored
        m = len(s_key)
        key = rank * _SHIFT + start
        pos = np.searchsorted(s_key, key)
        at = np.minimum(pos, m - 1)
        same_start = s_key[at] == key
        identical = same_start & (s_end_a[at] == end) & (s_wh_a[at] == wh)
        new[identical] = False
        # a stored reading of the same device overlapping without the same start: the one
        # before (starts earlier, ends after our start) or the next (starts before our end)
        before = pos - 1
        prev_ok = before >= 0
        b = np.maximum(before, 0)
        overlap_prev = prev_ok & (s_rank[b] == rank) & (s_end_a[b] > start)
        nxt = np.where(same_start, pos + 1, pos)
        nxt_ok = nxt < m
        c = np.minimum(nxt, m - 1)
        overlap_next = nxt_ok & (s_rank[c] == rank) & (s_start_a[c] < end)
        changed = same_start & ~identical
        bad = changed | overlap_prev | overlap_next
        if not bad.any():
            return new
        check = Checker("meter readings conflict with stored readings")
        for k in np.flatnonzero(bad)[:50]:
            name = f"readings[{rd.meters[meter_idx[k]]}@{int(start[k])}]"
            when = f"at {_iso(int(start[k]))}: "
            if changed[k]:
                p = at[k]
                check.fail(
                    name,
                    f"{when}stored reading has {int(s_wh_a[p])} Wh over "
                    f"{int(s_end_a[p] - s_start_a[p])} s, file has {int(wh[k])} Wh "
                    f"over {int(end[k] - start[k])} s",
                )
            else:
                check.fail(name, f"{when}overlaps a stored reading of another interval")
        check.done()
        return new


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_readings(rd, meter_idx, start, end, wh, capacity) -> None:
    """Interval, sign and capacity rules over a chunk at once (NumPy, no row loop)."""
    duration = end - start
    safe = np.where(duration > 0, duration, 1)
    bad_interval = (duration <= 0) | (duration > 3600) | (3600 % safe != 0) | (start % safe != 0)
    bad_wh = (wh < 0) | (wh > MAX_READING_WH)
    # Wh * 3600 > cap * dur <=> Wh > floor(cap * dur / 3600): no int64 overflow on huge Wh
    cap_dur = np.minimum(capacity, MAX_CAPACITY_W) * np.clip(duration, 0, MAX_INTERVAL_S)
    over = ~bad_wh & (wh > cap_dur // MAX_INTERVAL_S)
    order = np.lexsort((start, meter_idx))
    same = meter_idx[order][1:] == meter_idx[order][:-1]
    overlap = np.zeros(len(start), dtype=bool)
    overlap[order[1:][same & (start[order][1:] < end[order][:-1])]] = True
    if not (bad_interval.any() or bad_wh.any() or over.any() or overlap.any()):
        return
    check = Checker("invalid meter readings")
    for mask, why in (
        (bad_interval, "interval"),
        (bad_wh, "wh"),
        (over, "wh"),
        (overlap, "interval"),
    ):
        for i in np.flatnonzero(mask)[:20]:
            name = f"readings[{rd.meters[meter_idx[i]]}@{int(start[i])}].{why}"
            if mask is bad_interval:
                text = interval_violation(int(start[i]), int(end[i])) or "invalid interval"
            elif mask is bad_wh:
                text = f"{int(wh[i])} Wh is outside 0..{MAX_READING_WH} Wh"
            elif mask is over:
                text = (
                    f"{int(wh[i])} Wh exceeds capacity {int(capacity[i])} W x {int(duration[i])} s"
                )
            else:
                text = "overlaps another reading of the same meter"
            check.fail(name, text)
    check.done()
