"""The one facade over ``eap._core``: columnar validation, hashing/Merkle and netting.

Nothing else in the node imports ``eap._core``.  At import this module loads the compiled
Cython kernels; when they are missing (a build with ``EAP_NO_EXT=1``, no compiler) or when
``EAP_PURE_PYTHON=1`` is set, it falls back to the pure-Python twins, which give the same
results much more slowly, and says so once per process with a ``RuntimeWarning`` and a log
record.  :data:`backend` tells which one runs.

The functions here own what a caller sees: the kernels' ``ValueError``/``OverflowError``
become :class:`~eap.node.errors.InvalidArgument` / :class:`~eap.node.errors.OutOfRange` with
field violations, and every call is an OpenTelemetry span (``eap.kernels.<function>``) with
the backend and the row count as attributes.  Column layouts, rule codes, the hash layout and
the netting definitions are in ``docs/core.md``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from opentelemetry import trace

from eap.node.errors import FieldViolation, InvalidArgument, OutOfRange

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

#: Environment variable that forces the pure-Python twins when set to 1.
PURE_PYTHON_ENV = "EAP_PURE_PYTHON"


def _load() -> tuple[str, Any, Any, Any, Any, Any]:
    from eap._core import codes, columns

    reason = None
    if os.environ.get(PURE_PYTHON_ENV, "").strip().lower() in ("1", "true", "yes"):
        reason = f"{PURE_PYTHON_ENV} is set"
    else:
        try:
            from eap._core import merkle, netting, validate

            return "cython", codes, columns, validate, merkle, netting
        except ImportError as exc:
            reason = f"compiled kernels are not built ({exc})"
    from eap._core import merkle_py, netting_py, validate_py

    message = (
        f"eap._core: running the pure-Python kernels because {reason}; results are the same "
        "but far slower (build the extension: pip install -e .)"
    )
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    logger.warning(message)
    return "python", codes, columns, validate_py, merkle_py, netting_py


backend, _codes, _columns, _validate, _merkle, _netting = _load()
"""``"cython"`` when the compiled kernels run, ``"python"`` when the twins do."""

#: ``RULE_NAMES[code]`` is the name of validation rule ``code`` (0 is ``"OK"``).
RULE_NAMES: tuple[str, ...] = _codes.RULE_NAMES
#: One sentence per rule, same index as :data:`RULE_NAMES`.
RULE_DESCRIPTIONS: tuple[str, ...] = _codes.RULE_DESCRIPTIONS
#: Canonical dtype of every record column, by name.
RECORD_DTYPES: dict[str, np.dtype[Any]] = _columns.RECORD_DTYPES

RowError = _columns.RowError
NettingOverflowError = _columns.NettingOverflowError


class Payments(NamedTuple):
    """Payments as columns: ``payer`` pays ``payee`` ``amount`` minor units of ``currency``."""

    payer: npt.NDArray[np.int32]
    payee: npt.NDArray[np.int32]
    currency: npt.NDArray[np.int32]
    amount: npt.NDArray[np.int64]


@contextmanager
def _span(name: str, rows: int | None, field: str) -> Iterator[None]:
    """A span around one kernel call that maps the kernels' errors onto the node's."""
    with _tracer.start_as_current_span(f"eap.kernels.{name}") as span:
        span.set_attribute("eap.kernels.backend", backend)
        if rows is not None:
            span.set_attribute("eap.kernels.rows", rows)
        try:
            yield
        except RowError as exc:
            violation = FieldViolation(f"{field}[{exc.row}].{exc.column}", exc.reason)
            raise InvalidArgument(f"{name}: {exc}", [violation]) from exc
        except NettingOverflowError as exc:
            raise OutOfRange(f"{name}: {exc}") from exc
        except IndexError as exc:
            raise InvalidArgument(f"{name}: {exc}", [FieldViolation("index", str(exc))]) from exc
        except (ValueError, TypeError) as exc:
            raise InvalidArgument(f"{name}: {exc}", [FieldViolation(field, str(exc))]) from exc


def _rows(values: Any) -> int | None:
    try:
        return len(values)
    except TypeError:
        return None


# --- validation -------------------------------------------------------------------------------

#: The record columns :func:`validate` reads, in kernel order.
VALIDATED_COLUMNS = (
    "serial_start",
    "serial_end",
    "device",
    "interval_start",
    "interval_end",
    "source",
    "technology",
    "renewable_ppm",
    "carbon_mg",
)
#: The record columns :func:`leaf_hashes` reads, in kernel order.
HASHED_COLUMNS = (*VALIDATED_COLUMNS, "zone", "owner")


def _pick(columns: Mapping[str, npt.ArrayLike], names: Sequence[str]) -> list[npt.ArrayLike]:
    missing = [name for name in names if name not in columns]
    if missing:
        raise InvalidArgument(
            "record columns missing",
            [FieldViolation(f"records.{m}", "column is required") for m in missing],
        )
    return [columns[name] for name in names]


def validate(
    columns: Mapping[str, npt.ArrayLike],
    *,
    capacity_w: npt.ArrayLike,
    metered_wh: npt.ArrayLike | None = None,
) -> npt.NDArray[np.uint8]:
    """Rule code of every record of a batch (0 = OK, else ``RULE_NAMES[code]``).

    ``columns`` maps the canonical column names (:data:`VALIDATED_COLUMNS`; others are
    ignored) to 1-D integer arrays of one length, in the canonical dtypes or any whose values
    fit them.  ``capacity_w`` is each record's device capacity in W; ``metered_wh`` the
    metered Wh of each record's device-interval, negative (-1) or None to skip rule 12.

    Raises:
        InvalidArgument: a missing column, columns of different lengths, or values that do not
            fit their dtype.
    """
    cols = _pick(columns, VALIDATED_COLUMNS)
    n = _rows(cols[0])
    if metered_wh is None:
        metered_wh = np.full(n or 0, -1, dtype=np.int64)
    with _span("validate", n, "records"):
        return _validate.validate(*cols, capacity_w, metered_wh)


def violations(
    codes: npt.ArrayLike, *, field: str = "records", limit: int | None = 100
) -> list[FieldViolation]:
    """One ``FieldViolation(f"{field}[{i}]", "<RULE_NAME>: <description>")`` per bad record,
    the first ``limit`` of them (all when ``limit`` is None)."""
    arr = np.asarray(codes)
    bad = np.flatnonzero(arr)
    if limit is not None:
        bad = bad[:limit]
    return [
        FieldViolation(f"{field}[{i}]", f"{RULE_NAMES[c]}: {RULE_DESCRIPTIONS[c]}")
        for i, c in zip(bad.tolist(), arr[bad].tolist(), strict=True)
    ]


def raise_for_codes(
    codes: npt.ArrayLike,
    message: str = "records break the record rules",
    *,
    field: str = "records",
    limit: int | None = 100,
) -> None:
    """Raise :class:`InvalidArgument` naming the bad records if any code is not OK.

    The message gets the count of bad records appended; the violations list the first
    ``limit`` of them, as :func:`violations`.
    """
    arr = np.asarray(codes)
    count = int(np.count_nonzero(arr))
    if count:
        raise InvalidArgument(
            f"{message} ({count} of {arr.size} {field})", violations(arr, field=field, limit=limit)
        )


# --- hashing and Merkle trees -----------------------------------------------------------------


def dictionary_digests(entries: Iterable[str | bytes]) -> npt.NDArray[np.uint8]:
    """``SHA256(0x02 || utf8(entry))`` of each string dictionary entry: ``(m, 32)`` uint8."""
    items = list(entries)
    with _span("dictionary_digests", len(items), "entries"):
        return _merkle.dictionary_digests(items)


def _digests(name: str, dictionary: Sequence[str | bytes] | npt.NDArray[np.uint8]) -> Any:
    if isinstance(dictionary, np.ndarray) and dictionary.ndim == 2:
        return dictionary
    with _span("dictionary_digests", _rows(dictionary), name):
        return _merkle.dictionary_digests(dictionary)


def leaf_hashes(
    columns: Mapping[str, npt.ArrayLike],
    device_dict: Sequence[str | bytes] | npt.NDArray[np.uint8],
    zone_dict: Sequence[str | bytes] | npt.NDArray[np.uint8],
    owner_dict: Sequence[str | bytes] | npt.NDArray[np.uint8],
) -> npt.NDArray[np.uint8]:
    """Leaf hash of every record: ``(n, 32)`` uint8.

    ``columns`` maps the canonical names (:data:`HASHED_COLUMNS`) to arrays; its ``device``,
    ``zone`` and ``owner`` columns index the three string dictionaries, given as their
    entries (``str``/``bytes``) or as their :func:`dictionary_digests` (reuse those when one
    dictionary serves many batches).

    Raises:
        InvalidArgument: bad or missing columns, or an index outside its dictionary.
    """
    cols = _pick(columns, HASHED_COLUMNS)
    digests = [
        _digests(name, d)
        for name, d in (
            ("device_dict", device_dict),
            ("zone_dict", zone_dict),
            ("owner_dict", owner_dict),
        )
    ]
    with _span("leaf_hashes", _rows(cols[0]), "records"):
        return _merkle.leaf_hashes(*cols, *digests)


def lineage_hashes(parents: npt.ArrayLike | Sequence[bytes], ids: Sequence[str]) -> list[str]:
    """Lineage hashes, hex: ``SHA-256(0x03 || parent || utf8(id))`` per row, where ``parent``
    is a batch leaf (issued bundles) or the parent's lineage (see ``provenance.lineage``)."""
    with _span("lineage_hashes", _rows(parents), "bundles"):
        return _merkle.lineage_hashes(parents, ids)


