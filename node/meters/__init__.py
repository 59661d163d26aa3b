"""Meter data: the readings every attribute record is issued from.

A :class:`MeterSource` reads one file format into :class:`MeterReadings`, NumPy columns of
(meter, interval start, interval end, Wh) of one :class:`ReadingKind`.  Two sources are built
in: :class:`GreenButtonSource` (NAESB ESPI Atom XML) and :class:`CsvMeterSource` (the hourly
measurement CSV of the public granular-certificate registry).  A plugin provides another
format by implementing the same protocol; :func:`reader_for` picks the first source that
recognises a file and :func:`read_meter_file` reads it.  Bad input raises
:class:`~eap.node.errors.InvalidArgument` with one ``FieldViolation`` per problem, and a
reader never returns part of a bad file.  See ``docs/meter-data.md``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from eap.node.meters.base import (
    MAX_INTERVAL_S,
    MAX_VIOLATIONS,
    MeterReadings,
    MeterRow,
    MeterSource,
    MeterSummary,
    ReadingKind,
    ReadNote,
    ReadOptions,
    reader_for,
)
from eap.node.meters.csv_reader import CSV_COLUMNS, CsvMeterSource, GrossPolicy, parse_timestamp
from eap.node.meters.greenbutton import GreenButtonSource

__all__ = [
    "CSV_COLUMNS",
    "MAX_INTERVAL_S",
    "MAX_VIOLATIONS",
    "CsvMeterSource",
    "GreenButtonSource",
    "GrossPolicy",
    "MeterReadings",
    "MeterRow",
    "MeterSource",
    "MeterSummary",
    "ReadNote",
    "ReadOptions",
    "ReadingKind",
    "builtin_sources",
    "parse_timestamp",
    "read_meter_file",
    "reader_for",
    "sample_greenbutton_path",
]

SAMPLE_GREENBUTTON = "greenbutton_sample_3days.xml"


def builtin_sources() -> list[MeterSource]:
    """The built-in sources in sniffing order (Green Button first: its sniff is stricter)."""
    return [GreenButtonSource(), CsvMeterSource()]


def read_meter_file(
    path: str | os.PathLike[str],
    *,
    sources: Iterable[MeterSource] | None = None,
    options: ReadOptions | None = None,
) -> MeterReadings:
    """Read ``path`` with the first of ``sources`` (default: the built-ins) that sniffs it."""
    srcs = builtin_sources() if sources is None else list(sources)
    return reader_for(path, srcs).read(Path(path), options=options)


def sample_greenbutton_path() -> Path:
    """The packaged three-day Green Button sample (see ``node/data/README.md``)."""
    ref = resources.files("eap.node").joinpath("data", SAMPLE_GREENBUTTON)
    return Path(str(ref))
