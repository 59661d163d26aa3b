"""Multilateral and bilateral netting of payment obligations (compiled kernel; twin:
``netting_py``, which also states the definitions).

Exact arithmetic without 128-bit integer types: each sum is kept as an int64 that wraps plus
a count of wraps (``carry``), so the true value is ``value + carry * 2**64``; a result fits
int64 exactly when its carry is zero.
"""

from libc.stdint cimport INT64_MAX, INT64_MIN, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.math cimport ldexp

import numpy as np

from eap._core.columns import (
    NettingOverflowError,
    RowError,
    amount_problem,
    check_count,
    columns,
    matrix,
    obligation_columns,
    obligation_problem,
)
from eap._core.scratch import scratch

from _radix cimport bit_length, radix_sort


cdef inline void add_exact(int64_t* value, int64_t* carry, int64_t a) noexcept nogil:
    """``value + carry * 2**64 += a`` for ``a > 0``."""
    if value[0] > INT64_MAX - a:
        carry[0] += 1
    value[0] = <int64_t>(<uint64_t>value[0] + <uint64_t>a)


cdef inline void sub_exact(int64_t* value, int64_t* carry, int64_t a) noexcept nogil:
    """``value + carry * 2**64 -= a`` for ``a > 0``."""
    if value[0] < INT64_MIN + a:
        carry[0] -= 1
    value[0] = <int64_t>(<uint64_t>value[0] - <uint64_t>a)


cdef inline double u128_to_double(uint64_t hi, uint64_t lo) noexcept nogil:
    """``hi * 2**64 + lo`` rounded once to the nearest double (as Python's ``float(int)``)."""
    cdef int shift
    cdef uint64_t top
    cdef bint sticky
    if hi == 0:
        return <double>lo
    shift = bit_length(hi)
    if shift == 64:
        top = hi
        sticky = lo != 0
    else:
        top = (hi << (64 - shift)) | (lo >> shift)
        sticky = (lo & (((<uint64_t>1) << shift) - 1)) != 0
    # the 64-bit ``top`` loses 11 bits to the 53-bit mantissa; a dropped low part that is
    # nonzero only has to make the discarded bits nonzero, which setting bit 0 does
    return ldexp(<double>(top | sticky), shift)


cdef Py_ssize_t first_bad_row(size_t n, const int32_t* payer, const int32_t* payee,
                              const int64_t* amount, const int32_t* currency, int64_t n_parties,
                              int64_t n_currencies) noexcept nogil:
    cdef size_t i
    for i in range(n):
        if (payer[i] < 0 or payer[i] >= n_parties or payee[i] < 0 or payee[i] >= n_parties
                or payer[i] == payee[i] or amount[i] <= 0 or currency[i] < 0
                or currency[i] >= n_currencies):
            return <Py_ssize_t>i
    return -1


def _obligations(payer, payee, amount, currency, n_parties, n_currencies):
    """Checked columns and counts; raises the twin's errors for bad rows."""
    parties = check_count("n_parties", n_parties)
    currencies = check_count("n_currencies", n_currencies)
    cols, n = obligation_columns(payer, payee, amount, currency)
    cdef const int32_t[::1] p = cols[0]
    cdef const int32_t[::1] q = cols[1]
    cdef const int64_t[::1] a = cols[2]
    cdef const int32_t[::1] c = cols[3]
    cdef Py_ssize_t bad = -1
    cdef size_t rows = n
    cdef int64_t np_ = parties, nc = currencies
    if rows:
        with nogil:
            bad = first_bad_row(rows, &p[0], &q[0], &a[0], &c[0], np_, nc)
    if bad >= 0:
        row = [int(col[bad]) for col in cols]
        raise RowError(bad, *obligation_problem(*row, parties, currencies))
    return cols, n, parties, currencies


