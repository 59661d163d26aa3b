"""Reader for hourly meter CSV files in the layout of the public granular-certificate registry.

Layout (one header line, then one row per device and interval)::

    interval_start_datetime,interval_end_datetime,device_id,interval_usage,gross_net_indicator
    2024-01-01 00:00:00,2024-01-01 01:00:00,1,93,NET

* Timestamps are ISO 8601 (``T`` or a space between date and time, seconds optional); without
  an offset they are UTC, with one (``Z``, ``+02:00``) they are converted to UTC.  Whole
  seconds only.
* ``interval_usage`` is a whole, non-negative number of Wh (digits only: no sign, decimal
  point, exponent or thousands separator).
* ``gross_net_indicator`` is ``NET`` or ``GROSS`` (any case).  NET rows are always used.
  GROSS rows follow :class:`GrossPolicy`: ``ignore`` (default) validates and then leaves
  them out, reporting how many; ``fallback`` uses a GROSS row only for a (device, interval)
  without a NET row; ``reject`` makes any GROSS row a violation.  Gross production includes
  the plant's own consumption, so using it where net is known would overstate what can be
  issued.
* Rows repeated exactly (same device, interval and Wh) are kept once; the same device and
  interval with different Wh, or overlapping intervals of one device, are violations.

The file is streamed: the ``csv`` module's row lists are the only per-row Python objects and
each is dropped after its row is parsed into compact ``array`` buffers.
"""

from __future__ import annotations

import csv
import enum
import os
import re
from array import array
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import repeat
from pathlib import Path

import numpy as np

from eap.node.errors import FieldViolation, InvalidArgument
from eap.node.meters.base import (
    MAX_INTERVAL_S,
    MAX_METER_ID_LEN,
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

#: The columns of the layout, in their usual order (any order is accepted).
CSV_COLUMNS = (
    "interval_start_datetime",
    "interval_end_datetime",
    "device_id",
    "interval_usage",
    "gross_net_indicator",
)

_INT64_MAX = (1 << 63) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_TS = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?P<frac>\.\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?",
    re.ASCII,
)
_CACHE_MAX = 1 << 16
#: Bytes of CSV parsed at a time (about 200,000 rows of the registry layout).
CHUNK_BYTES = 12 << 20
_FIELDS = ("meter", "start", "end", "wh", "ref")


class GrossPolicy(enum.StrEnum):
    """What the CSV reader does with ``GROSS`` rows (NET rows are always used)."""

    IGNORE = "ignore"
    FALLBACK = "fallback"
    REJECT = "reject"


def parse_timestamp(text: str) -> int:
    """Unix seconds (UTC) of an ISO 8601 timestamp; naive means UTC.  Raises ``ValueError``."""
    t = text.strip()
    m = _TS.fullmatch(t)
    if m is None:
        raise ValueError("not an ISO 8601 date and time (YYYY-MM-DD HH:MM[:SS][offset])")
    frac = m.group("frac")
    if frac is not None:
        if frac.strip(".0"):
            raise ValueError("sub-second timestamps are not supported")
        t = t[: m.start("frac")] + t[m.end("frac") :]
    try:
        dt = datetime.fromisoformat(t)
    except ValueError as exc:
        raise ValueError(f"invalid date or time ({exc})") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ts = (dt - _EPOCH) // _SECOND
    if not MIN_TIMESTAMP <= ts < MAX_TIMESTAMP:
        raise ValueError("outside the accepted range 1970-01-01 .. 2200-01-01")
    return ts


