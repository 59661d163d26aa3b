"""The meter-data interface: the columnar :class:`MeterReadings`, the :class:`MeterSource`
protocol a reader (built-in or plugin) implements, and :func:`reader_for`.

Readings are columns, never one Python object per reading: ``meter`` (int32 index into the
``meters`` dictionary of meter/device ids as the source spells them), ``interval_start`` and
``interval_end`` (int64 unix seconds, UTC) and ``wh`` (int64 whole Wh).  A container enforces
the rules every reading must satisfy, whoever built it: ``end > start``, ``end - start`` at
most one hour, ``wh >= 0``, rows sorted by (meter, start) without overlapping intervals per
meter.  What a reader left out of the file, or rounded, is listed in
:attr:`MeterReadings.notes`: a reader never drops data silently.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from eap.node.errors import FieldViolation, InvalidArgument

#: Longest interval a reading may cover (DESIGN §3: interval ≤ 1 h).
MAX_INTERVAL_S = 3600
#: Default cap on the violations a reader collects before it stops reading.
MAX_VIOLATIONS = 50
#: Longest meter/device id accepted from a source.
MAX_METER_ID_LEN = 256
#: Accepted timestamp range: [1970-01-01, 2200-01-01) in unix seconds.
MIN_TIMESTAMP = 0
MAX_TIMESTAMP = 7_258_118_400

_INT64_MAX = np.iinfo(np.int64).max


class ReadingKind(enum.StrEnum):
    """Direction of the metered energy: only production can back an issuance."""

    PRODUCTION = "production"
    CONSUMPTION = "consumption"

    @classmethod
    def parse(cls, value: str | ReadingKind, field_name: str = "kind") -> ReadingKind:
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            allowed = ", ".join(k.value for k in cls)
            raise InvalidArgument(
                "invalid reading kind",
                [FieldViolation(field_name, f"{value!r}; one of: {allowed}")],
            ) from None


@dataclass(frozen=True)
class ReadOptions:
    """Options every :class:`MeterSource` understands.

    ``kind`` picks the readings of one direction (a source holding both production and
    consumption needs it; a source with a fixed direction, like the CSV layout, uses it as an
    override).  ``max_violations`` bounds the violations collected before reading stops.
    """

    kind: ReadingKind | None = None
    max_violations: int = MAX_VIOLATIONS

    def __post_init__(self) -> None:
        if self.kind is not None:
            object.__setattr__(self, "kind", ReadingKind.parse(self.kind))
        if not 1 <= self.max_violations <= 10_000:
            raise InvalidArgument(
                "invalid read options",
                [FieldViolation("max_violations", "must be between 1 and 10000")],
            )


@dataclass(frozen=True)
class ReadNote:
    """Something a reader left out of the source (or rounded), where, why and how many
    readings or rows it concerns."""

    where: str
    reason: str
    count: int

    def __str__(self) -> str:
        return f"{self.where}: {self.reason} ({self.count})"


class MeterRow(NamedTuple):
    """One reading as plain Python values (for small uses: display, tests)."""

    meter: str
    interval_start: int
    interval_end: int
    wh: int


@dataclass(frozen=True)
class MeterSummary:
    """What a set of readings covers, for the CLI and logs."""

    kind: ReadingKind
    meters: int
    intervals: int
    total_wh: int
    first_start: int | None
    last_end: int | None

    def __str__(self) -> str:
        if self.first_start is None or self.last_end is None:
            span = "no intervals"
        else:
            span = f"{_iso(self.first_start)} .. {_iso(self.last_end)}"
        return (
            f"{self.kind.value}: {self.meters} meter(s), {self.intervals} interval(s), "
            f"{self.total_wh} Wh, {span}"
        )


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _frozen(array: np.ndarray, dtype: type) -> np.ndarray:
    """A read-only 1-D array of ``dtype``; copied unless nobody can write to its memory."""
    out: np.ndarray = np.ascontiguousarray(array, dtype=dtype)
    if out.ndim != 1:
        raise ValueError("meter reading columns must be one-dimensional")
    root: np.ndarray = out
    while isinstance(root.base, np.ndarray):
        root = root.base
    if out.flags.writeable or root.flags.writeable:
        out = out.copy()
        out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class MeterReadings:
    """Meter readings of one kind from one source, as read-only NumPy columns.

    Rows are sorted by (meter, interval_start) and no two intervals of one meter overlap.
    ``meters`` is the dictionary ``meter`` indexes into; filtering keeps it whole, so an index
    means the same meter in every slice of one read.
    """

    meters: tuple[str, ...]
    meter: np.ndarray
    interval_start: np.ndarray
    interval_end: np.ndarray
    wh: np.ndarray
    kind: ReadingKind
    source: str
    notes: tuple[ReadNote, ...] = field(default=())

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "meters", tuple(self.meters))
        set_(self, "kind", ReadingKind.parse(self.kind))
        set_(self, "notes", tuple(self.notes))
        for name, dtype in (
            ("meter", np.int32),
            ("interval_start", np.int64),
            ("interval_end", np.int64),
            ("wh", np.int64),
        ):
            set_(self, name, _frozen(getattr(self, name), dtype))
        self._check()

    def _check(self) -> None:
        n = self.meter.size
        if not (self.interval_start.size == self.interval_end.size == self.wh.size == n):
            raise ValueError("meter reading columns differ in length")
        if n == 0:
            return
        bad: list[FieldViolation] = []

        def report(mask: np.ndarray, column: str, why: str) -> None:
            for i in np.flatnonzero(mask)[:5]:
                bad.append(FieldViolation(f"readings[{i}].{column}", why))

        report((self.meter < 0) | (self.meter >= len(self.meters)), "meter", "index out of range")
        report(self.wh < 0, "wh", "must be >= 0")
        duration = self.interval_end - self.interval_start
        report(duration <= 0, "interval_end", "must be after interval_start")
        report(duration > MAX_INTERVAL_S, "interval_end", "interval longer than 1 h")
        if not bad:
            same = self.meter[1:] == self.meter[:-1]
            report(
                (self.meter[1:] < self.meter[:-1])
                | (same & (self.interval_start[1:] < self.interval_start[:-1])),
                "interval_start",
                "rows not sorted by (meter, interval_start)",
            )
            if not bad:
                overlap = np.zeros(n, dtype=bool)
                overlap[1:] = same & (self.interval_start[1:] < self.interval_end[:-1])
                report(overlap, "interval_start", "overlaps the previous interval of its meter")
        if bad:
            raise InvalidArgument("invalid meter readings", bad)

    # -- construction --------------------------------------------------------------------

    @classmethod
    def empty(
        cls, kind: ReadingKind | str, source: str, notes: Iterable[ReadNote] = ()
    ) -> MeterReadings:
        z64 = np.zeros(0, dtype=np.int64)
        return cls(
            (),
            np.zeros(0, dtype=np.int32),
            z64,
            z64,
            z64,
            ReadingKind.parse(kind),
            source,
            tuple(notes),
        )

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[tuple[str, int, int, int]],
        *,
        kind: ReadingKind | str,
        source: str,
        notes: Iterable[ReadNote] = (),
    ) -> MeterReadings:
        """Build from ``(meter id, start, end, wh)`` tuples, in any order (small uses only)."""
        ids: dict[str, int] = {}
        cols: list[list[int]] = [[], [], [], []]
        for meter_id, s, e, w in rows:
            cols[0].append(ids.setdefault(meter_id, len(ids)))
            cols[1].append(s)
            cols[2].append(e)
            cols[3].append(w)
        meter, start, end, wh = (np.asarray(c, dtype=np.int64) for c in cols)
        order = np.lexsort((end, start, meter))
        return cls(
            tuple(ids),
            meter[order],
            start[order],
            end[order],
            wh[order],
            ReadingKind.parse(kind),
            source,
            tuple(notes),
        )

    def _take(self, index: slice | np.ndarray) -> MeterReadings:
        return MeterReadings(
            self.meters,
            self.meter[index],
            self.interval_start[index],
            self.interval_end[index],
            self.wh[index],
            self.kind,
            self.source,
            self.notes,
        )

    # -- access --------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.meter.size)

    def __getitem__(
        self, index: int | slice | np.ndarray | Sequence[int]
    ) -> MeterRow | MeterReadings:
        """An ``int`` gives one :class:`MeterRow`; a slice, boolean mask or index array of
        increasing positions gives a :class:`MeterReadings` sharing the ``meters`` dictionary."""
        if isinstance(index, int | np.integer):
            i = int(index)
            return MeterRow(
                self.meters[self.meter[i]],
                int(self.interval_start[i]),
                int(self.interval_end[i]),
                int(self.wh[i]),
            )
        if isinstance(index, slice):
            return self._take(index)
        return self._take(np.asarray(index))

    def __iter__(self) -> Iterator[MeterRow]:
        return self.rows()

    def rows(self) -> Iterator[MeterRow]:
        """Iterate as :class:`MeterRow` tuples; a Python object per row, so for small uses."""
        meters = self.meters
        for m, s, e, w in zip(
            self.meter.tolist(),
            self.interval_start.tolist(),
            self.interval_end.tolist(),
            self.wh.tolist(),
            strict=True,
        ):
            yield MeterRow(meters[m], s, e, w)

    def meter_ids(self) -> list[str]:
        """Ids of the meters that have at least one reading here, in index order."""
        return [self.meters[i] for i in np.unique(self.meter).tolist()]

    def select(self, meter_ids: str | Iterable[str]) -> MeterReadings:
        """The readings of one meter id or of several; unknown ids select nothing."""
        wanted = {meter_ids} if isinstance(meter_ids, str) else set(meter_ids)
        idx = [i for i, m in enumerate(self.meters) if m in wanted]
        return self._take(np.isin(self.meter, np.asarray(idx, dtype=np.int32)))

    def between(self, start: int, end: int) -> MeterReadings:
        """Readings whose interval lies inside ``[start, end)`` (unix seconds)."""
        return self._take((self.interval_start >= start) & (self.interval_end <= end))

    def total_wh(self) -> int:
        """Exact sum of ``wh`` as a Python int (no int64 overflow)."""
        if self.wh.size == 0:
            return 0
        if int(self.wh.max()) <= _INT64_MAX // self.wh.size:
            return int(self.wh.sum())
        return sum(int(x) for x in self.wh.astype(object))

    def per_meter(self) -> dict[str, tuple[int, int]]:
        """``{meter id: (intervals, total Wh)}`` for the meters present."""
        out: dict[str, tuple[int, int]] = {}
        present, first = np.unique(self.meter, return_index=True)
        bounds = [*first.tolist(), self.meter.size]
        for k, m in enumerate(present.tolist()):
            part = self._take(slice(bounds[k], bounds[k + 1]))
            out[self.meters[m]] = (len(part), part.total_wh())
        return out

    def summary(self) -> MeterSummary:
        n = len(self)
        return MeterSummary(
            kind=self.kind,
            meters=int(np.unique(self.meter).size),
            intervals=n,
            total_wh=self.total_wh(),
            first_start=int(self.interval_start.min()) if n else None,
            last_end=int(self.interval_end.max()) if n else None,
        )

    def __repr__(self) -> str:
        return f"MeterReadings({self.summary()}, source={self.source!r}, notes={len(self.notes)})"


# -- the interface a reader implements ------------------------------------------------------


@runtime_checkable
class MeterSource(Protocol):
    """A reader of one meter-data format.

    ``sniff`` must be cheap (read a few KB at most), must not raise for a readable file of
    another format, and should say yes to a damaged file of its own format so that ``read``
    can report precisely what is wrong.  ``read`` returns the whole file or raises
    :class:`~eap.node.errors.InvalidArgument`; it never returns part of a bad file.
    """

    name: str

    def sniff(self, path: Path) -> bool: ...

    def read(self, path: Path, *, options: ReadOptions | None = None) -> MeterReadings: ...


def _file_violation(path: Path, why: str) -> InvalidArgument:
    return InvalidArgument("cannot read meter data", [FieldViolation("path", f"{path}: {why}")])


def check_readable(path: str | os.PathLike[str]) -> Path:
    """``path`` as a :class:`Path`, or :class:`InvalidArgument` if it is not a readable file."""
    p = Path(path)
    if not p.is_file():
        raise _file_violation(p, "no such file" if not p.exists() else "not a regular file")
    if not os.access(p, os.R_OK):
        raise _file_violation(p, "not readable")
    return p


def reader_for(path: str | os.PathLike[str], sources: Iterable[MeterSource]) -> MeterSource:
    """The first of ``sources`` whose ``sniff`` accepts ``path``.

    Raises :class:`InvalidArgument` when the file is missing or no source recognises it.
    """
    p = check_readable(path)
    tried: list[str] = []
    for source in sources:
        if source.sniff(p):
            return source
        tried.append(source.name)
    why = f"no meter-data reader recognises this file (tried: {', '.join(tried) or 'none'})"
    raise _file_violation(p, why)


# -- shared post-processing for readers ----------------------------------------------------


class ViolationLog:
    """Collects violations up to a cap; ``full`` tells a reader to stop reading."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: list[FieldViolation] = []

    def add(self, field_name: str, description: str) -> None:
        if len(self.items) < self.limit:
            self.items.append(FieldViolation(field_name, description))

    @property
    def full(self) -> bool:
        return len(self.items) >= self.limit

    def raise_if_any(self, message: str) -> None:
        if self.items:
            if self.full:
                message = f"{message} (stopped after {self.limit} violations)"
            raise InvalidArgument(message, list(self.items))