def net_positions(payer, payee, amount, currency, n_parties, n_currencies):
    """Net position of every party in every currency: ``(n_parties, n_currencies)`` int64.

    See ``eap._core.netting_py.net_positions`` for the contract.
    """
    cols, n, parties, currencies = _obligations(payer, payee, amount, currency, n_parties,
                                                n_currencies)
    out = np.zeros((parties, currencies), dtype=np.int64)
    cdef size_t cells = parties * currencies
    if n == 0 or cells == 0:
        return out
    cdef const int32_t[::1] p = cols[0]
    cdef const int32_t[::1] q = cols[1]
    cdef const int64_t[::1] a = cols[2]
    cdef const int32_t[::1] c = cols[3]
    cdef int64_t[:, ::1] net = out
    cdef int64_t* value = &net[0, 0]
    cdef int64_t* carry = <int64_t*>calloc(cells, sizeof(int64_t))
    cdef size_t i, k, rows = n
    cdef int64_t nc = currencies
    cdef Py_ssize_t bad = -1
    if carry == NULL:
        raise MemoryError()
    with nogil:
        for i in range(rows):
            k = <size_t>p[i] * nc + c[i]
            sub_exact(&value[k], &carry[k], a[i])
            k = <size_t>q[i] * nc + c[i]
            add_exact(&value[k], &carry[k], a[i])
        for k in range(cells):
            if carry[k] != 0:
                bad = <Py_ssize_t>k
                break
    free(carry)
    if bad >= 0:
        raise NettingOverflowError(bad // currencies, bad % currencies)
    return out


cdef Py_ssize_t net_pairs(size_t n, const int32_t* payer, const int32_t* payee,
                          const int64_t* amount, const int32_t* currency, const uint32_t* idx,
                          int32_t* out_payer, int32_t* out_payee, int32_t* out_currency,
                          int64_t* out_amount, size_t* count) noexcept nogil:
    """Sweep rows ordered by (low party, high party, currency); returns the first sorted row
    of a pair whose net does not fit, or -1."""
    cdef size_t k = 0, r, m = 0
    cdef uint32_t i
    cdef int32_t lo, hi, cur
    cdef int64_t value, carry
    while k < n:
        i = idx[k]
        lo = payer[i] if payer[i] < payee[i] else payee[i]
        hi = payee[i] if payer[i] < payee[i] else payer[i]
        cur = currency[i]
        value = 0
        carry = 0
        r = k
        while r < n:
            i = idx[r]
            if currency[i] != cur or not (
                    (payer[i] == lo and payee[i] == hi) or (payer[i] == hi and payee[i] == lo)):
                break
            if payer[i] == lo:
                add_exact(&value, &carry, amount[i])
            else:
                sub_exact(&value, &carry, amount[i])
            r += 1
        if carry != 0 or value == INT64_MIN:
            return <Py_ssize_t>idx[k]
        if value != 0:
            out_payer[m] = lo if value > 0 else hi
            out_payee[m] = hi if value > 0 else lo
            out_currency[m] = cur
            out_amount[m] = value if value > 0 else -value
            m += 1
        k = r
    count[0] = m
    return -1


cdef int sort_pairs(size_t n, const int32_t* payer, const int32_t* payee,
                    const int32_t* currency, uint32_t* idx, uint64_t* keys, uint32_t* ibuf,
                    uint64_t* kbuf) noexcept nogil:
    """Order ``idx`` by (low party, high party, currency)."""
    cdef size_t i
    cdef int32_t pmax = 0, cmax = 0
    cdef int pb, cb
    cdef uint64_t lo, hi
    for i in range(n):
        idx[i] = <uint32_t>i
        if payer[i] > pmax:
            pmax = payer[i]
        if payee[i] > pmax:
            pmax = payee[i]
        if currency[i] > cmax:
            cmax = currency[i]
    pb = bit_length(<uint64_t>pmax)
    cb = bit_length(<uint64_t>cmax)
    if 2 * pb + cb <= 64:
        for i in range(n):
            lo = <uint64_t>(payer[i] if payer[i] < payee[i] else payee[i])
            hi = <uint64_t>(payee[i] if payer[i] < payee[i] else payer[i])
            keys[i] = (lo << (pb + cb)) | (hi << cb) | <uint64_t>currency[i]
        return radix_sort(keys, idx, kbuf, ibuf, n)
    for i in range(n):
        hi = <uint64_t>(payee[i] if payer[i] < payee[i] else payer[i])
        keys[i] = (hi << cb) | <uint64_t>currency[i]
    if radix_sort(keys, idx, kbuf, ibuf, n) < 0:
        return -1
    for i in range(n):
        keys[i] = <uint64_t>(payer[idx[i]] if payer[idx[i]] < payee[idx[i]] else payee[idx[i]])
    return radix_sort(keys, idx, kbuf, ibuf, n)


def bilateral(payer, payee, amount, currency, n_parties, n_currencies):
    """Net every unordered pair of parties per currency into at most one payment.

    See ``eap._core.netting_py.bilateral`` for the contract.
    """
    cols, n, parties, currencies = _obligations(payer, payee, amount, currency, n_parties,
                                                n_currencies)
    cdef size_t rows = n, count = 0
    out_p = np.empty(rows, dtype=np.int32)
    out_q = np.empty(rows, dtype=np.int32)
    out_c = np.empty(rows, dtype=np.int32)
    out_a = np.empty(rows, dtype=np.int64)
    if rows == 0:
        return out_p, out_q, out_c, out_a
    cdef const int32_t[::1] p = cols[0]
    cdef const int32_t[::1] q = cols[1]
    cdef const int64_t[::1] a = cols[2]
    cdef const int32_t[::1] c = cols[3]
    cdef int32_t[::1] op = out_p
    cdef int32_t[::1] oq = out_q
    cdef int32_t[::1] oc = out_c
    cdef int64_t[::1] oa = out_a
    cdef uint8_t[::1] buf = scratch(24 * rows + 64)
    cdef char* base = <char*>&buf[0]
    cdef uint64_t* keys = <uint64_t*>base
    cdef uint64_t* kbuf = <uint64_t*>(base + 8 * rows)
    cdef uint32_t* idx = <uint32_t*>(base + 16 * rows)
    cdef uint32_t* ibuf = <uint32_t*>(base + 20 * rows)
    cdef int rc
    cdef Py_ssize_t bad = -1
    with nogil:
        rc = sort_pairs(rows, &p[0], &q[0], &c[0], idx, keys, ibuf, kbuf)
        if rc == 0:
            bad = net_pairs(rows, &p[0], &q[0], &a[0], &c[0], idx, &op[0], &oq[0], &oc[0],
                            &oa[0], &count)
    if rc < 0:
        raise MemoryError()
    if bad >= 0:
        lo, hi = sorted((int(p[bad]), int(q[bad])))
        raise NettingOverflowError(lo, int(c[bad]), hi)
    return out_p[:count].copy(), out_q[:count].copy(), out_c[:count].copy(), out_a[:count].copy()


cdef Py_ssize_t settle(const int64_t* net, size_t parties, size_t currencies, int32_t* out_payer,
                       int32_t* out_payee, int32_t* out_currency, int64_t* out_amount,
                       size_t* count) noexcept nogil:
    """Greedy debtor/creditor matching per currency; returns the first currency whose
    positions do not sum to zero, or -1."""
    cdef size_t c, i, j, m = 0
    cdef uint64_t owed, due, pay
    for c in range(currencies):
        i = 0
        j = 0
        while i < parties and net[i * currencies + c] >= 0:
            i += 1
        while j < parties and net[j * currencies + c] <= 0:
            j += 1
        owed = (<uint64_t>0 - <uint64_t>net[i * currencies + c]) if i < parties else 0
        due = <uint64_t>net[j * currencies + c] if j < parties else 0
        while i < parties and j < parties:
            pay = owed if owed < due else due
            out_payer[m] = <int32_t>i
            out_payee[m] = <int32_t>j
            out_currency[m] = <int32_t>c
            out_amount[m] = <int64_t>pay
            m += 1
            owed -= pay
            due -= pay
            if owed == 0:
                i += 1
                while i < parties and net[i * currencies + c] >= 0:
                    i += 1
                owed = (<uint64_t>0 - <uint64_t>net[i * currencies + c]) if i < parties else 0
            if due == 0:
                j += 1
                while j < parties and net[j * currencies + c] <= 0:
                    j += 1
                due = <uint64_t>net[j * currencies + c] if j < parties else 0
        if i < parties or j < parties:
            return <Py_ssize_t>c
    count[0] = m
    return -1


def settlement_instructions(net):
    """Payments that settle every net position, at most (k - 1) per currency.

    See ``eap._core.netting_py.settlement_instructions`` for the contract.
    """
    arr = matrix("net", net)
    cdef size_t parties = arr.shape[0], currencies = arr.shape[1]
    cdef size_t cap = <size_t>np.count_nonzero(arr), count = 0
    out_p = np.empty(cap, dtype=np.int32)
    out_q = np.empty(cap, dtype=np.int32)
    out_c = np.empty(cap, dtype=np.int32)
    out_a = np.empty(cap, dtype=np.int64)
    if cap == 0:
        return out_p, out_q, out_c, out_a
    cdef const int64_t[:, ::1] v = arr
    cdef int32_t[::1] op = out_p
    cdef int32_t[::1] oq = out_q
    cdef int32_t[::1] oc = out_c
    cdef int64_t[::1] oa = out_a
    cdef Py_ssize_t bad
    with nogil:
        bad = settle(&v[0, 0], parties, currencies, &op[0], &oq[0], &oc[0], &oa[0], &count)
    if bad >= 0:
        raise ValueError(f"net positions of currency {bad} do not sum to zero")
    return out_p[:count].copy(), out_q[:count].copy(), out_c[:count].copy(), out_a[:count].copy()


def efficiency(amount, currency, net):
    """Share of the gross obligations that netting removes, per currency: float64 array.

    See ``eap._core.netting_py.efficiency`` for the definition.
    """
    arr = matrix("net", net)
    cols, n = columns((("amount", amount, np.int64), ("currency", currency, np.int32)))
    cdef size_t parties = arr.shape[0], currencies = arr.shape[1], rows = n, i, k
    out = np.zeros(currencies, dtype=np.float64)
    if currencies == 0:
        if rows:
            raise RowError(0, *amount_problem(int(cols[0][0]), int(cols[1][0]), 0))
        return out
    cdef const int64_t[::1] a = cols[0]
    cdef const int32_t[::1] c = cols[1]
    cdef const int64_t[:, ::1] v = arr
    cdef double[::1] o = out
    cdef uint64_t* sums = <uint64_t*>calloc(4 * currencies, sizeof(uint64_t))
    cdef uint64_t lo
    cdef Py_ssize_t bad = -1
    if sums == NULL:
        raise MemoryError()
    # sums[4c .. 4c+3] = gross (lo, hi), settled (lo, hi)
    with nogil:
        for i in range(rows):
            if a[i] <= 0 or c[i] < 0 or <size_t>c[i] >= currencies:
                bad = <Py_ssize_t>i
                break
            k = 4 * <size_t>c[i]
            lo = sums[k] + <uint64_t>a[i]
            sums[k + 1] += lo < sums[k]
            sums[k] = lo
        if bad < 0:
            for i in range(parties):
                for k in range(currencies):
                    if v[i, k] > 0:
                        lo = sums[4 * k + 2] + <uint64_t>v[i, k]
                        sums[4 * k + 3] += lo < sums[4 * k + 2]
                        sums[4 * k + 2] = lo
            for k in range(currencies):
                if sums[4 * k] or sums[4 * k + 1]:
                    o[k] = 1.0 - u128_to_double(sums[4 * k + 3], sums[4 * k + 2]) / u128_to_double(
                        sums[4 * k + 1], sums[4 * k])
    free(sums)
    if bad >= 0:
        raise RowError(bad, *amount_problem(int(a[bad]), int(c[bad]), currencies))
    return out
