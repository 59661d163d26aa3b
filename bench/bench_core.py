"""Throughput of the ``eap._core`` kernels against their baselines, measured in one run.

Usage: ``python bench/bench_core.py [--quick]``

For each kernel it prints one table: rows per second of the compiled Cython kernel, of the
pure-Python twin and, where NumPy can do the same job, of a NumPy version, each as a ratio to
the twin measured in the same run (absolute times are noisy on a shared machine, ratios much
less).  Every compared result is checked equal before it is timed.  See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # keep NumPy's BLAS threads from spinning

import numpy as np

from eap._core import merkle_py, netting_py, validate_py
from eap._core.columns import RECORD_DTYPES

try:
    from eap._core import merkle, netting, validate
except ImportError:
    merkle = netting = validate = None  # type: ignore[assignment]

HOUR = 1_700_000_000 - 1_700_000_000 % 3600
VALIDATE_COLUMNS = (
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


def rate(fn: Callable[[], Any], rows: int, budget: float) -> float:
    """Best rows per second of ``fn`` over repeats filling about ``budget`` seconds."""
    fn()
    best = float("inf")
    spent = 0.0
    repeats = 0
    while repeats < 3 or spent < budget:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best = min(best, dt)
        spent += dt
        repeats += 1
        if repeats >= 50:
            break
    return rows / best


def table(title: str, rows: list[tuple[str, str, float]], baseline: float) -> None:
    print(f"\n{title}")
    print(f"  {'implementation':<34} {'input':<26} {'rows/s':>12} {'x twin':>9}")
    for impl, what, r in rows:
        print(f"  {impl:<34} {what:<26} {r:>12,.0f} {r / baseline:>8.1f}x")


# --- validation ---------------------------------------------------------------------------


def record_batch(n: int, order: str, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` valid hourly records: 24 hours of n/24 devices, serials issued in record order.

    ``order``: ``device`` (device-major, as issued per device), ``hour`` (hour-major, as
    issued per metering hour) or ``shuffled``.
    """
    ndev = -(-n // 24)
    dev = np.repeat(np.arange(ndev), 24)[:n]
    hour = np.tile(np.arange(24), ndev)[:n]
    if order == "hour":
        perm = np.lexsort((dev, hour))
        dev, hour = dev[perm], hour[perm]
    wh = rng.integers(1, 5000, n)
    ends = np.cumsum(wh)
    cols = {
        "serial_start": ends - wh,
        "serial_end": ends,
        "device": dev,
        "interval_start": HOUR + hour * 3600,
        "interval_end": HOUR + hour * 3600 + 3600,
        "source": np.ones(n),
        "technology": np.ones(n),
        "renewable_ppm": np.full(n, 1_000_000),
        "carbon_mg": np.full(n, 20_000),
        "capacity_w": np.full(n, 10_000),
        "metered_wh": wh + rng.integers(0, 10, n),
    }
    out = [cols[c].astype(RECORD_DTYPES[c]) for c in VALIDATE_COLUMNS]
    if order == "shuffled":
        perm = rng.permutation(n)
        out = [c[perm] for c in out]
    return out


def numpy_field_rules(ss, se, dev, s, e, src, tech, ren, car, cap, met) -> np.ndarray:
    """Rules 1-9 (the per-record ones) vectorised with NumPy; no cross-record rules."""
    dur = e.astype(np.uint64) - s.astype(np.uint64)  # exact when e > s
    ok_dur = (e > s) & (dur <= 3600)
    d = np.where(ok_dur, dur, 1).astype(np.int64)
    wh = se - ss
    limit = (cap // 3600) * d + ((cap % 3600) * d) // 3600
    conditions = [
        e <= s,
        dur > 3600,
        (3600 % d != 0) | (s % d != 0),
        (ss < 0) | (se <= ss),
        (src == 0) | (src > 12),
        (tech == 0) | (tech > 14),
        ren > 1_000_000,
        car > 2_000_000,
        (cap < 0) | (wh > limit),
    ]
    return np.select(conditions, np.arange(1, 10, dtype=np.uint8), 0).astype(np.uint8)


def bench_validation(quick: bool, budget: float) -> None:
    rng = np.random.default_rng(1)
    small = 10_000
    large = 100_000 if quick else 1_000_000
    batches = {
        (n, order): record_batch(n, order, rng)
        for n in (small, large)
        for order in ("device", "hour", "shuffled")
    }
    twin_cols = batches[(small, "shuffled")]
    twin = rate(lambda: validate_py.validate(*twin_cols), small, budget)
    rows = [("twin (pure Python)", f"{small:,} shuffled", twin)]
    for (n, order), cols in batches.items():
        expected_ok = not np.count_nonzero(numpy_field_rules(*cols))
        assert expected_ok
        if validate is not None:
            np.testing.assert_array_equal(validate.validate(*cols), validate_py.validate(*cols))
            rows.append(
                (
                    "cython, rules 1-12",
                    f"{n:,} {order}",
                    rate(lambda c=cols: validate.validate(*c), n, budget),
                )
            )
    for n in (small, large):
        cols = batches[(n, "shuffled")]
        rows.append(
            (
                "numpy, rules 1-9 only",
                f"{n:,} shuffled",
                rate(lambda c=cols: numpy_field_rules(*c), n, budget),
            )
        )
    broken = [c.copy() for c in batches[(small, "shuffled")]]
    broken[5][::7] = 0  # every 7th record SOURCE_INVALID: the NumPy rules agree with the kernel
    if validate is not None:
        np.testing.assert_array_equal(numpy_field_rules(*broken), validate.validate(*broken))
    table("validate: records/s (rules 1-12 unless noted)", rows, twin)


# --- hashing and Merkle trees -------------------------------------------------------------


def hashing_inputs(n: int, rng: np.random.Generator) -> tuple[list[np.ndarray], list[list[str]]]:
    cols = record_batch(n, "device", rng)[:9]
    zone = rng.integers(0, 4, n).astype(np.int32)
    owner = rng.integers(0, 1000, n).astype(np.int32)
    dicts = [
        [f"dev_{i:026d}" for i in range(int(cols[2].max()) + 1)],
        ["CO-ANT", "ES-CT", "US-CA", "DE-BY"],
        [f"acct_{i:040d}" for i in range(1000)],
    ]
    return [*cols, zone, owner], dicts


def bench_merkle(quick: bool, budget: float) -> None:
    rng = np.random.default_rng(2)
    n = 100_000 if quick else 1_000_000
    cols, dicts = hashing_inputs(n, rng)
    digests = [merkle_py.dictionary_digests(d) for d in dicts]
    small = 20_000
    twin_cols = [c[:small] for c in cols]

    def twin_root() -> bytes:
        return merkle_py.merkle_root(merkle_py.leaf_hashes(*twin_cols, *digests))

    twin = rate(twin_root, small, budget)
    rows = [("twin (hashlib)", f"{small:,} leaves", twin)]
    if merkle is not None:
        assert merkle.merkle_root(merkle.leaf_hashes(*twin_cols, *digests)) == twin_root()
        leaves = merkle.leaf_hashes(*cols, *digests)
        default = merkle._sha256_impl()
        impls = [default] + (["portable"] if default != "portable" else [])
        try:
            for impl in impls:
                merkle._sha256_impl("auto" if impl == default else impl)
                rows += [
                    (
                        f"cython ({impl}): leaves + root",
                        f"{n:,} leaves",
                        rate(
                            lambda: merkle.merkle_root(merkle.leaf_hashes(*cols, *digests)),
                            n,
                            budget,
                        ),
                    ),
                    (
                        f"cython ({impl}): leaf hashes",
                        f"{n:,} leaves",
                        rate(lambda: merkle.leaf_hashes(*cols, *digests), n, budget),
                    ),
                    (
                        f"cython ({impl}): root of leaves",
                        f"{n:,} leaves",
                        rate(lambda: merkle.merkle_root(leaves), n, budget),
                    ),
                ]
        finally:
            merkle._sha256_impl("auto")
    table("leaf hashes + Merkle root: leaves/s (NumPy has no SHA-256)", rows, twin)


# --- netting ------------------------------------------------------------------------------


def bincount_net(payer, payee, amount, currency, parties, currencies) -> np.ndarray:
    """Net positions with float64 ``np.bincount``: fast, exact only while sums stay < 2**53."""
    size = parties * currencies
    w = amount.astype(np.float64)
    recv = np.bincount(payee.astype(np.int64) * currencies + currency, weights=w, minlength=size)
    pay = np.bincount(payer.astype(np.int64) * currencies + currency, weights=w, minlength=size)
    return (recv - pay).reshape(parties, currencies)


def add_at_net(payer, payee, amount, currency, parties, currencies) -> np.ndarray:
    """Net positions with int64 ``np.add.at``: exact until a sum wraps, which goes unseen."""
    net = np.zeros(parties * currencies, dtype=np.int64)
    np.add.at(net, payee.astype(np.int64) * currencies + currency, amount)
    np.subtract.at(net, payer.astype(np.int64) * currencies + currency, amount)
    return net.reshape(parties, currencies)


def bincount_exact_limit() -> int:
    """Smallest k where a float64 ``bincount`` sum of ``2**k`` and ``1`` is no longer exact."""
    for k in range(40, 64):
        got = np.bincount(np.zeros(2, np.int64), weights=np.array([2.0**k, 1.0]))[0]
        if int(got) != 2**k + 1:
            return k
    return 64


def bench_netting(quick: bool, budget: float) -> None:
    rng = np.random.default_rng(3)
    n = 100_000 if quick else 1_000_000
    parties, currencies = 1000, 4
    payer = rng.integers(0, parties, n).astype(np.int32)
    payee = ((payer + rng.integers(1, parties, n)) % parties).astype(np.int32)
    amount = rng.integers(1, 10**7, n)
    currency = rng.integers(0, currencies, n).astype(np.int32)
    args = (payer, payee, amount, currency, parties, currencies)
    small = 50_000
    twin_args = (
        payer[:small],
        payee[:small],
        amount[:small],
        currency[:small],
        parties,
        currencies,
    )

    exact = netting_py.net_positions(*args)
    np.testing.assert_array_equal(bincount_net(*args), exact)
    np.testing.assert_array_equal(add_at_net(*args), exact)
    twin = rate(lambda: netting_py.net_positions(*twin_args), small, budget)
    rows = [("twin (pure Python)", f"{small:,} obligations", twin)]
    if netting is not None:
        np.testing.assert_array_equal(netting.net_positions(*args), exact)
        rows.append(
            (
                "cython (exact, overflow checked)",
                f"{n:,} obligations",
                rate(lambda: netting.net_positions(*args), n, budget),
            )
        )
    rows.append(
        (
            "numpy bincount (float64)",
            f"{n:,} obligations",
            rate(lambda: bincount_net(*args), n, budget),
        )
    )
    rows.append(
        (
            "numpy add.at (int64, wraps)",
            f"{n:,} obligations",
            rate(lambda: add_at_net(*args), n, budget),
        )
    )
    table("net_positions: obligations/s", rows, twin)
    k = bincount_exact_limit()
    big = np.array([2**k, 1])
    wrong = bincount_net(np.array([1, 1]), np.array([0, 0]), big, np.array([0, 0]), 2, 1)[0, 0]
    print(
        f"  np.bincount stops being exact at per-cell sums beyond 2**{k}: "
        f"2**{k} + 1 comes out as {int(wrong)} (off by {2**k + 1 - int(wrong)});"
    )
    print(
        "  np.add.at wraps silently at 2**63; "
        "the kernel and the twin raise NettingOverflowError there."
    )

    twin = rate(lambda: netting_py.bilateral(*twin_args), small, budget)
    rows = [("twin (pure Python)", f"{small:,} obligations", twin)]
    if netting is not None:
        rows.append(
            ("cython", f"{n:,} obligations", rate(lambda: netting.bilateral(*args), n, budget))
        )
    table("bilateral: obligations/s", rows, twin)

    net = exact
    cells = parties * currencies
    twin = rate(lambda: netting_py.settlement_instructions(net), cells, budget)
    rows = [("twin (pure Python)", f"{parties}x{currencies} positions", twin)]
    if netting is not None:
        got = netting.settlement_instructions(net)
        want = netting_py.settlement_instructions(net)
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
        rows.append(
            (
                "cython",
                f"{parties}x{currencies} positions",
                rate(lambda: netting.settlement_instructions(net), cells, budget),
            )
        )
    table("settlement_instructions: net positions/s", rows, twin)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs, shorter timing")
    opts = parser.parse_args(argv)
    budget = 0.1 if opts.quick else 0.2
    sha = merkle._sha256_impl() if merkle is not None else "-"
    print(
        f"eap._core benchmark: Python {sys.version.split()[0]}, NumPy {np.__version__}, "
        f"compiled kernels {'present' if validate is not None else 'ABSENT (twin only)'}, "
        f"SHA-256 {sha}, "
        f"{os.cpu_count()} CPUs; best of repeated runs, ratios against the twin of the same run"
    )
    bench_validation(opts.quick, budget)
    bench_merkle(opts.quick, budget)
    bench_netting(opts.quick, budget)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