@dataclass
class Columns:
    """Readings as a reader accumulates them, plus ``ref``: a reader-defined row locator."""

    meter: np.ndarray
    start: np.ndarray
    end: np.ndarray
    wh: np.ndarray
    ref: np.ndarray

    def take(self, index: np.ndarray) -> Columns:
        return Columns(
            self.meter[index], self.start[index], self.end[index], self.wh[index], self.ref[index]
        )


def dedupe_and_check(
    cols: Columns,
    log: ViolationLog,
    locate: Callable[[int, str | None], str],
) -> tuple[Columns, int]:
    """Sort by (meter, start, end), drop exact duplicates, report conflicts and overlaps.

    ``locate(ref, column)`` names the field of a violation, ``column`` being ``"wh"`` or
    ``"interval"``, or names the row itself when ``column`` is None.  Returns the sorted
    unique rows and how many exact duplicates were dropped.
    """
    n = cols.meter.size
    if n == 0:
        return cols, 0
    order = np.lexsort((cols.ref, cols.end, cols.start, cols.meter))
    c = cols.take(order)
    same_key = (
        (c.meter[1:] == c.meter[:-1]) & (c.start[1:] == c.start[:-1]) & (c.end[1:] == c.end[:-1])
    )
    conflict = same_key & (c.wh[1:] != c.wh[:-1])
    for i in np.flatnonzero(conflict).tolist():
        if log.full:
            break
        log.add(
            locate(int(c.ref[i + 1]), "wh"),
            f"{int(c.wh[i + 1])} Wh conflicts with {int(c.wh[i])} Wh for the same meter and "
            f"interval at {locate(int(c.ref[i]), None)}",
        )
    keep = np.ones(n, dtype=bool)
    keep[1:] = ~same_key
    dropped = int(n - keep.sum())
    c = c.take(np.flatnonzero(keep))
    overlap = (c.meter[1:] == c.meter[:-1]) & (c.start[1:] < c.end[:-1])
    for i in np.flatnonzero(overlap).tolist():
        if log.full:
            break
        log.add(
            locate(int(c.ref[i + 1]), "interval"),
            f"interval [{_iso(int(c.start[i + 1]))}, {_iso(int(c.end[i + 1]))}) overlaps "
            f"[{_iso(int(c.start[i]))}, {_iso(int(c.end[i]))}) of the same meter at "
            f"{locate(int(c.ref[i]), None)}",
        )
    return c, dropped
