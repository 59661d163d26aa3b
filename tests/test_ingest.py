"""Streamed meter import: chunks in one transaction, unchanged re-import, refused changes.

The CSV reader is forced to small chunks so that a small file spans many of them; the
column-wise fast path and the row-by-row path must accept and refuse the same input.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from eap.node.errors import InvalidArgument
from eap.node.meters import CSV_COLUMNS, CsvMeterSource, ReadOptions, csv_reader
from eap.node.store import schema as t

T0 = 1_704_067_200
HEADER = ",".join(CSV_COLUMNS)


def _ts(unix: int) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def row(meter: str, hour: int, wh: int, kind: str = "NET") -> str:
    return f"{_ts(T0 + 3600 * hour)},{_ts(T0 + 3600 * (hour + 1))},{meter},{wh},{kind}"


def write(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(CsvMeterSource, "chunk_bytes", 300)  # about five rows per chunk


@pytest.fixture
def meters(node):
    owner = node.create_account(request_id="acct", label="co-op").account.id
    for d in range(3):
        node.register_device(
            request_id=f"dev-{d}",
            local_ref=f"roof-{d}",
            capacity_w=1000,
            source="solar",
            technology="photovoltaic",
            commissioned_on="2020-05-01",
            latitude=6.2,
            longitude=-75.5,
            zone="CO-ANT",
            owner=owner,
            meter_id=f"m{d}",
            attestation_evidence="agreement",
        )
    return node


def stored(node) -> list[tuple]:
    with node.store.read() as conn:
        r = t.readings.c
        return sorted(conn.execute(select(r.device_id, r.interval_start, r.interval_end, r.wh)))


def test_chunked_import_stores_every_reading_once(meters, tmp_path, small_chunks):
    rows = [row(f"m{d}", h, (d + h) % 50) for h in range(40) for d in range(3)]
    rows.append(row("stranger", 0, 5))
    res = meters.import_readings(write(tmp_path / "a.csv", rows), request_id="a")
    assert res.readings == 120 and res.unknown_meters == ["stranger"]
    assert res.wh == sum((d + h) % 50 for h in range(40) for d in range(3))
    assert len(stored(meters)) == 120
    again = meters.import_readings(write(tmp_path / "b.csv", rows), request_id="b")
    assert (again.readings, again.unchanged) == (0, 120)
    assert len(stored(meters)) == 120


def test_duplicate_in_a_later_chunk_counts_unchanged(meters, tmp_path, small_chunks):
    rows = [row("m0", h, 7) for h in range(20)] + [row("m0", 3, 7)]
    res = meters.import_readings(write(tmp_path / "a.csv", rows), request_id="a")
    assert res.readings == 20 and res.unchanged == 1


def test_conflict_in_a_late_chunk_stores_nothing_and_names_meter_and_time(
    meters, tmp_path, small_chunks
):
    rows = [row("m1", h, 9) for h in range(30)] + [row("m1", 2, 10)]
    with pytest.raises(InvalidArgument) as e:
        meters.import_readings(write(tmp_path / "a.csv", rows), request_id="a")
    v = e.value.violations[0]
    assert v.field == f"readings[m1@{T0 + 7200}]"
    assert "2024-01-01T02:00:00Z" in v.description and "9 Wh" in v.description
    assert stored(meters) == []


def test_changed_reading_on_reimport_is_refused(meters, tmp_path, small_chunks):
    rows = [row("m2", h, 9) for h in range(10)]
    meters.import_readings(write(tmp_path / "a.csv", rows), request_id="a")
    rows[7] = row("m2", 7, 11)
    with pytest.raises(InvalidArgument) as e:
        meters.import_readings(write(tmp_path / "b.csv", rows), request_id="b")
    assert e.value.violations[0].field == f"readings[m2@{T0 + 7 * 3600}]"
    with meters.store.read() as conn:
        assert conn.execute(select(func.sum(t.readings.c.wh))).scalar_one() == 90


def test_longer_reading_over_stored_shorter_ones_is_refused(meters):
    from eap.node.meters import MeterReadings

    def pulled(rows):
        return MeterReadings.from_rows(rows, kind="production", source="test")

    quarter = [("m0", T0 + 900 * q, T0 + 900 * (q + 1), 2) for q in (1, 2)]
    meters.import_pulled_readings(pulled(quarter), request_id="a", payload={"pull": "a"})
    hour = pulled([("m0", T0, T0 + 3600, 8)])
    with pytest.raises(InvalidArgument) as e:
        meters.import_pulled_readings(hour, request_id="b", payload={"pull": "b"})
    v = e.value.violations[0]
    assert v.field == f"readings[m0@{T0}]" and "overlaps a stored reading" in v.description


def test_bad_row_in_a_late_chunk_stores_nothing(meters, tmp_path, small_chunks):
    rows = [row("m0", h, 9) for h in range(30)] + [row("m0", 40, 5000)]  # over capacity
    with pytest.raises(InvalidArgument):
        meters.import_readings(write(tmp_path / "a.csv", rows), request_id="a")
    rows[-1] = "2024-01-03 00:00:00,2024-01-03 01:00:00,m0,-5,NET"
    with pytest.raises(InvalidArgument) as e:
        meters.import_readings(write(tmp_path / "b.csv", rows), request_id="b")
    assert e.value.violations[0].field == "line 32.interval_usage"
    assert stored(meters) == []


def test_progress_reaches_the_file_size(meters, tmp_path, small_chunks):
    path = write(tmp_path / "a.csv", [row("m0", h, 1) for h in range(30)])
    seen = []
    meters.import_readings(path, request_id="a", progress=lambda d, n: seen.append((d, n)))
    size = path.stat().st_size
    assert seen[0] == (0, size) and seen[-1] == (size, size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


# -- fast path == row path --------------------------------------------------------------------

_cell = st.sampled_from(["m0", "m1", " m2", "m 3", "", "é", '"m4"'])
_wh = st.sampled_from(["0", "5", "17", "-3", "1.5", "", " 4", "99999999999999999999", "007"])
_kind = st.sampled_from(["NET", "GROSS", "net", "bogus"])
_hour = st.integers(0, 6)
_line = st.one_of(
    st.tuples(_cell, _hour, _wh, _kind).map(
        lambda x: f"{_ts(T0 + 3600 * x[1])},{_ts(T0 + 3600 * (x[1] + 1))},{x[0]},{x[2]},{x[3]}"
    ),
    st.sampled_from(
        [
            "",
            "a,b",
            "2024-01-01 00:00,2024-01-01 02:00,m0,1,NET",
            "2024-01-01T00:30:00Z,2024-01-01T01:00:00Z,m1,1,NET",
        ]
    ),
)


def _outcome(path: Path, policy: str):
    try:
        r = CsvMeterSource(policy).read(path, options=ReadOptions(max_violations=50))
    except InvalidArgument as exc:
        return ("error", [(v.field, v.description) for v in exc.violations])
    return ("ok", r.meters, r.meter.tolist(), r.interval_start.tolist(), r.wh.tolist(), r.notes)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(_line, max_size=25),
    policy=st.sampled_from(["ignore", "reject", "fallback"]),
    crlf=st.booleans(),
)
def test_fast_path_and_row_path_agree(tmp_path, monkeypatch, lines, policy, crlf):
    path = tmp_path / "p.csv"
    end = "\r\n" if crlf else "\n"
    path.write_bytes((end.join([HEADER, *lines]) + end).encode())
    fast = _outcome(path, policy)
    with monkeypatch.context() as m:
        m.setattr(csv_reader._Parser, "fast", lambda self, raw, text, first: None)
        slow = _outcome(path, policy)
    assert fast == slow


@settings(max_examples=30, deadline=None)
@given(hours=st.lists(st.integers(0, 40), min_size=1, max_size=60), step=st.integers(60, 400))
def test_chunks_together_equal_the_whole_file(hours, step):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp) / "c.csv", [row(f"m{h % 3}", h, h) for h in sorted(set(hours))])
        whole = CsvMeterSource().read(path)
        parts = list(CsvMeterSource().read_chunks(path, chunk_bytes=step))
    got = sorted(
        (p.meters[m], s, w)
        for p in parts
        for m, s, w in zip(p.meter.tolist(), p.interval_start.tolist(), p.wh.tolist(), strict=True)
    )
    want = sorted(
        (whole.meters[m], s, w)
        for m, s, w in zip(
            whole.meter.tolist(), whole.interval_start.tolist(), whole.wh.tolist(), strict=True
        )
    )
    assert got == want


# -- the Storer against a brute-force reference ------------------------------------------------


class _ReferenceStorer:
    """The importer's rules written plainly: whole device rows per meter, each reading compared
    with every stored reading, rows inserted by (device id, start).  The Storer must give the
    same counts, store the same rows in the same order, and refuse with the same violations."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.devices: dict = {}
        self.readings = self.wh = self.unchanged = 0
        self.unknown: set[str] = set()

    def add(self, rd) -> None:
        from eap.node.domain.ingest import _iso, check_readings
        from eap.node.domain.rules import Checker
        from eap.node.store.engine import bulk_insert

        d = t.devices.c
        for m in rd.meters:
            if m not in self.devices:
                self.devices[m] = self.conn.execute(
                    select(d.id, d.capacity_w).where(d.meter_id == m)
                ).first()
                if self.devices[m] is None:
                    self.unknown.add(m)
        rows = [
            (self.devices[rd.meters[m]], rd.meters[m], i, s, e, w)
            for i, (m, s, e, w) in enumerate(
                zip(
                    rd.meter.tolist(),
                    rd.interval_start.tolist(),
                    rd.interval_end.tolist(),
                    rd.wh.tolist(),
                    strict=True,
                )
            )
            if self.devices[rd.meters[m]] is not None
        ]
        if not rows:
            return
        idx = np.array([r[2] for r in rows])
        check_readings(
            rd,
            rd.meter[idx],
            rd.interval_start[idx],
            rd.interval_end[idx],
            rd.wh[idx],
            np.array([r[0].capacity_w for r in rows], dtype=np.int64),
        )
        r = t.readings.c
        stored = self.conn.execute(
            select(r.device_id, r.interval_start, r.interval_end, r.wh)
        ).all()
        check = Checker("meter readings conflict with stored readings")
        new, refused = [], 0
        for dev, meter, _, s, e, w in rows:
            mine = [x for x in stored if x[0] == dev.id and x[1] < e and s < x[2]]
            same = [x for x in mine if x[1] == s]
            where, when = f"readings[{meter}@{s}]", f"at {_iso(s)}: "
            if same and same[0][2:] == (e, w):
                continue
            if (same or mine) and (refused := refused + 1) > 50:
                continue  # the importer names the first 50
            if same:
                _, ss, se, sw = same[0]
                check.fail(
                    where,
                    f"{when}stored reading has {sw} Wh over {se - ss} s, "
                    f"file has {w} Wh over {e - s} s",
                )
            elif mine:
                check.fail(where, f"{when}overlaps a stored reading of another interval")
            else:
                new.append((dev.id, s, e, w))
        check.done()
        new.sort()
        if new:
            bulk_insert(
                self.conn,
                t.readings,
                {
                    "device_id": [x[0] for x in new],
                    "interval_start": [x[1] for x in new],
                    "interval_end": [x[2] for x in new],
                    "wh": [x[3] for x in new],
                    "issued_wh": [0] * len(new),
                },
            )
        self.readings += len(new)
        self.wh += sum(x[3] for x in new)
        self.unchanged += len(rows) - len(new)


