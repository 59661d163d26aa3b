"""Canonical record columns, input coercion and the errors shared by kernels and twins.

Every kernel (compiled or twin) passes its inputs through :func:`column` / :func:`columns`, so
both sides accept the same inputs and reject bad ones with the same exception: any 1-D
integer array-like whose values fit the column's dtype is accepted (a copy is made only when
the dtype or layout differs), anything else raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

#: Canonical dtypes of the record columns (see ``docs/core.md``).
RECORD_DTYPES: dict[str, np.dtype[Any]] = {
    "serial_start": np.dtype(np.int64),
    "serial_end": np.dtype(np.int64),
    "device": np.dtype(np.int32),
    "interval_start": np.dtype(np.int64),
    "interval_end": np.dtype(np.int64),
    "source": np.dtype(np.uint8),
    "technology": np.dtype(np.uint8),
    "renewable_ppm": np.dtype(np.uint32),
    "carbon_mg": np.dtype(np.uint32),
    "zone": np.dtype(np.int32),
    "owner": np.dtype(np.int32),
    "capacity_w": np.dtype(np.int64),
    "metered_wh": np.dtype(np.int64),
}

#: Most rows one kernel call takes (row indices are 32-bit inside the kernels).
MAX_ROWS = 2**32 - 1

DIGEST_SIZE = 32


class RowError(ValueError):
    """A row of a columnar input is bad; ``row`` is the index of the first bad row."""

    def __init__(self, row: int, column: str, reason: str) -> None:
        self.row = row
        self.column = column
        self.reason = reason
        super().__init__(f"row {row}: {column}: {reason}")


class NettingOverflowError(OverflowError):
    """A gross sum of netting left int64; names the first (party, currency) cell it happened in.

    ``counterparty`` is set by bilateral netting, whose sums are per pair of parties.
    """

    def __init__(self, party: int, currency: int, counterparty: int | None = None) -> None:
        self.party = party
        self.currency = currency
        self.counterparty = counterparty
        who = f"party {party}" if counterparty is None else f"parties {party} and {counterparty}"
        super().__init__(f"int64 overflow netting {who}, currency {currency}")


def column(name: str, values: Any, dtype: np.dtype[Any] | type) -> np.ndarray:
    """``values`` as a 1-D C-contiguous array of ``dtype``; ``ValueError`` if it does not fit."""
    dt = np.dtype(dtype)
    arr = np.asarray(values)
    if arr.dtype == dt and arr.ndim == 1:
        return np.ascontiguousarray(arr)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D column, got shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=dt)
    if arr.dtype.kind not in "biu":
        raise ValueError(f"{name}: expected integers, got dtype {arr.dtype}")
    if not np.can_cast(arr.dtype, dt, "safe"):
        info = np.iinfo(dt)
        bad = (arr < info.min) | (arr > info.max)
        if bad.any():
            row = int(np.argmax(bad))
            raise RowError(row, name, f"value {int(arr[row])} does not fit {dt}")
    return arr.astype(dt)


def columns(named: Iterable[tuple[str, Any, np.dtype[Any] | type]]) -> tuple[list[np.ndarray], int]:
    """Coerce several columns that must have one length; returns them and that length."""
    out: list[np.ndarray] = []
    n = -1
    first = ""
    for name, values, dtype in named:
        arr = column(name, values, dtype)
        if n < 0:
            n, first = len(arr), name
        elif len(arr) != n:
            raise ValueError(f"column length mismatch: {first} has {n} rows, {name} has {len(arr)}")
        out.append(arr)
    if n > MAX_ROWS:
        raise ValueError(f"too many rows: {n} > {MAX_ROWS}")
    return out, max(n, 0)


def record_columns(**named: Any) -> tuple[list[np.ndarray], int]:
    """:func:`columns` for canonical record columns, by keyword, in the order given."""
    return columns((name, values, RECORD_DTYPES[name]) for name, values in named.items())


def digest_array(name: str, values: Any) -> np.ndarray:
    """``values`` as a C-contiguous ``(n, 32)`` uint8 array of SHA-256 digests.

    Accepts such an array or a sequence of 32-byte ``bytes``-like objects.
    """
    if isinstance(values, np.ndarray):
        arr = values
    else:
        seq: Sequence[Any] = list(values)
        if any(len(v) != DIGEST_SIZE for v in seq):
            row = next(i for i, v in enumerate(seq) if len(v) != DIGEST_SIZE)
            raise RowError(row, name, f"expected {DIGEST_SIZE} bytes, got {len(seq[row])}")
        arr = np.frombuffer(b"".join(bytes(v) for v in seq), dtype=np.uint8)
        arr = arr.reshape(len(seq), DIGEST_SIZE)
    if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != DIGEST_SIZE:
        raise ValueError(f"{name}: expected a (n, 32) uint8 array, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


def check_count(name: str, value: int) -> int:
    """A non-negative count that fits an int32 index (``n_parties``, ``n_currencies``)."""
    v = int(value)
    if v < 0 or v > 2**31 - 1:
        raise ValueError(f"{name} must be in [0, 2**31 - 1], got {v}")
    return v


def matrix(name: str, values: Any, dtype: np.dtype[Any] | type = np.int64) -> np.ndarray:
    """``values`` as a 2-D C-contiguous array of ``dtype`` (checked like :func:`column`)."""
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {arr.shape}")
    return column(name, arr.reshape(-1), dtype).reshape(arr.shape)


def obligation_problem(
    payer: int, payee: int, amount: int, currency: int, n_parties: int, n_currencies: int
) -> tuple[str, str] | None:
    """What is wrong with one obligation row, as ``(column, reason)``, or None.

    Checked in this order: payer index, payee index, payer == payee, amount > 0, currency
    index.  Kernels and twins both name the first bad row with this.
    """
    if not 0 <= payer < n_parties:
        return "payer", f"party index {payer} out of range [0, {n_parties})"
    if not 0 <= payee < n_parties:
        return "payee", f"party index {payee} out of range [0, {n_parties})"
    if payer == payee:
        return "payee", f"party {payer} cannot pay itself"
    return amount_problem(amount, currency, n_currencies)


def amount_problem(amount: int, currency: int, n_currencies: int) -> tuple[str, str] | None:
    """The amount and currency checks of :func:`obligation_problem` alone."""
    if amount <= 0:
        return "amount", f"amount must be positive, got {amount}"
    if not 0 <= currency < n_currencies:
        return "currency", f"currency index {currency} out of range [0, {n_currencies})"
    return None


def obligation_columns(
    payer: Any, payee: Any, amount: Any, currency: Any
) -> tuple[list[np.ndarray], int]:
    """The four obligation columns in their dtypes (int32, int32, int64, int32)."""
    return columns(
        (
            ("payer", payer, np.int32),
            ("payee", payee, np.int32),
            ("amount", amount, np.int64),
            ("currency", currency, np.int32),
        )
    )