def issued_lineages(
    leaves: npt.ArrayLike, issuer: str, serial_start: npt.ArrayLike, serial_end: npt.ArrayLike
) -> npt.NDArray[np.uint8]:
    """Lineage hashes of a batch's records, ``(n, 32)`` uint8: :func:`lineage_hashes` of
    each leaf and its bundle id ``issuer/start-end``, without building the ids."""
    with _span("issued_lineages", _rows(leaves), "bundles"):
        return _merkle.issued_lineages(leaves, issuer, serial_start, serial_end)


def merkle_root(leaves: npt.ArrayLike | Sequence[bytes]) -> bytes:
    """RFC 6962 root over leaf hashes (``(n, 32)`` uint8 or 32-byte ``bytes``)."""
    with _span("merkle_root", _rows(leaves), "leaves"):
        return _merkle.merkle_root(leaves)


def inclusion_proof(leaves: npt.ArrayLike | Sequence[bytes], index: int) -> list[bytes]:
    """Audit path of leaf ``index`` (sibling hashes from the leaf up to the root).

    Raises:
        InvalidArgument: ``index`` is outside the leaves.
    """
    with _span("inclusion_proof", _rows(leaves), "leaves"):
        return _merkle.inclusion_proof(leaves, index)


def verify_inclusion(
    leaf_hash: bytes, index: int, n: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """True iff ``proof`` places ``leaf_hash`` at ``index`` of an ``n``-leaf tree with ``root``."""
    with _span("verify_inclusion", None, "proof"):
        return bool(_merkle.verify_inclusion(leaf_hash, index, n, proof, root))


# --- netting ------------------------------------------------------------------------------


def net_positions(
    payer: npt.ArrayLike,
    payee: npt.ArrayLike,
    amount: npt.ArrayLike,
    currency: npt.ArrayLike,
    n_parties: int,
    n_currencies: int,
) -> npt.NDArray[np.int64]:
    """Receivable minus payable of every party per currency: ``(n_parties, n_currencies)``.

    Raises:
        InvalidArgument: a bad obligation row (index out of range, payer == payee, amount
            not positive), named ``obligations[i].<column>``.
        OutOfRange: a net position does not fit int64.
    """
    with _span("net_positions", _rows(payer), "obligations"):
        return _netting.net_positions(payer, payee, amount, currency, n_parties, n_currencies)


def bilateral(
    payer: npt.ArrayLike,
    payee: npt.ArrayLike,
    amount: npt.ArrayLike,
    currency: npt.ArrayLike,
    n_parties: int,
    n_currencies: int,
) -> Payments:
    """One payment per pair of parties and currency whose obligations do not cancel out.

    Raises:
        InvalidArgument: a bad obligation row.
        OutOfRange: a pair's net does not fit int64.
    """
    with _span("bilateral", _rows(payer), "obligations"):
        return Payments(
            *_netting.bilateral(payer, payee, amount, currency, n_parties, n_currencies)
        )


def settlement_instructions(net: npt.ArrayLike) -> Payments:
    """Payments settling every net position, at most (parties with a position - 1) per currency.

    Raises:
        InvalidArgument: ``net`` is not a 2-D integer array or a currency does not sum to 0.
    """
    with _span("settlement_instructions", _rows(net), "net"):
        return Payments(*_netting.settlement_instructions(net))


def efficiency(
    amount: npt.ArrayLike, currency: npt.ArrayLike, net: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Per currency, ``1 - (what still moves after netting) / (gross obligations)``.

    Raises:
        InvalidArgument: an amount is not positive or a currency index is outside ``net``.
    """
    with _span("efficiency", _rows(amount), "obligations"):
        return _netting.efficiency(amount, currency, net)


__all__ = [
    "HASHED_COLUMNS",
    "PURE_PYTHON_ENV",
    "RECORD_DTYPES",
    "RULE_DESCRIPTIONS",
    "RULE_NAMES",
    "VALIDATED_COLUMNS",
    "NettingOverflowError",
    "Payments",
    "RowError",
    "backend",
    "bilateral",
    "dictionary_digests",
    "efficiency",
    "inclusion_proof",
    "issued_lineages",
    "leaf_hashes",
    "merkle_root",
    "net_positions",
    "raise_for_codes",
    "settlement_instructions",
    "validate",
    "verify_inclusion",
    "violations",
]