_SLOT = 900  # readings start on quarter hours and last 15, 30 or 60 minutes
_reading = st.tuples(
    st.sampled_from(["m0", "m1", "m2", "stranger"]),
    st.integers(0, 16),
    st.sampled_from([900, 1800, 3600]),
    st.sampled_from([7] * 30 + [5, 0, 400]),  # 400 Wh is over 1000 W for a quarter hour
)


def _chunk(rows):
    """A chunk as a reader gives it: per meter sorted and without overlaps (later rows that
    would overlap are left out), the rows of one meter together."""
    from eap.node.meters import MeterReadings

    kept: dict[str, list] = {}
    for meter, slot, duration, wh in rows:
        start = T0 + slot * _SLOT - (slot * _SLOT) % duration
        mine = kept.setdefault(meter, [])
        if all(e <= start or start + duration <= s for _, s, e, _ in mine):
            mine.append((meter, start, start + duration, wh))
    return MeterReadings.from_rows(
        [r for m in kept.values() for r in m], kind="production", source="test"
    )


def _stored_by(node, make, chunks):
    from eap.node.errors import EapError

    r = t.readings.c
    with node.store.engine.connect() as conn:
        tx = conn.begin()
        try:
            store = make(conn)
            try:
                for c in chunks:
                    store.add(c)
                out = ("ok", store.readings, store.wh, store.unchanged, sorted(store.unknown))
            except EapError as exc:
                out = ("error", str(exc), [(v.field, v.description) for v in exc.violations])
            rows = conn.execute(
                select(r.device_id, r.interval_start, r.interval_end, r.wh).order_by(r.id)
            ).all()
        finally:
            tx.rollback()
    return out, [tuple(x) for x in rows]


