"""CSV meter reader: the shared real file, strict validation, GROSS policies, property test."""

from __future__ import annotations

import csv
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eap.node.errors import InvalidArgument
from eap.node.meters import (
    CSV_COLUMNS,
    CsvMeterSource,
    GrossPolicy,
    MeterReadings,
    ReadingKind,
    ReadOptions,
    parse_timestamp,
)

DATA = Path(__file__).parent / "data"
HEADER = ",".join(CSV_COLUMNS)
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


@pytest.fixture
def shared_csv() -> Path:
    return DATA / "meters" / "hourly_measurements.csv"


def _write(tmp_path: Path, *rows: str, header: str = HEADER, name: str = "m.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _fails(path: Path, source: CsvMeterSource | None = None, **opts) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as e:
        (source or CsvMeterSource()).read(path, options=ReadOptions(**opts))
    return e.value


def _fields(err: InvalidArgument) -> list[str]:
    return [v.field for v in err.violations]


# -- the shared real file ---------------------------------------------------------------------


def test_shared_file_counts_and_totals(shared_csv: Path) -> None:
    with open(shared_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    expected_total = sum(
        int(r["interval_usage"]) for r in rows if r["gross_net_indicator"] == "NET"
    )
    per_device = Counter(r["device_id"] for r in rows if r["gross_net_indicator"] == "NET")

    source = CsvMeterSource()
    assert source.sniff(shared_csv)
    r = source.read(shared_csv)
    assert len(r) == len(rows) == 744
    assert r.total_wh() == expected_total == 77_375
    assert {m: n for m, (n, _) in r.per_meter().items()} == dict(per_device)
    assert r.kind is ReadingKind.PRODUCTION
    assert r.notes == ()
    s = r.summary()
    assert s.first_start == T0
    assert s.last_end == T0 + 744 * 3600
    assert ((r.interval_end - r.interval_start) == 3600).all()
    first = next(iter(rows))
    assert r[0].wh == int(first["interval_usage"])
    assert r.source == f"csv-hourly:{shared_csv}"


def test_shared_file_with_kind_override(shared_csv: Path) -> None:
    r = CsvMeterSource().read(shared_csv, options=ReadOptions(kind="consumption"))
    assert r.kind is ReadingKind.CONSUMPTION


# -- accepted variants ------------------------------------------------------------------------


def test_offsets_blank_lines_column_order_and_exact_duplicates(tmp_path: Path) -> None:
    header = (
        "device_id,interval_usage,gross_net_indicator,interval_start_datetime,interval_end_datetime"
    )
    path = _write(
        tmp_path,
        "pv-1,10,NET,2024-01-01T01:00:00+01:00,2024-01-01T02:00:00+01:00",
        "",
        "pv-1,20,net,2024-01-01T01:00Z,2024-01-01T02:00:00.000Z",
        "pv-2,5,NET,2024-01-01 00:00:00,2024-01-01 00:15:00",
        "pv-1,20,NET,2024-01-01 01:00:00,2024-01-01 02:00:00",
        header=header,
    )
    r = CsvMeterSource().read(path)
    assert [tuple(x) for x in r.rows()] == [
        ("pv-1", T0, T0 + 3600, 10),
        ("pv-1", T0 + 3600, T0 + 7200, 20),
        ("pv-2", T0, T0 + 900, 5),
    ]
    assert [(n.reason, n.count) for n in r.notes] == [("exact duplicate rows kept once", 1)]


def test_header_only_gives_empty_readings(tmp_path: Path) -> None:
    r = CsvMeterSource().read(_write(tmp_path))
    assert len(r) == 0
    assert r.summary().intervals == 0


def test_parse_timestamp() -> None:
    assert parse_timestamp("2024-01-01 00:00:00") == T0
    assert parse_timestamp("2024-01-01T02:00:00+02:00") == T0
    assert parse_timestamp("2023-12-31T19:00-0500") == T0
    for bad in ("2024-01-01", "01/01/2024 00:00", "2024-13-01 00:00", "2024-01-01 00:00:00.5",
                "1969-12-31 23:00:00", "\uff12\uff10\uff12\uff14-01-01 00:00"):  # fmt: skip
        with pytest.raises(ValueError):
            parse_timestamp(bad)


# -- GROSS policies ---------------------------------------------------------------------------

GROSS_ROWS = (
    "2024-01-01 00:00:00,2024-01-01 01:00:00,d,100,NET",
    "2024-01-01 00:00:00,2024-01-01 01:00:00,d,110,GROSS",
    "2024-01-01 01:00:00,2024-01-01 02:00:00,d,120,GROSS",
)


def test_gross_ignored_by_default(tmp_path: Path) -> None:
    r = CsvMeterSource().read(_write(tmp_path, *GROSS_ROWS))
    assert [x.wh for x in r.rows()] == [100]
    assert len(r.notes) == 1
    assert r.notes[0].count == 2
    assert "GROSS" in r.notes[0].reason


def test_gross_fallback_only_without_net(tmp_path: Path) -> None:
    r = CsvMeterSource(GrossPolicy.FALLBACK).read(_write(tmp_path, *GROSS_ROWS))
    assert [x.wh for x in r.rows()] == [100, 120]
    assert [(n.count, "superseded" in n.reason) for n in r.notes] == [(1, True)]


def test_gross_rejected(tmp_path: Path) -> None:
    err = _fails(_write(tmp_path, *GROSS_ROWS), CsvMeterSource("reject"))
    assert _fields(err) == ["line 3.gross_net_indicator", "line 4.gross_net_indicator"]


def test_only_gross_rows_is_an_error_not_an_empty_result(tmp_path: Path) -> None:
    err = _fails(_write(tmp_path, GROSS_ROWS[1]))
    assert "no usable readings" in err.message
    assert "GROSS" in err.violations[0].description


# -- strict validation: each bad input names its line and column, nothing is returned ---------

GOOD = "2024-01-01 00:00:00,2024-01-01 01:00:00,d,5,NET"


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ("2024-01-01 25:00:00,2024-01-01 01:00:00,d,5,NET", "line 3.interval_start_datetime",
         "invalid date or time"),
        ("yesterday,2024-01-01 01:00:00,d,5,NET", "line 3.interval_start_datetime", "ISO 8601"),
        ("2024-01-01 00:00:00,2024-01-01,d,5,NET", "line 3.interval_end_datetime", "ISO 8601"),
        ("2024-01-01 00:00:00.250,2024-01-01 01:00:00,d,5,NET", "line 3.interval_start_datetime",
         "sub-second"),
        ("2024-01-01 01:00:00,2024-01-01 01:00:00,d,5,NET", "line 3.interval_end_datetime",
         "must be after"),
        ("2024-01-01 02:00:00,2024-01-01 01:00:00,d,5,NET", "line 3.interval_end_datetime",
         "must be after"),
        ("2024-01-01 01:00:00,2024-01-01 02:00:01,d,5,NET", "line 3.interval_end_datetime",
         "3601 s is longer than 1 h"),
        ("2024-01-01 01:00:00,2024-01-01 02:00:00,d,5.5,NET", "line 3.interval_usage",
         "not a whole number"),
        ("2024-01-01 01:00:00,2024-01-01 02:00:00,d,5.0,NET", "line 3.interval_usage",
         "not a whole number"),
        ("2024-01-01 01:00:00,2024-01-01 02:00:00,d,1e3,NET", "line 3.interval_usage",
         "not a whole number"),
        ("2024-01-01 01:00:00,2024-01-01 02:00:00,d,1_000,NET", "line 3.interval_usage",
         "not a whole number"),
        ("2024-01-01 01:00:00,2024-01-01 02:00:00,d,,NET", "line 3.interval_usage",
         "not a whole number"),
        ("2024-01-01 01:00:00,2024-01-01 02:00:00,d,-4,NET", "line 3.interval_usage", "negative"),
        ("2024-01-01 01:00:00,2024-01-01 02:00:00,d,99999999999999999999,NET",
         "line 3.interval_usage", "out of range"),
        ("2024-01-01 01:00:00,2024-01-01 02:00:00, ,5,NET", "line 3.device_id", "empty"),
        ("2024-01-01 01:00:00,2024-01-01 02:00:00,d,5,TOTAL", "line 3.gross_net_indicator",
         "NET or GROSS"),
        ("2024-01-01 01:00:00,2024-01-01 02:00:00,d,5", "line 3", "expected 5 fields, got 4"),
        ("2024-01-01 00:00:00,2024-01-01 01:00:00,d,6,NET", "line 3.interval_usage",
         "6 Wh conflicts with 5 Wh for the same meter and interval at line 2"),
        ("2024-01-01 00:30:00,2024-01-01 01:30:00,d,5,NET", "line 3.interval_start_datetime",
         "overlaps"),
    ],
)  # fmt: skip
def test_bad_row(tmp_path: Path, row: str, field: str, words: str) -> None:
    err = _fails(_write(tmp_path, GOOD, row))
    assert _fields(err) == [field]
    assert words in err.violations[0].description
    assert "invalid meter CSV m.csv" in err.message


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ("interval_start_datetime,interval_end_datetime,device_id,interval_usage",
         "missing column(s) gross_net_indicator"),
        (HEADER + ",note", "unknown column(s) 'note'"),
        (HEADER.replace("device_id", "interval_usage"), "missing column(s) device_id"),
        ("start,end,device,wh,gn", "missing column(s) interval_start_datetime"),
    ],
)  # fmt: skip
def test_bad_header(tmp_path: Path, header: str, words: str) -> None:
    err = _fails(_write(tmp_path, GOOD, header=header))
    assert _fields(err) == ["line 1"]
    assert words in err.violations[0].description


