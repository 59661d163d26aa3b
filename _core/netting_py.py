"""Multilateral and bilateral netting of payment obligations: the twin of ``netting.pyx``.

An obligation row says ``payer`` owes ``payee`` ``amount`` minor units of ``currency`` (all
indices: parties in ``[0, n_parties)``, currencies in ``[0, n_currencies)``).  Arithmetic is
exact: sums are taken over unbounded integers and a result that does not fit int64 raises
:class:`~eap._core.columns.NettingOverflowError`.  Definitions are in ``docs/core.md``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

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

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _rows(
    payer: Any, payee: Any, amount: Any, currency: Any, n_parties: int, n_currencies: int
) -> tuple[list[tuple[int, int, int, int]], int, int]:
    """Checked obligation rows as tuples, and the two counts."""
    n_parties = check_count("n_parties", n_parties)
    n_currencies = check_count("n_currencies", n_currencies)
    cols, _ = obligation_columns(payer, payee, amount, currency)
    rows = list(zip(*(c.tolist() for c in cols), strict=True))
    for i, row in enumerate(rows):
        problem = obligation_problem(*row, n_parties, n_currencies)
        if problem is not None:
            raise RowError(i, *problem)
    return rows, n_parties, n_currencies


def net_positions(
    payer: Any, payee: Any, amount: Any, currency: Any, n_parties: int, n_currencies: int
) -> np.ndarray:
    """Net position of every party in every currency: receivable minus payable.

    Returns an ``(n_parties, n_currencies)`` int64 array; each column sums to zero.

    Raises:
        RowError: a bad obligation row (the first one; see ``obligation_problem``).
        NettingOverflowError: a net position does not fit int64 (the first such cell in
            party-major order).
    """
    rows, n_parties, n_currencies = _rows(payer, payee, amount, currency, n_parties, n_currencies)
    net = [[0] * n_currencies for _ in range(n_parties)]
    for p, q, a, c in rows:
        net[p][c] -= a
        net[q][c] += a
    for p in range(n_parties):
        for c in range(n_currencies):
            if not INT64_MIN <= net[p][c] <= INT64_MAX:
                raise NettingOverflowError(p, c)
    return np.array(net, dtype=np.int64).reshape(n_parties, n_currencies)


def _payments(
    legs: list[tuple[int, int, int, int]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    payer, payee, cur, amt = zip(*legs, strict=True) if legs else ((), (), (), ())
    return (
        np.array(payer, dtype=np.int32),
        np.array(payee, dtype=np.int32),
        np.array(cur, dtype=np.int32),
        np.array(amt, dtype=np.int64),
    )


def bilateral(
    payer: Any, payee: Any, amount: Any, currency: Any, n_parties: int, n_currencies: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Net every unordered pair of parties per currency into at most one payment.

    Returns arrays ``(payer, payee, currency, amount)`` with one row per pair and currency
    whose obligations do not cancel out, ordered by (lower party, higher party, currency);
    ``amount`` is positive and flows from the net debtor of the pair to the net creditor.

    Raises:
        RowError: a bad obligation row.
        NettingOverflowError: a pair's net amount does not fit int64 (``party`` the lower and
            ``counterparty`` the higher index; first in the order above).
    """
    rows, _, _ = _rows(payer, payee, amount, currency, n_parties, n_currencies)
    pair_net: dict[tuple[int, int, int], int] = defaultdict(int)
    for p, q, a, c in rows:
        lo, hi = min(p, q), max(p, q)
        pair_net[(lo, hi, c)] += a if p == lo else -a
    legs = []
    for (lo, hi, c), total in sorted(pair_net.items()):
        if total == 0:
            continue
        if abs(total) > INT64_MAX:
            raise NettingOverflowError(lo, c, hi)
        legs.append((lo, hi, c, total) if total > 0 else (hi, lo, c, -total))
    return _payments(legs)


def settlement_instructions(net: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Payments that settle every net position, at most (k - 1) per currency.

    ``net`` is an ``(n_parties, n_currencies)`` integer array whose columns sum to zero; k is
    the number of parties with a nonzero position in that currency.  Currency by currency,
    the debtors (ascending party index) pay the creditors (ascending party index) greedily:
    each payment closes at least one of the two positions, and the last one closes both.

    Returns arrays ``(payer, payee, currency, amount)``, ordered by currency, then payment.

    Raises:
        ValueError: ``net`` is not 2-D integer, or a currency's positions do not sum to zero
            (the first such currency).
    """
    arr = matrix("net", net)
    n_currencies = arr.shape[1]
    cols = arr.T.tolist()
    legs = []
    for c in range(n_currencies):
        values = cols[c]
        if sum(values):
            raise ValueError(f"net positions of currency {c} do not sum to zero")
        debtors = [(p, -v) for p, v in enumerate(values) if v < 0]
        creditors = [(p, v) for p, v in enumerate(values) if v > 0]
        i = j = 0
        owed = debtors[0][1] if debtors else 0
        due = creditors[0][1] if creditors else 0
        while i < len(debtors) and j < len(creditors):
            pay = min(owed, due)
            legs.append((debtors[i][0], creditors[j][0], c, pay))
            owed -= pay
            due -= pay
            if owed == 0:
                i += 1
                owed = debtors[i][1] if i < len(debtors) else 0
            if due == 0:
                j += 1
                due = creditors[j][1] if j < len(creditors) else 0
    return _payments(legs)


def efficiency(amount: Any, currency: Any, net: Any) -> np.ndarray:
    """Share of the gross obligations that netting removes, per currency: float64 array.

    ``efficiency[c] = 1 - S / G`` where ``G`` is the sum of ``amount`` over the rows in
    currency ``c`` and ``S = sum over parties of max(net[p, c], 0)`` (equal to half of
    ``sum |net[:, c]|``): what still has to move after netting.  Both sums are exact integers
    rounded once to float64, then divided.  A currency without obligations has 0.0.

    Raises:
        RowError: an amount is not positive or a currency index is outside ``net``'s columns.
    """
    arr = matrix("net", net)
    n_currencies = arr.shape[1]
    cols, _ = columns((("amount", amount, np.int64), ("currency", currency, np.int32)))
    gross = [0] * n_currencies
    for i, (a, c) in enumerate(zip(*(col.tolist() for col in cols), strict=True)):
        problem = amount_problem(a, c, n_currencies)
        if problem is not None:
            raise RowError(i, *problem)
        gross[c] += a
    settled = [sum(v for v in col if v > 0) for col in arr.T.tolist()]
    return np.array(
        [1.0 - float(s) / float(g) if g else 0.0 for s, g in zip(settled, gross, strict=True)],
        dtype=np.float64,
    )