@pytest.fixture
def stocked(meters, tmp_path):
    """Three meters, hourly readings of 7 Wh already stored for m0 (hours 0..1)."""
    rows = [row("m0", h, 7) for h in range(2)]
    meters.import_readings(write(tmp_path / "stock.csv", rows), request_id="stock")
    return meters


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chunks=st.lists(st.lists(_reading, max_size=10), min_size=1, max_size=4))
def test_storer_agrees_with_the_reference(stocked, chunks):
    from eap.node.domain.ingest import Storer

    parts = [_chunk(c) for c in chunks]
    want = _stored_by(stocked, _ReferenceStorer, parts)
    got = _stored_by(stocked, lambda conn: Storer(stocked, conn), parts)
    assert got == want


def test_read_ahead_keeps_order_and_errors_and_stays_one_item_ahead():
    from eap.node.domain.ingest import read_ahead

    made: list[int] = []

    def produce():
        for i in range(5):
            made.append(i)
            yield i
        raise ValueError("bad chunk 5")

    got = []
    with pytest.raises(ValueError, match="bad chunk 5"):
        for item in read_ahead(produce()):
            got.append(item)
            time.sleep(0.01)  # let the helper run ahead as far as it may
            assert len(made) <= len(got) + 1  # parsed: this one and at most the next
    assert got == [0, 1, 2, 3, 4]
    # a consumer that stops early leaves the producer where it was: one item ahead
    made.clear()
    for item in read_ahead(produce()):
        if item == 1:
            break
    assert made == [0, 1, 2]


