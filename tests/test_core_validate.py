"""Validation kernel: each rule fires on a record built to break it and not on its boundary
values; the compiled kernel, the pure-Python twin and a brute-force oracle agree on random and
adversarial batches (empty, one record, int64 extremes, duplicates, any order)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import combinations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eap._core import codes, validate_py
from eap._core.columns import RECORD_DTYPES, RowError

try:
    from eap._core import validate as validate_c
except ImportError:  # built with EAP_NO_EXT=1 or without a compiler
    validate_c = None

needs_ext = pytest.mark.skipif(
    validate_c is None, reason="compiled eap._core.validate is not built (EAP_NO_EXT=1?)"
)
IMPLS = [
    pytest.param(validate_py, id="twin"),
    pytest.param(validate_c, id="cython", marks=needs_ext),
]

COLUMNS = (
    "serial_start",
    "serial_end",
    "device",
    "interval_start",
    "interval_end",
    "source",
    "technology",
    "renewable_ppm",
    "carbon_mg",
    "capacity_w",
    "metered_wh",
)
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
HOUR = 1_700_000_000 - 1_700_000_000 % 3600
PROPERTY = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def record(**changes: int) -> dict[str, int]:
    """A valid one-hour solar record of 1000 Wh from a 2 kW device, with ``changes``."""
    rec = {
        "serial_start": 1000,
        "serial_end": 2000,
        "device": 0,
        "interval_start": HOUR,
        "interval_end": HOUR + 3600,
        "source": 1,
        "technology": 1,
        "renewable_ppm": 1_000_000,
        "carbon_mg": 0,
        "capacity_w": 2000,
        "metered_wh": -1,
    }
    rec.update(changes)
    return rec


def batch(records: list[dict[str, int]]) -> list[np.ndarray]:
    return [np.array([r[c] for r in records], dtype=RECORD_DTYPES[c]) for c in COLUMNS]


def run(impl, records: list[dict[str, int]]) -> list[int]:
    out = impl.validate(*batch(records))
    assert out.dtype == np.uint8 and out.shape == (len(records),)
    return out.tolist()


def oracle(records: list[dict[str, int]]) -> list[int]:
    """The rules as written in docs/core.md, pair by pair: slow, obviously right."""
    out = []
    for r in records:
        s, e, ss, se = r["interval_start"], r["interval_end"], r["serial_start"], r["serial_end"]
        d = e - s
        if e <= s:
            code = codes.INTERVAL_EMPTY
        elif d > 3600:
            code = codes.INTERVAL_TOO_LONG
        elif 3600 % d or s % d:
            code = codes.INTERVAL_MISALIGNED
        elif ss < 0 or se <= ss:
            code = codes.SERIAL_RANGE_INVALID
        elif not 1 <= r["source"] <= 12:
            code = codes.SOURCE_INVALID
        elif not 1 <= r["technology"] <= 14:
            code = codes.TECHNOLOGY_INVALID
        elif r["renewable_ppm"] > 1_000_000:
            code = codes.RENEWABLE_SHARE_OUT_OF_RANGE
        elif r["carbon_mg"] > 2_000_000:
            code = codes.CARBON_INTENSITY_OUT_OF_RANGE
        elif r["capacity_w"] < 0 or (se - ss) * 3600 > r["capacity_w"] * d:
            code = codes.EXCEEDS_CAPACITY
        else:
            code = codes.OK
        out.append(code)
    valid = [i for i, c in enumerate(out) if c == codes.OK]
    interval, serial = set(), set()
    for i, j in combinations(valid, 2):
        a, b = records[i], records[j]
        span_a = (a["interval_start"], a["interval_end"])
        span_b = (b["interval_start"], b["interval_end"])
        meets = span_a[0] < span_b[1] and span_b[0] < span_a[1]
        if a["device"] == b["device"] and meets and span_a != span_b:
            interval |= {i, j}
        if a["serial_start"] < b["serial_end"] and b["serial_start"] < a["serial_end"]:
            serial |= {i, j}
    metered = set()
    for i in valid:
        key = (records[i]["device"], records[i]["interval_start"], records[i]["interval_end"])
        group = [j for j in valid if (records[j]["device"], *_span(records[j])) == key]
        limits = [records[j]["metered_wh"] for j in group if records[j]["metered_wh"] >= 0]
        total = sum(records[j]["serial_end"] - records[j]["serial_start"] for j in group)
        if limits and total > min(limits):
            metered.add(i)
    for i in valid:
        if i in interval:
            out[i] = codes.INTERVAL_OVERLAP
        elif i in serial:
            out[i] = codes.SERIAL_OVERLAP
        elif i in metered:
            out[i] = codes.EXCEEDS_METERED
    return out


def _span(r: dict[str, int]) -> tuple[int, int]:
    return r["interval_start"], r["interval_end"]


# --- one test per rule: a record built to break it, and its boundary values -------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"interval_end": HOUR}, codes.INTERVAL_EMPTY),
        ({"interval_end": HOUR - 3600}, codes.INTERVAL_EMPTY),
        ({"interval_start": I64_MAX, "interval_end": I64_MIN}, codes.INTERVAL_EMPTY),
        ({"interval_end": HOUR + 3601}, codes.INTERVAL_TOO_LONG),
        ({"interval_start": I64_MIN, "interval_end": I64_MAX}, codes.INTERVAL_TOO_LONG),
        ({"interval_start": HOUR + 1, "interval_end": HOUR + 3601}, codes.INTERVAL_MISALIGNED),
        ({"interval_end": HOUR + 7}, codes.INTERVAL_MISALIGNED),
        ({"interval_start": HOUR + 900, "interval_end": HOUR + 2700}, codes.INTERVAL_MISALIGNED),
        ({"interval_start": -1, "interval_end": 3599}, codes.INTERVAL_MISALIGNED),
        ({"interval_start": -2700, "interval_end": -900}, codes.INTERVAL_MISALIGNED),
        ({"serial_start": -1, "serial_end": 10}, codes.SERIAL_RANGE_INVALID),
        ({"serial_end": 1000}, codes.SERIAL_RANGE_INVALID),
        ({"serial_end": 999}, codes.SERIAL_RANGE_INVALID),
        ({"serial_start": I64_MIN, "serial_end": I64_MAX}, codes.SERIAL_RANGE_INVALID),
        ({"source": 0}, codes.SOURCE_INVALID),
        ({"source": 13}, codes.SOURCE_INVALID),
        ({"source": 255}, codes.SOURCE_INVALID),
        ({"technology": 0}, codes.TECHNOLOGY_INVALID),
        ({"technology": 15}, codes.TECHNOLOGY_INVALID),
        ({"renewable_ppm": 1_000_001}, codes.RENEWABLE_SHARE_OUT_OF_RANGE),
        ({"renewable_ppm": 2**32 - 1}, codes.RENEWABLE_SHARE_OUT_OF_RANGE),
        ({"carbon_mg": 2_000_001}, codes.CARBON_INTENSITY_OUT_OF_RANGE),
        ({"carbon_mg": 2**32 - 1}, codes.CARBON_INTENSITY_OUT_OF_RANGE),
        ({"capacity_w": -1}, codes.EXCEEDS_CAPACITY),
        ({"capacity_w": 999}, codes.EXCEEDS_CAPACITY),
        # 1000 Wh in 15 minutes needs 4000 W
        ({"interval_end": HOUR + 900, "capacity_w": 3999}, codes.EXCEEDS_CAPACITY),
        # half a Wh of headroom is not a Wh: 1 W for 30 minutes allows 0 Wh
        (
            {"serial_end": 1001, "interval_end": HOUR + 1800, "capacity_w": 1},
            codes.EXCEEDS_CAPACITY,
        ),
        # exact without overflow: int64-max Wh in 30 minutes need twice the largest capacity
        (
            {
                "serial_start": 0,
                "serial_end": I64_MAX,
                "interval_end": HOUR + 1800,
                "capacity_w": I64_MAX,
            },
            codes.EXCEEDS_CAPACITY,
        ),
    ],
)
def test_each_rule_fires(impl, changes, expected):
    # the broken record alone, and next to a valid record of another device and serial range
    assert run(impl, [record(**changes)]) == [expected]
    other = record(device=9, serial_start=10**9, serial_end=10**9 + 1)
    assert run(impl, [other, record(**changes)]) == [codes.OK, expected]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"interval_end": HOUR + 1, "capacity_w": 3_600_000},
        {"interval_start": HOUR + 2700, "interval_end": HOUR + 3600, "capacity_w": 4000},
        {"interval_start": -3600, "interval_end": 0},
        {"interval_start": -900, "interval_end": 0, "capacity_w": 4000},
        {"interval_start": -7200 + 1800, "interval_end": -3600, "capacity_w": 2000},
        {"interval_start": 0, "interval_end": 1, "capacity_w": 3_600_000},
        {"interval_start": (I64_MAX // 3600 - 1) * 3600, "interval_end": (I64_MAX // 3600) * 3600},
        {"interval_start": I64_MIN + 8, "interval_end": I64_MIN + 16, "capacity_w": 450_000},
        {"serial_start": 0, "serial_end": 1},
        {"source": 12, "technology": 14},
        {"renewable_ppm": 0, "carbon_mg": 2_000_000},
        {"capacity_w": 1000},
        {"interval_end": HOUR + 900, "capacity_w": 4000},
        {"serial_start": 0, "serial_end": I64_MAX, "capacity_w": I64_MAX},
        {"metered_wh": 1000},
        {"metered_wh": I64_MAX},
    ],
)
def test_boundary_values_pass(impl, changes):
    assert run(impl, [record(**changes)]) == [codes.OK]


@pytest.mark.parametrize("impl", IMPLS)
def test_interval_overlap_flags_both_records(impl):
    whole = record()
    half = record(interval_start=HOUR + 1800, serial_start=5000, serial_end=5400)
    assert run(impl, [whole, half]) == [codes.INTERVAL_OVERLAP] * 2
    # another device, adjacent intervals and identical intervals (two bundles) are fine
    assert run(impl, [whole, {**half, "device": 1}]) == [codes.OK] * 2
    first = record(interval_end=HOUR + 1800, serial_end=1400)
    second = record(interval_start=HOUR + 1800, serial_start=5000, serial_end=5400)
    assert run(impl, [first, second]) == [codes.OK] * 2
    assert run(impl, [whole, record(serial_start=7000, serial_end=7100)]) == [codes.OK] * 2


@pytest.mark.parametrize("impl", IMPLS)
def test_interval_overlap_reaches_past_neighbours(impl):
    # the hour overlaps two quarters that do not touch each other; all three are flagged
    recs = [
        record(interval_end=HOUR + 900, serial_end=1100),
        record(serial_start=5000, serial_end=5100),
        record(interval_start=HOUR + 2700, serial_start=9000, serial_end=9100),
        record(interval_start=HOUR + 3600, interval_end=HOUR + 7200, serial_start=20_000),
    ]
    recs[3]["serial_end"] = 20_100
    expected = [codes.INTERVAL_OVERLAP] * 3 + [codes.OK]
    assert run(impl, recs) == expected
    assert run(impl, recs[::-1]) == expected[::-1]


@pytest.mark.parametrize("impl", IMPLS)
def test_serial_overlap_flags_every_record_involved(impl):
    def rng(s: int, e: int, dev: int) -> dict[str, int]:
        return record(serial_start=s, serial_end=e, device=dev)

    assert run(impl, [rng(0, 10, 0), rng(5, 15, 1)]) == [codes.SERIAL_OVERLAP] * 2
    assert run(impl, [rng(0, 10, 0), rng(10, 20, 1)]) == [codes.OK] * 2
    assert run(impl, [rng(0, 10, 0), rng(0, 10, 1)]) == [codes.SERIAL_OVERLAP] * 2
    # one long range covers two short ones that do not meet each other; a far one is fine
    recs = [rng(0, 100, 0), rng(10, 20, 1), rng(50, 60, 2), rng(200, 300, 3)]
    assert run(impl, recs) == [codes.SERIAL_OVERLAP] * 3 + [codes.OK]


@pytest.mark.parametrize("impl", IMPLS)
def test_exceeds_metered_flags_the_whole_device_interval(impl):
    a = record(serial_start=0, serial_end=600, metered_wh=1000)
    b = record(serial_start=600, serial_end=1100, metered_wh=1000)
    other = record(device=1, serial_start=5000, serial_end=5100, metered_wh=1000)
    assert run(impl, [a, b, other]) == [codes.EXCEEDS_METERED] * 2 + [codes.OK]
    assert run(impl, [{**a, "metered_wh": 1100}, {**b, "metered_wh": 1100}]) == [codes.OK] * 2
    assert run(impl, [{**a, "metered_wh": -1}, {**b, "metered_wh": -1}]) == [codes.OK] * 2
    # the smallest non-negative metered_wh of a device-interval is its limit
    assert run(impl, [{**a, "metered_wh": -1}, b]) == [codes.EXCEEDS_METERED] * 2
    assert run(impl, [{**a, "metered_wh": 5000}, b]) == [codes.EXCEEDS_METERED] * 2


@pytest.mark.parametrize("impl", IMPLS)
def test_exceeds_metered_at_int64_extremes(impl):
    # disjoint serial ranges sum to at most int64 max: exactly at the limit is fine
    half = 2**62 + 1
    a = record(serial_start=0, serial_end=half, capacity_w=I64_MAX, metered_wh=I64_MAX)
    b = record(serial_start=half, serial_end=I64_MAX, capacity_w=I64_MAX, metered_wh=I64_MAX)
    assert run(impl, [a, b]) == [codes.OK] * 2
    assert run(impl, [a, {**b, "metered_wh": I64_MAX - 1}]) == [codes.EXCEEDS_METERED] * 2
    # a sum past int64 (the same range twice) neither wraps nor hides the serial overlap
    assert run(impl, [b, b, b]) == [codes.SERIAL_OVERLAP] * 3


@pytest.mark.parametrize("impl", IMPLS)
def test_invalid_records_stay_out_of_cross_record_rules(impl):
    bad = record(source=0, serial_start=0, serial_end=2000, device=0)
    good = record(interval_start=HOUR + 1800, serial_start=1500, serial_end=1700)
    assert run(impl, [bad, good]) == [codes.SOURCE_INVALID, codes.OK]


@pytest.mark.parametrize("impl", IMPLS)
def test_first_failing_cross_record_rule_wins(impl):
    # a overlaps b in interval and c in serials: a and b get 10, c gets 11
    a = record(serial_start=0, serial_end=100)
    b = record(interval_start=HOUR + 1800, serial_start=1000, serial_end=1100)
    c = record(device=5, serial_start=50, serial_end=150)
    assert run(impl, [a, b, c]) == [codes.INTERVAL_OVERLAP] * 2 + [codes.SERIAL_OVERLAP]


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_columns_raise_value_error(impl):
    cols = batch([record(), record(serial_start=5000, serial_end=5001)])
    with pytest.raises(ValueError, match="length mismatch"):
        impl.validate(*cols[:-1], cols[-1][:1])
    wide = [c.astype(np.int64) for c in cols]
    wide[5][1] = 256  # does not fit uint8: never silently wrapped to 0
    with pytest.raises(RowError, match="row 1: source") as err:
        impl.validate(*wide)
    assert err.value.row == 1
    with pytest.raises(ValueError, match="integers"):
        impl.validate(*cols[:7], cols[7].astype(float), *cols[8:])
    with pytest.raises(ValueError, match="1-D"):
        impl.validate(*cols[:-1], cols[-1].reshape(1, 2))


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_batch_and_lists(impl):
    out = impl.validate(*[[] for _ in COLUMNS])
    assert out.dtype == np.uint8 and out.shape == (0,)
    one = record()
    assert impl.validate(*[[one[c]] for c in COLUMNS]).tolist() == [codes.OK]


@needs_ext
def test_codes_and_bounds_of_the_c_enum_match_python():
    assert tuple(range(len(codes.RULE_NAMES))) == validate_c._C_CODES
    for name, value in validate_c._C_LIMITS.items():
        assert getattr(codes, name) == value
    for code, name in enumerate(codes.RULE_NAMES):
        assert getattr(codes, name) == code
    assert len(codes.RULE_DESCRIPTIONS) == len(codes.RULE_NAMES)


# --- random and adversarial batches ----------------------------------------------------------

TIMES = st.one_of(
    st.sampled_from([HOUR, HOUR + 900, HOUR + 1800, HOUR + 3600, HOUR - 3600, 0, -3600]),
    st.sampled_from([-900, -1800, -2700, -7200 + 900, -(10**9) * 3600 + 1800]),
    st.sampled_from([I64_MIN, I64_MAX, I64_MIN + 3600, (I64_MAX // 3600) * 3600]),
    st.integers(HOUR - 7200, HOUR + 7200),
)
DURATIONS = st.sampled_from([3600, 3600, 1800, 900, 600, 1, 7, 0, -1, 3601, 2**63])
SERIALS = st.one_of(
    st.sampled_from([0, 5, 10, 20, 2**62, I64_MAX - 1, -1, I64_MIN]), st.integers(0, 60)
)
WHS = st.one_of(st.sampled_from([1, 5, 10, 0, -1, 2**62]), st.integers(1, 30))


def _clip(v: int) -> int:
    return min(max(v, I64_MIN), I64_MAX)


@st.composite
def records(draw) -> dict[str, int]:
    start, serial = draw(TIMES), draw(SERIALS)
    return {
        "serial_start": serial,
        "serial_end": _clip(serial + draw(WHS)),
        "device": draw(st.sampled_from([0, 1, 2, -(2**31), 2**31 - 1])),
        "interval_start": start,
        "interval_end": _clip(start + draw(DURATIONS)),
        "source": draw(st.one_of(st.sampled_from([0, 1, 12, 13, 255]), st.integers(1, 12))),
        "technology": draw(st.one_of(st.sampled_from([0, 1, 14, 15, 255]), st.integers(1, 14))),
        "renewable_ppm": draw(st.sampled_from([0, 500_000, 1_000_000, 1_000_001, 2**32 - 1])),
        "carbon_mg": draw(st.sampled_from([0, 450_000, 2_000_000, 2_000_001, 2**32 - 1])),
        "capacity_w": draw(
            st.one_of(st.sampled_from([-1, 0, 1, 10**6, I64_MAX]), st.integers(0, 100_000))
        ),
        "metered_wh": draw(
            st.one_of(st.sampled_from([-1, 0, 5, 20, I64_MAX]), st.integers(-1, 60))
        ),
    }


@st.composite
def batches(draw, max_size: int = 20) -> list[dict[str, int]]:
    recs = draw(st.lists(records(), max_size=max_size))
    if recs:
        recs += [dict(recs[i]) for i in draw(st.lists(st.integers(0, len(recs) - 1), max_size=6))]
    return draw(st.permutations(recs))


@PROPERTY
@given(batches())
def test_twin_matches_oracle(recs):
    assert run(validate_py, recs) == oracle(recs)


@needs_ext
@PROPERTY
@given(batches(max_size=40))
def test_kernel_matches_twin(recs):
    assert run(validate_c, recs) == run(validate_py, recs)


@pytest.mark.parametrize("impl", IMPLS)
@settings(PROPERTY, max_examples=80)
@given(recs=batches(), seed=st.integers(0, 2**32 - 1))
def test_result_does_not_depend_on_record_order(impl, recs, seed):
    perm = np.random.default_rng(seed).permutation(len(recs))
    shuffled = [recs[i] for i in perm]
    assert run(impl, shuffled) == [run(impl, recs)[i] for i in perm]


def random_batch(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """A dense batch: few devices, hours and serials, so every rule fires somewhere."""
    dev = rng.integers(0, max(1, n // 6), n)
    dur = rng.choice(
        [3600, 1800, 900, 1200, 7, 0, 7200], n, p=[0.6, 0.15, 0.1, 0.04, 0.04, 0.03, 0.04]
    )
    base = np.where(rng.random(n) < 0.5, HOUR, -HOUR)  # negative times round differently in C
    start = base + rng.integers(0, 6, n) * 3600 + rng.integers(0, 4, n) * 900 * (dur < 3600)
    wh = rng.integers(0, 40, n)
    ss = np.where(rng.random(n) < 0.02, -1, rng.integers(0, 40 * n, n))
    cols = {
        "serial_start": ss,
        "serial_end": ss + wh,
        "device": dev,
        "interval_start": start,
        "interval_end": start + dur,
        "source": rng.integers(0, 14, n),
        "technology": rng.integers(0, 16, n),
        "renewable_ppm": rng.integers(0, 1_050_000, n),
        "carbon_mg": rng.integers(0, 2_050_000, n),
        "capacity_w": rng.integers(-1, 200, n),
        "metered_wh": rng.integers(-1, 80, n),
    }
    return [cols[c].astype(RECORD_DTYPES[c]) for c in COLUMNS]


def _fuzz(rounds: int, max_n: int) -> None:
    rng = np.random.default_rng(20240611)
    for _ in range(rounds):
        cols = random_batch(rng, int(rng.integers(0, max_n)))
        np.testing.assert_array_equal(validate_c.validate(*cols), validate_py.validate(*cols))


@needs_ext
def test_fuzz_kernel_matches_twin_bounded():
    _fuzz(rounds=40, max_n=3000)


@needs_ext
@pytest.mark.slow
def test_fuzz_kernel_matches_twin_long():
    _fuzz(rounds=2000, max_n=20_000)


@needs_ext
def test_threads_share_nothing():
    rng = np.random.default_rng(7)
    work = [random_batch(rng, int(rng.integers(1000, 4000))) for _ in range(8)]
    expected = [validate_py.validate(*cols) for cols in work]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda cols: validate_c.validate(*cols), work * 3))
    for got, want in zip(results, expected * 3, strict=True):
        np.testing.assert_array_equal(got, want)


# --- the kernel's strategies: (device, period) table, sorts, serial order ---------------------
# The kernel groups valid records by device and hour (or by device and duration when all
# durations agree) in a table when that table is dense, sorts them by (device, start) when it is
# not, and looks for ascending serials in device order before it sorts by serial.  The batches
# below are dense in devices and hours, mostly valid, issued in order and then reordered, so
# that every one of those paths runs, with and without the cross-record rules firing.


@st.composite
def dense_records(draw, duration: int | None) -> list[dict[str, int]]:
    """Mostly valid records of few devices and hours; serials issued in device order, some
    records repeated (bundles of one device-interval) or given another serial range."""
    count = draw(st.integers(1, 30))
    recs = []
    serial = draw(st.sampled_from([0, 1000, 2**40]))
    for _ in range(count):
        dur = duration or draw(st.sampled_from([3600, 3600, 1800, 900, 600, 1]))
        start = HOUR + draw(st.integers(-2, 3)) * 3600 + draw(st.integers(0, 3600 // dur - 1)) * dur
        wh = draw(st.integers(1, 20))
        recs.append(
            record(
                device=draw(st.integers(0, 3)),
                interval_start=start,
                interval_end=start + dur,
                serial_start=serial,
                serial_end=serial + wh,
                capacity_w=10**9,
                metered_wh=draw(st.sampled_from([-1, -1, 0, 5, 20, 40, 100])),
                source=draw(st.sampled_from([1, 1, 1, 1, 1, 1, 1, 1, 1, 0])),
            )
        )
        serial += wh + draw(st.sampled_from([0, 0, 0, 1, 50]))
    recs.sort(key=lambda r: (r["device"], r["interval_start"]))
    serial = recs[0]["serial_start"]
    for r in recs:  # serials ascend in device order, as issued
        wh = r["serial_end"] - r["serial_start"]
        r["serial_start"], r["serial_end"] = serial, serial + wh
        serial += wh
    for i in draw(st.lists(st.integers(0, count - 1), max_size=4)):
        recs.append(dict(recs[i]))  # same serials: overlap
    for i in draw(st.lists(st.integers(0, count - 1), max_size=3)):
        recs.append({**recs[i], "serial_start": serial, "serial_end": serial + 3})  # a bundle
        serial += 3
    for i in draw(st.lists(st.integers(0, len(recs) - 1), max_size=2)):
        recs[i] = {**recs[i], "serial_start": recs[i]["serial_start"] + 1}  # overlap a neighbour
    return recs


@st.composite
def dense_batches(draw) -> list[dict[str, int]]:
    recs = draw(dense_records(draw(st.sampled_from([None, None, 3600, 900]))))
    order = draw(st.sampled_from(["issued", "hour", "shuffled"]))
    if order == "hour":
        recs.sort(key=lambda r: (r["interval_start"], r["device"]))
    elif order == "shuffled":
        recs = draw(st.permutations(recs))
    return recs


@needs_ext
@PROPERTY
@given(dense_batches())
def test_kernel_matches_twin_on_dense_batches(recs):
    assert run(validate_c, recs) == run(validate_py, recs)


@PROPERTY
@given(dense_batches())
def test_twin_matches_oracle_on_dense_batches(recs):
    assert run(validate_py, recs) == oracle(recs)


@pytest.mark.parametrize("impl", IMPLS)
@settings(PROPERTY, max_examples=80)
@given(recs=dense_batches(), seed=st.integers(0, 2**32 - 1))
def test_dense_result_does_not_depend_on_record_order(impl, recs, seed):
    perm = np.random.default_rng(seed).permutation(len(recs))
    shuffled = [recs[i] for i in perm]
    assert run(impl, shuffled) == [run(impl, recs)[i] for i in perm]


def issued_batch(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """A batch as a node issues it: devices x hours (or quarter hours), serials consecutive in
    (device, start) order, then some bundles, overlaps and bad records, in one of several
    orders; device ids dense or spread out (a sparse table)."""
    per_device = int(rng.choice([1, 4, 24, 96]))
    quarter = rng.random() < 0.3
    ndev = max(1, n // per_device)
    dev = np.repeat(np.arange(ndev), per_device)[:n]
    dev = np.concatenate([dev, rng.integers(0, ndev, n - len(dev))])
    slots = 96 if quarter else 24
    period = np.tile(np.arange(per_device), ndev)[:n] % slots
    period = np.concatenate([period, rng.integers(0, slots, n - len(period))])
    dur = np.full(n, 900 if quarter else 3600)
    if rng.random() < 0.2:  # some records of another duration (overlaps, mixed periods)
        pick = rng.random(n) < 0.05
        dur[pick] = rng.choice([1800, 900, 3600], int(pick.sum()))
    base = HOUR if rng.random() < 0.8 else -HOUR
    start = base + period * (900 if quarter else 3600)
    start -= start % dur
    if rng.random() < 0.3:  # second bundles of a device-interval
        pick = rng.random(n) < rng.choice([0.02, 0.2, 0.6])
        pick[0] = False
        src = np.nonzero(pick)[0]
        dev[src], start[src], dur[src] = dev[src - 1], start[src - 1], dur[src - 1]
    order = np.lexsort((start, dev))
    dev, start, dur = dev[order], start[order], dur[order]
    wh = rng.integers(1, 50, n)
    ends = np.cumsum(wh) + int(rng.integers(0, 10**6))
    ss = ends - wh
    if rng.random() < 0.3:  # a serial overlap somewhere
        i, j = rng.integers(0, n, 2)
        ss[i] = ss[j] + int(rng.integers(0, wh[j]))
    if rng.random() < 0.2:
        dev = dev * int(rng.choice([7, 1000, 2**20]))
    cols = {
        "serial_start": ss,
        "serial_end": ss + wh,
        "device": dev,
        "interval_start": start,
        "interval_end": start + dur,
        "source": np.where(rng.random(n) < 0.02, 0, 1),
        "technology": np.ones(n),
        "renewable_ppm": np.zeros(n),
        "carbon_mg": np.zeros(n),
        "capacity_w": np.full(n, 10**6),
        "metered_wh": np.where(rng.random(n) < 0.5, wh + rng.integers(-2, 30, n), -1),
    }
    out = [np.asarray(cols[c]).astype(RECORD_DTYPES[c]) for c in COLUMNS]
    kind = rng.integers(0, 4)
    if kind == 0:
        perm = rng.permutation(n)
    elif kind == 1:
        perm = np.lexsort((out[2], out[3]))  # hour-major
    elif kind == 2:
        perm = np.arange(n)
    else:  # in order but for one swap
        perm = np.arange(n)
        k = int(rng.integers(0, n))
        perm[[0, k]] = perm[[k, 0]]
    return [c[perm] for c in out]


def _fuzz_issued(rounds: int, max_n: int) -> None:
    rng = np.random.default_rng(20240612)
    for _ in range(rounds):
        cols = issued_batch(rng, int(rng.integers(1, max_n)))
        np.testing.assert_array_equal(validate_c.validate(*cols), validate_py.validate(*cols))


@needs_ext
def test_fuzz_issued_batches_bounded():
    _fuzz_issued(rounds=150, max_n=3000)


@needs_ext
@pytest.mark.slow
def test_fuzz_issued_batches_long():
    _fuzz_issued(rounds=1000, max_n=20_000)


@pytest.mark.parametrize("impl", IMPLS)
def test_many_records_in_one_device_hour(impl):
    # 100 intervals of 36 s in one hour, some as two bundles, plus a record overlapping a few,
    # among 300 records of other devices
    recs = [
        record(
            interval_start=HOUR + 36 * k,
            interval_end=HOUR + 36 * (k + 1),
            serial_start=10 * k,
            serial_end=10 * k + 1,
            metered_wh=1 if k % 7 else 0,
        )
        for k in range(100)
    ]
    recs += [
        {**recs[k], "serial_start": 5000 + k, "serial_end": 5001 + k} for k in range(0, 100, 3)
    ]
    recs.append(record(interval_start=HOUR + 1800, interval_end=HOUR + 2700, serial_start=9000))
    recs[-1]["serial_end"] = 9001
    recs += [
        record(device=d, serial_start=10**5 + d, serial_end=10**5 + d + 1) for d in range(1, 301)
    ]
    expected = oracle(recs)
    assert {codes.OK, codes.INTERVAL_OVERLAP, codes.EXCEEDS_METERED} <= set(expected)
    assert run(impl, recs) == expected
    assert run(impl, recs[::-1]) == expected[::-1]
    # on a device spread far from the others, the records take the sort instead of the table
    far = [record(device=2**31 - 1, serial_start=10**6, serial_end=10**6 + 1)]
    assert run(impl, recs + far) == [*expected, codes.OK]
    assert run(impl, far + recs[::-1]) == [codes.OK, *expected[::-1]]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("metered", [-1, 70 * 5, 70 * 5 - 1])
def test_many_bundles_of_one_device_interval(impl, metered):
    bundles = [
        record(serial_start=5 * k, serial_end=5 * k + 5, metered_wh=metered) for k in range(70)
    ]
    others = [
        record(device=d, serial_start=10**4 + d, serial_end=10**4 + d + 1) for d in range(1, 200)
    ]
    far = [record(device=2**31 - 1, serial_start=10**6, serial_end=10**6 + 1)]
    for recs in (bundles + others, bundles[::-1] + others, others + bundles[::-1] + far):
        assert run(impl, recs) == oracle(recs)


@pytest.mark.parametrize("impl", IMPLS)
def test_keys_wider_than_64_bits(impl):
    # devices and starts at both ends of their ranges: (device, hour, second) needs ~97 bits
    lo = (I64_MIN // 3600 + 1) * 3600
    hi = (I64_MAX // 3600 - 1) * 3600
    big = {"capacity_w": 10**6}
    recs = [
        record(
            device=2**31 - 1,
            interval_start=lo,
            interval_end=lo + 3600,
            serial_start=0,
            serial_end=10,
            **big,
        ),
        record(
            device=-(2**31),
            interval_start=hi,
            interval_end=hi + 3600,
            serial_start=10,
            serial_end=20,
            **big,
        ),
        record(
            device=-(2**31),
            interval_start=lo,
            interval_end=lo + 900,
            serial_start=20,
            serial_end=30,
            **big,
        ),
        record(
            device=-(2**31),
            interval_start=lo + 1800,
            interval_end=lo + 3600,
            serial_start=25,
            serial_end=40,
            **big,
        ),
        record(
            device=2**31 - 1,
            interval_start=lo,
            interval_end=lo + 1800,
            serial_start=100,
            serial_end=110,
            **big,
        ),
    ]
    for perm in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 3, 4, 0, 1]):
        batch_ = [recs[i] for i in perm]
        assert run(impl, batch_) == oracle(batch_)
    # serial ranges across all of int64, in no useful order: serial and row do not fit a word
    wide = [
        record(device=1, serial_start=I64_MAX - 10, serial_end=I64_MAX, capacity_w=I64_MAX),
        record(device=0, serial_start=0, serial_end=10),
        record(device=2, serial_start=I64_MAX - 20, serial_end=I64_MAX - 9, capacity_w=I64_MAX),
        record(
            device=0,
            interval_start=HOUR + 3600,
            interval_end=HOUR + 7200,
            serial_start=5,
            serial_end=6,
        ),
        record(device=3, serial_start=100, serial_end=110),
    ]
    for perm in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [1, 2, 3, 4, 0]):
        batch_ = [wide[i] for i in perm]
        assert run(impl, batch_) == oracle(batch_)