class CsvMeterSource:
    """:class:`~eap.node.meters.base.MeterSource` for the hourly measurement CSV layout."""

    name = "csv-hourly"
    #: Bytes of CSV per chunk of :meth:`read_chunks`.
    chunk_bytes = CHUNK_BYTES

    def __init__(self, gross_policy: GrossPolicy | str = GrossPolicy.IGNORE) -> None:
        try:
            self.gross_policy = GrossPolicy(str(gross_policy).lower())
        except ValueError:
            allowed = ", ".join(p.value for p in GrossPolicy)
            raise InvalidArgument(
                "invalid CSV reader option",
                [FieldViolation("gross_policy", f"{gross_policy!r}; one of: {allowed}")],
            ) from None

    def __repr__(self) -> str:
        return f"CsvMeterSource(gross_policy={self.gross_policy.value!r})"

    def sniff(self, path: Path) -> bool:
        """True when the first line names at least three of the layout's columns."""
        try:
            with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
                first = f.readline(4096)
        except OSError:
            return False
        names = {c.strip().strip('"').lower() for c in first.split(",")}
        return len(names & set(CSV_COLUMNS)) >= 3

    def read(
        self, path: str | os.PathLike[str], *, options: ReadOptions | None = None
    ) -> MeterReadings:
        p = check_readable(path)
        opts = options or ReadOptions()
        log = ViolationLog(opts.max_violations)
        parts: list[tuple[Columns, np.ndarray]] = []
        ids = self._scan(p, log, parts.append, CHUNK_BYTES)
        log.raise_if_any(f"invalid meter CSV {p.name}")
        empty = np.zeros(0, dtype=np.int64)
        cols = Columns(
            *(np.concatenate([empty] + [getattr(c, k) for c, _ in parts]) for k in _FIELDS)
        )
        gross = np.concatenate([np.zeros(0, dtype=bool)] + [g for _, g in parts])
        readings, notes = self._finish(p, opts, log, ids, cols, gross)
        if len(readings) == 0 and notes:
            raise InvalidArgument(
                f"no usable readings in meter CSV {p.name}",
                [FieldViolation(s.where, f"{s.reason} ({s.count})") for s in notes],
            )
        return readings

    def read_chunks(
        self,
        path: str | os.PathLike[str],
        *,
        options: ReadOptions | None = None,
        chunk_bytes: int = 0,
    ) -> Iterator[MeterReadings]:
        """The file as a stream of :class:`MeterReadings` of about ``chunk_bytes`` of CSV each,
        in constant memory.  Each chunk is checked like a whole file (sorted, duplicates kept
        once, conflicts and overlaps reported); across chunks the importer compares with what
        it stored before.  Bad input raises at the chunk that holds it, so a caller that must
        not keep part of a bad file stores the chunks in one transaction.  Under the
        ``fallback`` gross policy, which needs every row of the file to decide, the whole file
        is one chunk."""
        p = check_readable(path)
        opts = options or ReadOptions()
        if self.gross_policy is GrossPolicy.FALLBACK:
            yield self.read(p, options=opts)
            return
        log = ViolationLog(opts.max_violations)
        ids: dict[str, int] = {}
        gen = self._scan_iter(p, log, chunk_bytes or self.chunk_bytes, ids)
        rows = 0
        notes: list[ReadNote] = []
        for cols, gross in gen:
            log.raise_if_any(f"invalid meter CSV {p.name}")
            readings, chunk_notes = self._finish(p, opts, log, list(ids), cols, gross)
            rows += len(readings)
            notes += chunk_notes
            if len(readings):
                yield readings
        log.raise_if_any(f"invalid meter CSV {p.name}")
        if rows == 0 and notes:
            raise InvalidArgument(
                f"no usable readings in meter CSV {p.name}",
                [FieldViolation(s.where, f"{s.reason} ({s.count})") for s in notes],
            )

    def _finish(
        self,
        p: Path,
        opts: ReadOptions,
        log: ViolationLog,
        ids: list[str],
        cols: Columns,
        gross: np.ndarray,
    ) -> tuple[MeterReadings, list[ReadNote]]:
        """GROSS policy, sorting and duplicate/conflict/overlap checks over parsed rows."""
        kind = opts.kind or ReadingKind.PRODUCTION
        source = f"{self.name}:{p}"
        notes: list[ReadNote] = []
        if gross.any():
            if self.gross_policy is GrossPolicy.IGNORE:
                notes.append(
                    ReadNote(
                        p.name, "GROSS rows are not used (gross policy 'ignore')", int(gross.sum())
                    )
                )
                cols = cols.take(np.flatnonzero(~gross))
            else:  # FALLBACK (REJECT already reported every GROSS row as a violation)
                superseded = _gross_superseded(cols, gross)
                if superseded.any():
                    notes.append(
                        ReadNote(
                            p.name,
                            "GROSS rows superseded by a NET row for the same device and interval",
                            int(superseded.sum()),
                        )
                    )
                    cols = cols.take(np.flatnonzero(~superseded))

        def locate(line: int, column: str | None) -> str:
            if column is None:
                return f"line {line}"
            return f"line {line}." + (
                "interval_usage" if column == "wh" else "interval_start_datetime"
            )

        cols, dropped = dedupe_and_check(cols, log, locate)
        log.raise_if_any(f"invalid meter CSV {p.name}")
        if dropped:
            notes.append(ReadNote(p.name, "exact duplicate rows kept once", dropped))
        # Keep only the meters that have readings, in order of first appearance.
        used, inverse = np.unique(cols.meter, return_inverse=True)
        readings = MeterReadings(
            tuple(ids[i] for i in used.tolist()),
            inverse.astype(np.int32),
            cols.start,
            cols.end,
            cols.wh,
            kind,
            source,
            tuple(notes),
        )
        return readings, notes

    def _scan(self, p: Path, log: ViolationLog, sink, chunk_bytes: int) -> list[str]:
        ids: dict[str, int] = {}
        for part in self._scan_iter(p, log, chunk_bytes, ids):
            sink(part)
        return list(ids)

    def _scan_iter(
        self, p: Path, log: ViolationLog, chunk_bytes: int, ids: dict[str, int]
    ) -> Iterator[tuple[Columns, np.ndarray]]:
        """Parse ``p`` in chunks of whole lines; stops (yielding nothing more) at violations,
        which are in ``log``.  ``ids`` collects the meter dictionary."""
        try:
            with open(p, "rb") as f:
                head = f.readline()
                try:
                    header_text = head.decode("utf-8-sig")
                except UnicodeDecodeError as exc:
                    raise _not_utf8(p, exc) from None
                parser = self._header(header_text, log, ids)
                if parser is None:
                    return
                line, rest, eof = 2, b"", False
                while rest or not eof:
                    data = b"" if eof else f.read(chunk_bytes)
                    eof = eof or not data
                    buf = rest + data if rest else data
                    cut = len(buf) if eof else buf.rfind(b"\n") + 1
                    # a quoted field may hold newlines: cut only where the quotes balance
                    if not eof and (cut == 0 or buf.count(b'"', 0, cut) % 2):
                        rest = buf
                        continue
                    chunk, rest = buf[:cut], buf[cut:]
                    if not chunk:
                        break
                    try:
                        text = chunk.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise _not_utf8(p, exc) from None
                    part = parser.fast(chunk, text, line)
                    if part is None:
                        part = parser.slow(text, line)
                    if part is None or log.items:
                        return
                    yield part
                    line += text.count("\n")
        except _NotUtf8 as exc:
            log.items.clear()
            raise exc.error from None

    def _header(self, text: str, log: ViolationLog, ids: dict[str, int]) -> _Parser | None:
        try:
            header = next(csv.reader([text.rstrip("\r\n")], strict=True), None) if text else None
        except csv.Error as exc:
            log.add("line 1", f"unreadable header ({exc})")
            return None
        if header is None:
            log.add("line 1", f"empty file; expected the header {','.join(CSV_COLUMNS)}")
            return None
        names = [h.strip().lower() for h in header]
        missing = [c for c in CSV_COLUMNS if c not in names]
        unknown = [h for h in names if h not in CSV_COLUMNS]
        repeated = sorted({h for h in names if names.count(h) > 1})
        if missing or unknown or repeated:
            parts = []
            if missing:
                parts.append(f"missing column(s) {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown column(s) {', '.join(repr(u) for u in unknown)}")
            if repeated:
                parts.append(f"repeated column(s) {', '.join(repeated)}")
            log.add(
                "line 1", "bad header: " + "; ".join(parts) + f" (expected {','.join(CSV_COLUMNS)})"
            )
            return None
        return _Parser(self, log, ids, [names.index(c) for c in CSV_COLUMNS])

    @staticmethod
    def _row(row, n, i_start, i_end, i_dev, i_wh, i_gn, reject_gross, stamp, log, ids):
        """Parse one row; report its violations and return None if it has any."""
        before = len(log.items)
        s = stamp(row[i_start], n, "interval_start_datetime")
        e = stamp(row[i_end], n, "interval_end_datetime")
        if s is not None and e is not None:
            if e <= s:
                log.add(f"line {n}.interval_end_datetime", "must be after interval_start_datetime")
            elif e - s > MAX_INTERVAL_S:
                log.add(
                    f"line {n}.interval_end_datetime", f"interval of {e - s} s is longer than 1 h"
                )
        device = row[i_dev].strip()
        if not device:
            log.add(f"line {n}.device_id", "empty")
        elif len(device) > MAX_METER_ID_LEN or not device.isprintable():
            log.add(
                f"line {n}.device_id",
                f"must be printable and at most {MAX_METER_ID_LEN} characters",
            )
        text = row[i_wh].strip()
        w = -1
        if text.isascii() and text.isdigit():
            w = int(text)
            if w > _INT64_MAX:
                log.add(f"line {n}.interval_usage", f"{text} Wh is out of range")
        elif text[:1] == "-" and text[1:].isascii() and text[1:].isdigit():
            log.add(f"line {n}.interval_usage", f"{text} Wh is negative")
        else:
            log.add(f"line {n}.interval_usage", f"{text!r} is not a whole number of Wh")
        indicator = row[i_gn].strip().upper()
        if indicator not in ("NET", "GROSS"):
            log.add(f"line {n}.gross_net_indicator", f"{row[i_gn]!r}: must be NET or GROSS")
        elif indicator == "GROSS" and reject_gross:
            log.add(
                f"line {n}.gross_net_indicator", "GROSS rows are rejected (gross policy 'reject')"
            )
        if len(log.items) != before or log.full:
            return None
        return ids.setdefault(device, len(ids)), s, e, w, indicator == "GROSS"


