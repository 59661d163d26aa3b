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
from pathlib import Path
from typing import TYPE_CHECKING

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
        for part, done in chunks():
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
    """Stores the chunks of one import inside one transaction and sums up what it did."""

    def __init__(self, node: Node, conn: Connection) -> None:
        self.node = node
        self.conn = conn
        self.devices: dict[str, object | None] = {}  # meter id -> Device or None (unknown)
        self.codes: dict[str, int] = {}  # device id -> small int for set comparisons
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

    def add(self, rd: MeterReadings) -> None:
        if rd.kind != "production":
            raise invalid(
                "file",
                f"readings are {rd.kind}; records are only issued from "
                "production or storage discharge",
            )
        if len(rd) == 0:
            return
        missing = [m for m in rd.meters if m not in self.devices]
        if missing:
            found = repos.devices_by_meter(self.conn, missing)
            for m in missing:
                self.devices[m] = found.get(m)
        devs = [self.devices[m] for m in rd.meters]
        self.unknown.update(m for m, d in zip(rd.meters, devs, strict=True) if d is None)
        known = np.array([d is not None for d in devs], dtype=bool)
        keep = known[rd.meter]
        meter_idx = rd.meter[keep]
        start, end, wh = rd.interval_start[keep], rd.interval_end[keep], rd.wh[keep]
        if len(start) == 0:
            return
        dev_table = np.array([d.id if d is not None else "" for d in devs], dtype=object)
        cap_table = np.array([d.capacity_w if d is not None else 0 for d in devs], dtype=np.int64)
        capacity = cap_table[meter_idx]
        check_readings(rd, meter_idx, start, end, wh, capacity)
        code_table = np.array(
            [self.codes.setdefault(d.id, len(self.codes)) if d is not None else -1 for d in devs],
            dtype=np.int64,
        )
        codes = code_table[meter_idx]
        new = self._compare(rd, meter_idx, codes, start, end, wh)
        n = int(new.sum())
        if n:
            dev_ids = dev_table[meter_idx][new]
            order = np.lexsort((start[new], dev_ids.astype(str)))  # index-friendly order
            repos.insert_readings(
                self.conn,
                {
                    "device_id": dev_ids[order],
                    "interval_start": start[new][order],
                    "interval_end": end[new][order],
                    "wh": wh[new][order],
                    "issued_wh": np.zeros(n, dtype=np.int64),
                },
            )
        self.readings += n
        self.wh += int(wh[new].sum())
        self.unchanged += len(start) - n

    def _compare(self, rd, meter_idx, codes, start, end, wh) -> np.ndarray:
        """Mask of readings not stored yet; refuses changed or overlapping ones.

        One query fetches the stored readings of the chunk's devices meeting its time range;
        both sides are keyed (device code, start) and matched with a sorted search."""
        present = set(np.unique(codes).tolist())
        device_ids = sorted(d for d, c in self.codes.items() if c in present)
        stored = repos.readings_in_range(self.conn, device_ids, int(start.min()), int(end.max()))
        new = np.ones(len(start), dtype=bool)
        if not stored:
            return new
        m = len(stored)
        s_dev, s_start, s_end, s_wh = zip(*stored, strict=True)
        s_code = np.fromiter(map(self.codes.__getitem__, s_dev), np.int64, m)
        s_start_a = np.fromiter(s_start, np.int64, m)
        s_end_a = np.fromiter(s_end, np.int64, m)
        s_wh_a = np.fromiter(s_wh, np.int64, m)
        shift = np.int64(1 << 34)  # starts are < 2**33 (year 2200), codes well below 2**29
        s_key = s_code * shift + s_start_a
        order = np.argsort(s_key, kind="stable")
        s_key, s_start_a, s_end_a, s_wh_a, s_code = (
            s_key[order],
            s_start_a[order],
            s_end_a[order],
            s_wh_a[order],
            s_code[order],
        )
        key = codes * shift + start
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
        overlap_prev = prev_ok & (s_code[b] == codes) & (s_end_a[b] > start)
        nxt = np.where(same_start, pos + 1, pos)
        nxt_ok = nxt < m
        c = np.minimum(nxt, m - 1)
        overlap_next = nxt_ok & (s_code[c] == codes) & (s_start_a[c] < end)
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
