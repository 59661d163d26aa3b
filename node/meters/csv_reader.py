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
from datetime import UTC, datetime, timedelta
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
        try:
            with open(p, encoding="utf-8-sig", newline="") as f:
                parsed = self._parse(f, log)
        except UnicodeDecodeError as exc:
            raise InvalidArgument(
                "cannot read meter CSV",
                [FieldViolation("path", f"{p}: not UTF-8 text ({exc.reason})")],
            ) from None
        log.raise_if_any(f"invalid meter CSV {p.name}")
        assert parsed is not None
        ids, cols, gross = parsed
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
        if cols.meter.size == 0 and notes:
            raise InvalidArgument(
                f"no usable readings in meter CSV {p.name}",
                [FieldViolation(s.where, f"{s.reason} ({s.count})") for s in notes],
            )
        # Keep only the meters that have readings, in order of first appearance.
        used, inverse = np.unique(cols.meter, return_inverse=True)
        return MeterReadings(
            tuple(ids[i] for i in used.tolist()),
            inverse.astype(np.int32),
            cols.start,
            cols.end,
            cols.wh,
            kind,
            source,
            tuple(notes),
        )

    def _parse(self, f, log: ViolationLog) -> tuple[list[str], Columns, np.ndarray] | None:
        reader = csv.reader(f, strict=True)
        try:
            header = next(reader, None)
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
        i_start, i_end, i_dev, i_wh, i_gn = (names.index(c) for c in CSV_COLUMNS)
        width = len(CSV_COLUMNS)
        reject_gross = self.gross_policy is GrossPolicy.REJECT

        ids: dict[str, int] = {}
        meter = array("i")
        start = array("q")
        end = array("q")
        wh = array("q")
        line = array("q")
        gross = array("b")
        cache: dict[str, int] = {}

        def stamp(text: str, n: int, column: str) -> int | None:
            ts = cache.get(text)
            if ts is None:
                try:
                    ts = parse_timestamp(text)
                except ValueError as exc:
                    log.add(f"line {n}.{column}", f"{text!r}: {exc}")
                    return None
                if len(cache) >= _CACHE_MAX:
                    cache.clear()
                cache[text] = ts
            return ts

        try:
            for row in reader:
                n = reader.line_num
                if len(row) != width:
                    if not row or (len(row) == 1 and not row[0].strip()):
                        continue  # blank line
                    log.add(f"line {n}", f"expected {width} fields, got {len(row)}")
                elif (
                    ok := self._row(
                        row, n, i_start, i_end, i_dev, i_wh, i_gn, reject_gross, stamp, log, ids
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
            log.add(f"line {reader.line_num}", f"malformed CSV ({exc})")
            return None
        if log.items:
            return None
        cols = Columns(
            np.frombuffer(meter, dtype=np.int32).astype(np.int64),
            np.frombuffer(start, dtype=np.int64).copy(),
            np.frombuffer(end, dtype=np.int64).copy(),
            np.frombuffer(wh, dtype=np.int64).copy(),
            np.frombuffer(line, dtype=np.int64).copy(),
        )
        return list(ids), cols, np.frombuffer(gross, dtype=np.int8).astype(bool)

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