class _NotUtf8(Exception):
    def __init__(self, error: InvalidArgument) -> None:
        self.error = error


def _not_utf8(p: Path, exc: UnicodeDecodeError) -> _NotUtf8:
    return _NotUtf8(
        InvalidArgument(
            "cannot read meter CSV",
            [FieldViolation("path", f"{p}: not UTF-8 text ({exc.reason})")],
        )
    )


class _Parser:
    """Parses chunks of whole lines into columns.

    :meth:`fast` handles the common case column-wise (no quotes, exactly one line per row,
    every value valid); any doubt returns None and :meth:`slow` parses the chunk row by row
    with the ``csv`` module, reporting each violation with its line.  Both give the same
    columns for the same valid input."""

    def __init__(self, source: CsvMeterSource, log: ViolationLog, ids: dict[str, int], index):
        self.source = source
        self.log = log
        self.ids = ids
        self.index = index  # positions of start, end, device, usage, indicator
        self.width = len(CSV_COLUMNS)
        self.cache: dict[str, int] = {}
        self.indicators: dict[str, bool] = {}

    def stamp(self, text: str, n: int, column: str) -> int | None:
        ts = self.cache.get(text)
        if ts is None:
            try:
                ts = parse_timestamp(text)
            except ValueError as exc:
                self.log.add(f"line {n}.{column}", f"{text!r}: {exc}")
                return None
            if len(self.cache) >= _CACHE_MAX:
                self.cache.clear()
            self.cache[text] = ts
        return ts

    def fast(self, raw: bytes, text: str, first: int) -> tuple[Columns, np.ndarray] | None:
        if '"' in text:
            return None
        if "\r" in text:  # CRLF line ends; a lone CR is left to the csv module
            text, raw = text.replace("\r\n", "\n"), raw.replace(b"\r\n", b"\n")
            if "\r" in text:
                return None
        body = text[:-1] if text.endswith("\n") else text
        if not body:
            return None
        arr = np.frombuffer(raw, dtype=np.uint8)
        newlines = np.flatnonzero(arr == 10)
        commas = np.flatnonzero(arr == 44)
        bounds = np.concatenate(([0], newlines + 1))
        if bounds[-1] < arr.size:
            bounds = np.concatenate((bounds, [arr.size]))
        per_line = np.diff(np.searchsorted(commas, bounds))
        n = per_line.size
        if n == 0 or not (per_line == self.width - 1).all():
            return None  # blank lines or a wrong number of fields: report them row by row
        flat = body.replace("\n", ",").split(",")
        i_start, i_end, i_dev, i_wh, i_gn = self.index
        w = self.width
        start = self._stamps(flat[i_start::w], n)
        end = self._stamps(flat[i_end::w], n)
        if start is None or end is None:
            return None
        duration = end - start
        if (duration <= 0).any() or (duration > MAX_INTERVAL_S).any():
            return None
        meter = self._meters(flat[i_dev::w], n)
        wh = _digits(flat[i_wh::w])
        gross = self._gross(flat[i_gn::w], n)
        if meter is None or wh is None or gross is None:
            return None
        line = np.arange(first, first + n, dtype=np.int64)
        return Columns(meter, start, end, wh, line), gross

    def _stamps(self, col: list[str], n: int) -> np.ndarray | None:
        cache = self.cache
        known = np.fromiter(map(cache.get, col, repeat(-1)), np.int64, n)  # stamps are >= 0
        if n and known.min() >= 0:
            return known
        fresh = set(col).difference(cache)
        if len(cache) + len(fresh) > _CACHE_MAX:
            cache.clear()
            fresh = set(col)
        for text in fresh:
            try:
                cache[text] = parse_timestamp(text)
            except ValueError:
                return None
        return np.fromiter(map(cache.__getitem__, col), np.int64, n)

    def _meters(self, col: list[str], n: int) -> np.ndarray | None:
        ids = self.ids
        known = np.fromiter(map(ids.get, col, repeat(-1)), np.int64, n)
        if n and known.min() >= 0:  # no meter new to this file: one lookup per row
            return known
        fresh = set(col).difference(ids)
        # in order of first appearance, as the row path numbers them
        for device in (d for d in dict.fromkeys(col) if d in fresh) if fresh else ():
            if (
                not device
                or device != device.strip()
                or len(device) > MAX_METER_ID_LEN
                or not device.isprintable()
            ):
                return None
            ids[device] = len(ids)
        return np.fromiter(map(ids.__getitem__, col), np.int64, n)

    def _gross(self, col: list[str], n: int) -> np.ndarray | None:
        values = set(col)
        if values == {"NET"}:
            return np.zeros(n, dtype=bool)
        table = {}
        for v in values:
            indicator = v.strip().upper()
            if indicator not in ("NET", "GROSS"):
                return None
            if indicator == "GROSS" and self.source.gross_policy is GrossPolicy.REJECT:
                return None
            table[v] = indicator == "GROSS"
        return np.fromiter(map(table.__getitem__, col), bool, n)

    def slow(self, text: str, first: int) -> tuple[Columns, np.ndarray] | None:
        """Row by row with the csv module; violations go to the log with their lines."""
        import io

        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        i_start, i_end, i_dev, i_wh, i_gn = self.index
        width = self.width
        reject_gross = self.source.gross_policy is GrossPolicy.REJECT
        log, ids = self.log, self.ids
        meter, start, end, wh = array("q"), array("q"), array("q"), array("q")
        line, gross = array("q"), array("b")
        try:
            for row in reader:
                n = first - 1 + reader.line_num
                if len(row) != width:
                    if not row or (len(row) == 1 and not row[0].strip()):
                        continue  # blank line
                    log.add(f"line {n}", f"expected {width} fields, got {len(row)}")
                elif (
                    ok := self.source._row(
                        row,
                        n,
                        i_start,
                        i_end,
                        i_dev,
                        i_wh,
                        i_gn,
                        reject_gross,
                        self.stamp,
                        log,
                        ids,
                    )
                ) is not None:
                    m, s, e, w, g = ok
                    meter.append(m)
                    start.append(s)
                    end.append(e)
                    wh.append(w)
                    line.append(n)
                    gross.append(g)
                if log.full:
                    return None
        except csv.Error as exc:
            log.add(f"line {first - 1 + reader.line_num}", f"malformed CSV ({exc})")
            return None
        if log.items:
            return None
        cols = Columns(
            np.frombuffer(meter, dtype=np.int64).copy(),
            np.frombuffer(start, dtype=np.int64).copy(),
            np.frombuffer(end, dtype=np.int64).copy(),
            np.frombuffer(wh, dtype=np.int64).copy(),
            np.frombuffer(line, dtype=np.int64).copy(),
        )
        return cols, np.frombuffer(gross, dtype=np.int8).astype(bool)


def _digits(col: list[str]) -> np.ndarray | None:
    """Whole non-negative Wh of at most 18 digits, or None (then the row path reports)."""
    joined = "".join(col)
    if not (joined.isascii() and joined.isdigit()):
        return None
    lengths = np.fromiter(map(len, col), np.int64, len(col))
    if lengths.size and (lengths.min() == 0 or lengths.max() > 18):
        return None
    return np.fromiter(map(int, col), np.int64, len(col))  # ASCII digits only, checked above


def _gross_superseded(cols: Columns, gross: np.ndarray) -> np.ndarray:
    """Mask of GROSS rows whose (meter, start, end) also has a NET row."""
    order = np.lexsort((gross, cols.end, cols.start, cols.meter))
    m, s, e, g = cols.meter[order], cols.start[order], cols.end[order], gross[order]
    new = np.ones(order.size, dtype=bool)
    new[1:] = (m[1:] != m[:-1]) | (s[1:] != s[:-1]) | (e[1:] != e[:-1])
    group = np.cumsum(new) - 1
    group_has_net = ~g[new]  # NET sorts first within a key, so the first row tells
    superseded_sorted = g & group_has_net[group]
    out = np.zeros(order.size, dtype=bool)
    out[order] = superseded_sorted
    return out
