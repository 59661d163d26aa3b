"""Netting kernel: positions sum to zero per currency, settlement instructions settle them in at
most (k - 1) payments, bilateral nets agree with the multilateral ones, int64 overflow is
detected exactly, bad rows are named, and kernel == twin on random and adversarial input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eap._core import netting_py
from eap._core.columns import NettingOverflowError, RowError

try:
    from eap._core import netting as netting_c
except ImportError:  # built with EAP_NO_EXT=1 or without a compiler
    netting_c = None

needs_ext = pytest.mark.skipif(
    netting_c is None, reason="compiled eap._core.netting is not built (EAP_NO_EXT=1?)"
)
IMPLS = [pytest.param(netting_py, id="twin"), pytest.param(netting_c, id="cython", marks=needs_ext)]
PROPERTY = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
I64_MAX = 2**63 - 1


def cols(rows: list[tuple[int, int, int, int]]) -> tuple[np.ndarray, ...]:
    """(payer, payee, amount, currency) rows as the four kernel columns."""
    if not rows:
        return (
            np.empty(0, np.int32),
            np.empty(0, np.int32),
            np.empty(0, np.int64),
            np.empty(0, np.int32),
        )
    p, q, a, c = zip(*rows, strict=True)
    return (
        np.array(p, np.int32),
        np.array(q, np.int32),
        np.array(a, np.int64),
        np.array(c, np.int32),
    )


def apply(net: np.ndarray, payments) -> list[list[int]]:
    """Net positions after the payments are made (exact Python integers)."""
    out = net.astype(object).tolist()
    for p, q, c, a in zip(*(x.tolist() for x in payments), strict=True):
        out[p][c] += a
        out[q][c] -= a
    return out


@pytest.mark.parametrize("impl", IMPLS)
def test_net_positions_small_example(impl):
    # A=0 owes B=1 100, B owes C=2 70, C owes A 50 (currency 0); B owes A 5 in currency 1
    rows = [(0, 1, 100, 0), (1, 2, 70, 0), (2, 0, 50, 0), (1, 0, 5, 1)]
    net = impl.net_positions(*cols(rows), 3, 2)
    assert net.dtype == np.int64
    assert net.tolist() == [[-50, 5], [30, -5], [20, 0]]
    assert net.sum(axis=0).tolist() == [0, 0]
    legs = impl.settlement_instructions(net)
    assert [x.tolist() for x in legs] == [[0, 0, 1], [1, 2, 0], [0, 0, 1], [30, 20, 5]]
    assert apply(net, legs) == [[0, 0]] * 3
    pairs = impl.bilateral(*cols(rows), 3, 2)
    assert [x.tolist() for x in pairs] == [
        [0, 1, 2, 1],
        [1, 0, 0, 2],
        [0, 1, 0, 0],
        [100, 5, 50, 70],
    ]
    gross = np.array([100, 70, 50, 5])
    eff = impl.efficiency(gross, np.array([0, 0, 0, 1]), net)
    # currency 0: 220 gross, 50 still moves; currency 1: nothing nets
    assert eff.tolist() == [1 - 50 / 220, 0.0]


@pytest.mark.parametrize("impl", IMPLS)
def test_bilateral_nets_each_pair(impl):
    rows = [(0, 1, 100, 0), (1, 0, 30, 0), (2, 1, 10, 0), (1, 2, 10, 0), (0, 1, 7, 1), (1, 0, 9, 1)]
    payer, payee, cur, amt = impl.bilateral(*cols(rows), 3, 2)
    # pair (0, 1): 0 pays 70 in currency 0, 1 pays 2 in currency 1; pair (1, 2) cancels out
    assert (payer.tolist(), payee.tolist(), cur.tolist(), amt.tolist()) == (
        [0, 1],
        [1, 0],
        [0, 1],
        [70, 2],
    )
    assert (payer.dtype, payee.dtype, cur.dtype, amt.dtype) == (
        np.int32,
        np.int32,
        np.int32,
        np.int64,
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_net_overflow_is_detected_exactly(impl):
    # party 1 receives 2 * max in currency 1: the net does not fit
    rows = [(0, 1, I64_MAX, 1), (2, 1, I64_MAX, 1), (0, 2, 1, 0)]
    with pytest.raises(NettingOverflowError, match="party 1, currency 1") as err:
        impl.net_positions(*cols(rows), 3, 2)
    assert (err.value.party, err.value.currency) == (1, 1)
    assert isinstance(err.value, OverflowError)
    # the first overflowing cell in party-major order is named: party 0 pays 2 * max too
    with pytest.raises(NettingOverflowError, match="party 0, currency 1"):
        impl.net_positions(*cols([(0, 1, I64_MAX, 1), (0, 2, I64_MAX, 1)]), 3, 2)
    # a sum that leaves int64 on the way but ends inside is exact, whatever the row order
    rows = [(0, 1, I64_MAX, 0), (2, 1, I64_MAX, 0), (1, 2, I64_MAX, 0)]
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        net = impl.net_positions(*cols([rows[i] for i in order]), 3, 1)
        assert net[:, 0].tolist() == [-I64_MAX, I64_MAX, 0]
    # int64 min itself is representable as a net position
    net = impl.net_positions(*cols([(0, 1, I64_MAX, 0), (0, 2, 1, 0)]), 3, 1)
    assert net[:, 0].tolist() == [-(2**63), I64_MAX, 1]


@pytest.mark.parametrize("impl", IMPLS)
def test_bilateral_overflow_is_detected(impl):
    rows = [(3, 2, I64_MAX, 0), (3, 2, 1, 0), (0, 1, 5, 0)]
    with pytest.raises(NettingOverflowError, match="parties 2 and 3, currency 0") as err:
        impl.bilateral(*cols(rows), 4, 1)
    assert (err.value.party, err.value.counterparty, err.value.currency) == (2, 3, 0)
    ok = impl.bilateral(*cols([(3, 2, I64_MAX, 0), (3, 2, I64_MAX, 0), (2, 3, I64_MAX, 0)]), 4, 1)
    assert [x.tolist() for x in ok] == [[3], [2], [0], [I64_MAX]]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("row", "column", "reason"),
    [
        ((-1, 1, 5, 0), "payer", "out of range"),
        ((3, 1, 5, 0), "payer", "out of range"),
        ((0, 3, 5, 0), "payee", "out of range"),
        ((1, 1, 5, 0), "payee", "cannot pay itself"),
        ((0, 1, 0, 0), "amount", "must be positive"),
        ((0, 1, -5, 0), "amount", "must be positive"),
        ((0, 1, 5, 2), "currency", "out of range"),
        ((0, 1, 5, -1), "currency", "out of range"),
    ],
)
def test_bad_rows_name_the_first_one(impl, row, column, reason):
    rows = [(0, 1, 5, 0), row, (2, 2, 0, 9)]
    for fn in (impl.net_positions, impl.bilateral):
        with pytest.raises(RowError, match=f"row 1: {column}: .*{reason}") as err:
            fn(*cols(rows), 3, 2)
        assert (err.value.row, err.value.column) == (1, column)


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_arguments(impl):
    with pytest.raises(ValueError, match="n_parties"):
        impl.net_positions(*cols([]), -1, 1)
    with pytest.raises(ValueError, match="length mismatch"):
        impl.net_positions(np.array([0]), np.array([1, 0]), np.array([1]), np.array([0]), 2, 1)
    with pytest.raises(ValueError, match="do not sum to zero"):
        impl.settlement_instructions(np.array([[0, 5], [0, -4]]))
    with pytest.raises(ValueError, match="2-D"):
        impl.settlement_instructions(np.array([1, -1]))
    with pytest.raises(RowError, match="row 1: currency"):
        impl.efficiency(np.array([1, 2]), np.array([0, 1]), np.zeros((2, 1), np.int64))
    with pytest.raises(RowError, match="row 0: amount"):
        impl.efficiency(np.array([0]), np.array([0]), np.zeros((2, 1), np.int64))


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_input(impl):
    net = impl.net_positions(*cols([]), 4, 2)
    assert net.shape == (4, 2) and not net.any()
    assert all(len(x) == 0 for x in impl.settlement_instructions(net))
    assert all(len(x) == 0 for x in impl.bilateral(*cols([]), 4, 2))
    assert impl.efficiency(np.empty(0, np.int64), np.empty(0, np.int32), net).tolist() == [0.0, 0.0]
    assert impl.net_positions(*cols([]), 0, 0).shape == (0, 0)


@pytest.mark.parametrize("impl", IMPLS)
def test_settlement_of_extreme_positions(impl):
    net = np.array([[-(2**63)], [I64_MAX], [1]], dtype=np.int64)
    legs = impl.settlement_instructions(net)
    assert [x.tolist() for x in legs] == [[0, 0], [1, 2], [0, 0], [I64_MAX, 1]]
    assert apply(net, legs) == [[0], [0], [0]]


@pytest.mark.parametrize("impl", IMPLS)
def test_efficiency_with_sums_beyond_int64(impl):
    rows = [(0, 1, I64_MAX, 0), (1, 2, I64_MAX, 0), (2, 0, I64_MAX - 4, 0)]
    net = impl.net_positions(*cols(rows), 3, 1)
    eff = impl.efficiency(cols(rows)[2], cols(rows)[3], net)
    assert eff.tolist() == [1.0 - float(4) / float(3 * I64_MAX - 4)]


# --- properties, kernel against twin -----------------------------------------------------

AMOUNTS = st.one_of(
    st.integers(1, 1000), st.sampled_from([1, I64_MAX, I64_MAX - 1, 2**62, 2**53 + 1])
)


@st.composite
def obligations(draw, max_rows: int = 40):
    parties = draw(st.integers(2, 7))
    currencies = draw(st.integers(1, 3))
    pairs = st.tuples(st.integers(0, parties - 1), st.integers(1, parties - 1)).map(
        lambda t: (t[0], (t[0] + t[1]) % parties)
    )
    rows = draw(
        st.lists(
            st.tuples(pairs, AMOUNTS, st.integers(0, currencies - 1)).map(
                lambda t: (*t[0], *t[1:])
            ),
            max_size=max_rows,
        )
    )
    return rows, parties, currencies


def outcome(fn, *args):
    try:
        result = fn(*args)
    except (ValueError, OverflowError) as exc:
        return type(exc), str(exc)
    if isinstance(result, tuple):
        return tuple((x.dtype.str, x.tolist()) for x in result)
    return result.dtype.str, result.tolist()


@pytest.mark.parametrize("impl", IMPLS)
@PROPERTY
@given(obligations())
def test_netting_invariants(impl, case):
    rows, parties, currencies = case
    try:
        net = impl.net_positions(*cols(rows), parties, currencies)
    except NettingOverflowError:
        exact = np.zeros((parties, currencies), dtype=object)
        for p, q, a, c in rows:
            exact[p, c] -= a
            exact[q, c] += a
        assert any(not -(2**63) <= v <= I64_MAX for v in exact.ravel())
        return
    assert not net.sum(axis=0, dtype=object).any()
    legs = impl.settlement_instructions(net)
    assert apply(net, legs) == [[0] * currencies] * parties
    assert len(legs) == 4 and (legs[3] > 0).all()
    for c in range(currencies):
        k = int(np.count_nonzero(net[:, c]))
        assert np.count_nonzero(legs[2] == c) <= max(k - 1, 0) <= parties - 1
    # paying the bilateral nets moves every party to the same multilateral position
    try:
        pairs = impl.bilateral(*cols(rows), parties, currencies)
    except NettingOverflowError:
        return
    assert apply(np.zeros_like(net), pairs) == [[-v for v in row] for row in net.tolist()]
    eff = impl.efficiency(cols(rows)[2], cols(rows)[3], net)
    assert ((eff >= 0.0) & (eff <= 1.0)).all()


@needs_ext
@PROPERTY
@given(obligations(), st.integers(0, 9))
def test_kernel_matches_twin(case, corrupt):
    rows, parties, currencies = case
    if rows and corrupt < 3:  # sometimes a bad row somewhere
        i = corrupt % len(rows)
        rows[i] = (rows[i][0], rows[i][0], 0, currencies)
    args = (*cols(rows), parties, currencies)
    for name in ("net_positions", "bilateral"):
        assert outcome(getattr(netting_c, name), *args) == outcome(getattr(netting_py, name), *args)
    net = outcome(netting_py.net_positions, *args)
    if isinstance(net[1], list):
        matrix = np.array(net[1], dtype=np.int64).reshape(parties, currencies)
        assert outcome(netting_c.settlement_instructions, matrix) == outcome(
            netting_py.settlement_instructions, matrix
        )
        a, c = args[2], args[3]
        assert outcome(netting_c.efficiency, a, c, matrix) == outcome(
            netting_py.efficiency, a, c, matrix
        )


@needs_ext
@PROPERTY
@given(
    st.lists(st.integers(-(2**63), I64_MAX), min_size=1, max_size=12),
    st.integers(1, 3),
)
def test_settlement_kernel_matches_twin_on_any_matrix(values, currencies):
    n = len(values) // currencies * currencies or currencies
    arr = np.resize(np.array(values, dtype=np.int64), n).reshape(-1, currencies)
    got = outcome(netting_c.settlement_instructions, arr)
    assert got == outcome(netting_py.settlement_instructions, arr)


def _fuzz(rounds: int) -> None:
    rng = np.random.default_rng(99)
    for _ in range(rounds):
        n, parties, currencies = (
            int(rng.integers(0, 5000)),
            int(rng.integers(2, 300)),
            int(rng.integers(1, 5)),
        )
        p = rng.integers(0, parties, n)
        q = (p + rng.integers(1, parties, n)) % parties
        big = rng.random(n) < 0.01
        a = np.where(big, rng.integers(2**61, I64_MAX, n), rng.integers(1, 10**9, n))
        c = rng.integers(0, currencies, n)
        args = (p, q, a, c, parties, currencies)
        for name in ("net_positions", "bilateral"):
            assert outcome(getattr(netting_c, name), *args) == outcome(
                getattr(netting_py, name), *args
            )


@needs_ext
def test_fuzz_kernel_matches_twin_bounded():
    _fuzz(rounds=15)


@needs_ext
@pytest.mark.slow
def test_fuzz_kernel_matches_twin_long():
    _fuzz(rounds=500)