def test_empty_file_and_bad_encoding(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert "empty file" in _fails(empty).violations[0].description
    latin = tmp_path / "latin.csv"
    latin.write_bytes(
        (HEADER + "\n2024-01-01 00:00:00,2024-01-01 01:00:00,caf\xe9,5,NET\n").encode("latin-1")
    )
    err = _fails(latin)
    assert _fields(err) == ["path"]
    assert "not UTF-8" in err.violations[0].description


def test_malformed_quoting(tmp_path: Path) -> None:
    err = _fails(_write(tmp_path, GOOD, '2024-01-01 01:00:00,2024-01-01 02:00:00,"d,5,NET'))
    assert _fields(err) == ["line 3"]
    assert "malformed CSV" in err.violations[0].description


def test_every_violation_is_listed_up_to_the_cap(tmp_path: Path) -> None:
    rows = [f"2024-01-01 00:00:00,2024-01-01 01:00:00,d{i},-1,NET" for i in range(80)]
    path = _write(tmp_path, *rows)
    err = _fails(path)
    assert len(err.violations) == 50
    assert "stopped after 50 violations" in err.message
    assert err.violations[49].field == "line 51.interval_usage"
    assert len(_fails(path, max_violations=3).violations) == 3
    two = _fails(_write(tmp_path, GOOD, rows[0], "x,y,d,5,NET"))
    assert _fields(two) == [
        "line 3.interval_usage",
        "line 4.interval_start_datetime",
        "line 4.interval_end_datetime",
    ]


def test_sniff(tmp_path: Path) -> None:
    src = CsvMeterSource()
    assert src.sniff(_write(tmp_path, GOOD))
    # a damaged header of the same layout is still ours, so read() can say what is wrong
    assert src.sniff(
        _write(tmp_path, header="interval_start_datetime,interval_end_datetime,wh,device_id")
    )
    assert not src.sniff(_write(tmp_path, header="a,b,c,d,e"))
    assert not src.sniff(tmp_path / "missing.csv")


def test_many_rows(tmp_path: Path) -> None:
    devices, hours = 20, 2_500
    path = tmp_path / "big.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        t = datetime(2024, 1, 1)
        for h in range(hours):
            s, e = (
                (t + timedelta(hours=h)).isoformat(" "),
                (t + timedelta(hours=h + 1)).isoformat(" "),
            )
            for d in range(devices):
                w.writerow([s, e, f"dev-{d}", (h * 7 + d) % 1000, "NET"])
    r = CsvMeterSource().read(path)
    assert len(r) == devices * hours
    assert r.total_wh() == sum((h * 7 + d) % 1000 for h in range(hours) for d in range(devices))
    assert r.meters == tuple(f"dev-{d}" for d in range(devices))
    assert all(n == hours for n, _ in r.per_meter().values())


# -- property: what goes in comes out ---------------------------------------------------------

_DURATIONS = (60, 900, 1800, 3600)
_FORMATS = ("naive", "naive_t", "z", "offset")


def _fmt(ts: int, style: str, offset_h: int) -> str:
    dt = datetime.fromtimestamp(ts, UTC)
    if style == "naive":
        return dt.strftime("%Y-%m-%d %H:%M:%S")
    if style == "naive_t":
        return dt.strftime("%Y-%m-%dT%H:%M:%S")
    if style == "z":
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return dt.astimezone(timezone(timedelta(hours=offset_h))).isoformat()


_rows = st.lists(
    st.tuples(
        st.sampled_from(["1", "pv-A", "wind farm 7", "dev,quoted", "é-meter"]),
        st.integers(0, 24 * 400),  # hour slot
        st.sampled_from(_DURATIONS),
        st.integers(0, 10**12),
        st.sampled_from(_FORMATS),
        st.integers(-12, 14),
        st.booleans(),  # also write an exact duplicate of this row
    ),
    max_size=60,
    unique_by=lambda r: (r[0], r[1]),
)


@settings(max_examples=60, deadline=None)
@given(rows=_rows)
def test_property_total_and_count_round_trip(rows) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(CSV_COLUMNS)
            for device, slot, duration, wh, style, off, dup in rows:
                start = T0 + slot * 3600
                line = [
                    _fmt(start, style, off),
                    _fmt(start + duration, style, off),
                    device,
                    wh,
                    "NET",
                ]
                w.writerow(line)
                if dup:
                    w.writerow(line)
        r = CsvMeterSource().read(path)
    assert len(r) == len(rows)
    assert r.total_wh() == sum(row[3] for row in rows)
    assert isinstance(r, MeterReadings)
    assert set(r.meter_ids()) == {row[0] for row in rows}
    expected = sorted((row[0], T0 + row[1] * 3600, row[2], row[3]) for row in rows)
    got = sorted((x.meter, x.interval_start, x.interval_end - x.interval_start, x.wh) for x in r)
    assert got == expected
    dups = sum(1 for row in rows if row[6])
    assert sum(n.count for n in r.notes) == dups