def test_a_file_hour_by_hour_asks_the_store_about_no_meter(meters, tmp_path, monkeypatch):
    """Chunks cut mid-hour: a meter already seen in the previous chunk has nothing stored
    that its next hour could repeat or overlap, so no chunk queries stored readings; a
    repeated hour in a later chunk is still asked about and found unchanged."""
    from eap.node.store import repos

    asked: list[list[str]] = []
    original = repos.readings_in_range

    def spy(conn, device_ids, lo, hi):
        asked.append(list(device_ids))
        return original(conn, device_ids, lo, hi)

    monkeypatch.setattr(repos, "readings_in_range", spy)
    monkeypatch.setattr(CsvMeterSource, "chunk_bytes", 200)  # 4 rows of 3 meters' hours
    rows = [row(f"m{d}", h, 5 + d) for h in range(12) for d in range(3)]
    res = meters.import_readings(write(tmp_path / "a.csv", rows), request_id="a")
    assert res.readings == 36 and asked == []
    again = meters.import_readings(
        write(tmp_path / "b.csv", [row("m2", 12, 7), row("m1", 4, 6)]), request_id="b"
    )
    assert (again.readings, again.unchanged) == (1, 1)
    assert len(asked) == 1 and len(asked[0]) == 1  # m1 alone: m2's hour 12 is new
