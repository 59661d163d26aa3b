"""MeterReadings container, ReadOptions, the MeterSource protocol and reader_for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eap.node.errors import InvalidArgument
from eap.node.meters import (
    CsvMeterSource,
    GreenButtonSource,
    MeterReadings,
    MeterRow,
    MeterSource,
    ReadingKind,
    ReadNote,
    ReadOptions,
    builtin_sources,
    read_meter_file,
    reader_for,
    sample_greenbutton_path,
)

H = 3600
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def _readings() -> MeterReadings:
    rows = [
        ("b", T0 + H, T0 + 2 * H, 7),
        ("a", T0, T0 + H, 5),
        ("b", T0, T0 + H, 3),
        ("a", T0 + H, T0 + 2 * H, 11),
        ("c", T0, T0 + 900, 1),
    ]
    return MeterReadings.from_rows(rows, kind="production", source="test")


def test_from_rows_sorts_by_meter_and_start() -> None:
    r = _readings()
    assert len(r) == 5
    assert r.meters == ("b", "a", "c")  # order of first appearance
    assert r.meter.dtype == np.int32
    assert r.interval_start.dtype == r.interval_end.dtype == r.wh.dtype == np.int64
    assert list(r.rows()) == [
        MeterRow("b", T0, T0 + H, 3),
        MeterRow("b", T0 + H, T0 + 2 * H, 7),
        MeterRow("a", T0, T0 + H, 5),
        MeterRow("a", T0 + H, T0 + 2 * H, 11),
        MeterRow("c", T0, T0 + 900, 1),
    ]
    assert r.kind is ReadingKind.PRODUCTION


def test_columns_are_read_only_and_copied_from_writable_input() -> None:
    wh = np.array([1, 2], dtype=np.int64)
    r = MeterReadings(
        ("m",),
        np.zeros(2, dtype=np.int32),
        np.array([T0, T0 + H]),
        np.array([T0 + H, T0 + 2 * H]),
        wh,
        ReadingKind.CONSUMPTION,
        "test",
    )
    wh[0] = 99
    assert r.wh.tolist() == [1, 2]
    with pytest.raises(ValueError):
        r.wh[0] = 5
    # slices of a container share its (read-only) memory
    assert np.shares_memory(r[1:].wh, r.wh)


def test_index_slice_mask_select_between() -> None:
    r = _readings()
    assert r[0] == MeterRow("b", T0, T0 + H, 3)
    assert isinstance(r[1:3], MeterReadings)
    assert [x.wh for x in r[1:3]] == [7, 5]
    assert len(r[r.wh > 4]) == 3
    a = r.select("a")
    assert [x.wh for x in a.rows()] == [5, 11]
    assert a.meters == r.meters  # the dictionary is kept whole
    assert a.meter_ids() == ["a"]
    assert len(r.select(["a", "c"])) == 3
    assert len(r.select("nope")) == 0
    assert [x.meter for x in r.between(T0, T0 + H)] == ["b", "a", "c"]


def test_summary_and_per_meter() -> None:
    r = _readings()
    s = r.summary()
    assert (s.meters, s.intervals, s.total_wh) == (3, 5, 27)
    assert (s.first_start, s.last_end) == (T0, T0 + 2 * H)
    assert "3 meter(s), 5 interval(s), 27 Wh" in str(s)
    assert "2024-01-01T00:00:00Z .. 2024-01-01T02:00:00Z" in str(s)
    assert r.per_meter() == {"b": (2, 10), "a": (2, 16), "c": (1, 1)}
    empty = MeterReadings.empty("consumption", "test")
    assert len(empty) == 0
    assert empty.summary().total_wh == 0
    assert "no intervals" in str(empty.summary())


def test_total_wh_is_exact_beyond_int64() -> None:
    big = (1 << 62) + 1
    r = MeterReadings.from_rows(
        [("m", T0 + i * H, T0 + (i + 1) * H, big) for i in range(4)], kind="production", source="t"
    )
    assert r.total_wh() == 4 * big
    assert r.summary().total_wh == 4 * big


@pytest.mark.parametrize(
    ("row", "field", "why"),
    [
        (("m", T0, T0 + H, -1), "readings[0].wh", ">= 0"),
        (("m", T0, T0, 1), "readings[0].interval_end", "after"),
        (("m", T0, T0 + H + 1, 1), "readings[0].interval_end", "longer than 1 h"),
    ],
)
def test_container_rejects_bad_rows(row, field, why) -> None:
    with pytest.raises(InvalidArgument) as e:
        MeterReadings.from_rows([row], kind="production", source="t")
    assert e.value.violations[0].field == field
    assert why in e.value.violations[0].description


def test_container_rejects_overlap_and_unsorted() -> None:
    with pytest.raises(InvalidArgument, match="overlaps"):
        MeterReadings.from_rows(
            [("m", T0, T0 + H, 1), ("m", T0 + 1800, T0 + 1800 + H, 1)],
            kind="production",
            source="t",
        )
    z = np.zeros(2, dtype=np.int32)
    with pytest.raises(InvalidArgument, match="not sorted"):
        MeterReadings(
            ("m",), z, np.array([T0 + H, T0]), np.array([T0 + 2 * H, T0 + H]), np.array([1, 1]),
            "production", "t",
        )  # fmt: skip
    with pytest.raises(InvalidArgument, match="index out of range"):
        MeterReadings(
            ("m",), np.array([1]), np.array([T0]), np.array([T0 + H]), np.array([1]),
            "production", "t",
        )  # fmt: skip
    with pytest.raises(ValueError, match="differ in length"):
        MeterReadings(
            ("m",), z, np.array([T0]), np.array([T0 + H]), np.array([1]), "production", "t"
        )


def test_kind_and_options_validation() -> None:
    assert ReadingKind.parse("Production") is ReadingKind.PRODUCTION
    with pytest.raises(InvalidArgument) as e:
        ReadingKind.parse("storage")
    assert e.value.violations[0].field == "kind"
    assert ReadOptions(kind="consumption").kind is ReadingKind.CONSUMPTION
    with pytest.raises(InvalidArgument):
        ReadOptions(max_violations=0)
    with pytest.raises(InvalidArgument):
        CsvMeterSource(gross_policy="sometimes")


def test_read_note_str() -> None:
    assert str(ReadNote("entry[3]", "longer than 1 h", 2)) == "entry[3]: longer than 1 h (2)"


def test_builtin_sources_implement_the_protocol() -> None:
    for source in builtin_sources():
        assert isinstance(source, MeterSource)
        assert source.name


def test_reader_for_picks_by_sniffing(tmp_path: Path) -> None:
    csv_file = tmp_path / "m.csv"
    csv_file.write_text(
        "interval_start_datetime,interval_end_datetime,device_id,interval_usage,"
        "gross_net_indicator\n"
    )
    assert isinstance(reader_for(csv_file, builtin_sources()), CsvMeterSource)
    assert isinstance(reader_for(sample_greenbutton_path(), builtin_sources()), GreenButtonSource)
    other = tmp_path / "other.txt"
    other.write_text("hello,world\n")
    with pytest.raises(InvalidArgument) as e:
        reader_for(other, builtin_sources())
    assert e.value.violations[0].field == "path"
    assert "tried: greenbutton, csv-hourly" in e.value.violations[0].description
    with pytest.raises(InvalidArgument, match="no such file"):
        reader_for(tmp_path / "missing.xml", builtin_sources())
    with pytest.raises(InvalidArgument, match="not a regular file"):
        reader_for(tmp_path, builtin_sources())


class _JsonLinesSource:
    """What a plugin would provide: any object with name, sniff and read."""

    name = "jsonl-test"

    def sniff(self, path: Path) -> bool:
        return path.suffix == ".jsonl"

    def read(self, path: Path, *, options: ReadOptions | None = None) -> MeterReadings:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line]
        return MeterReadings.from_rows(
            [(r["id"], r["start"], r["end"], r["wh"]) for r in rows],
            kind=(options.kind if options and options.kind else "production"),
            source=f"{self.name}:{path}",
        )


def test_a_plugin_source_plugs_in(tmp_path: Path) -> None:
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps({"id": "pv-1", "start": T0, "end": T0 + H, "wh": 42}) + "\n")
    plugin = _JsonLinesSource()
    assert isinstance(plugin, MeterSource)
    r = read_meter_file(f, sources=[*builtin_sources(), plugin])
    assert r.summary().total_wh == 42
    assert r.source.startswith("jsonl-test:")
