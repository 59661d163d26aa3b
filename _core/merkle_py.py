"""Record leaf hashes and RFC 6962 Merkle trees: the pure-Python twin of ``merkle.pyx``.

Hash layout (all integers little-endian; see ``docs/core.md``)::

    H(s)  = SHA256(0x02 || utf8(s))                        one per dictionary entry
    leaf  = SHA256(0x00 || serial_start i64 || serial_end i64 || interval_start i64
                   || interval_end i64 || source u8 || technology u8 || renewable_ppm u32
                   || carbon_mg u32 || H(device) || H(zone) || H(owner))
    node  = SHA256(0x01 || left || right)
    root  = RFC 6962 tree hash over the leaves (split at the largest power of two < n);
            SHA256(b"") for no leaves

The tree functions follow the recursive definitions of RFC 6962 section 2.1 literally; the
compiled kernel builds the same tree bottom-up.
"""

from __future__ import annotations

import hashlib
import operator
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from eap._core.columns import DIGEST_SIZE, RowError, digest_array, record_columns

LEAF_PREFIX = 0x00
NODE_PREFIX = 0x01
STRING_PREFIX = 0x02
#: Bytes hashed per leaf after its prefix byte.
LEAF_SIZE = 138

_LEAF_INTS = struct.Struct("<BqqqqBBII")


def dictionary_digests(entries: Iterable[str | bytes]) -> np.ndarray:
    """``H(s) = SHA256(0x02 || utf8(s))`` of each entry (``str`` or bytes-like): ``(m, 32)``."""
    digests = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            data = entry.encode("utf-8")
        elif isinstance(entry, bytes | bytearray | memoryview):
            data = bytes(entry)
        else:
            raise TypeError(
                f"dictionary entry {i}: expected str or bytes, got {type(entry).__name__}"
            )
        digests.append(hashlib.sha256(bytes([STRING_PREFIX]) + data).digest())
    return digest_array("entries", digests)


def leaf_hashes(
    serial_start: Any,
    serial_end: Any,
    device: Any,
    interval_start: Any,
    interval_end: Any,
    source: Any,
    technology: Any,
    renewable_ppm: Any,
    carbon_mg: Any,
    zone: Any,
    owner: Any,
    device_digests: Any,
    zone_digests: Any,
    owner_digests: Any,
) -> np.ndarray:
    """Leaf hash of every record: an ``(n, 32)`` uint8 array.

    ``device``, ``zone`` and ``owner`` index the string dictionaries whose digests
    (:func:`dictionary_digests`, an ``(m, 32)`` uint8 array or a list of 32-byte ``bytes``)
    are given; the other columns are the canonical record columns.

    Raises:
        RowError: an index is outside its dictionary (first such row; device, zone, owner).
        ValueError: columns of different lengths or values that do not fit their dtype.
    """
    cols, n = record_columns(
        serial_start=serial_start,
        serial_end=serial_end,
        device=device,
        interval_start=interval_start,
        interval_end=interval_end,
        source=source,
        technology=technology,
        renewable_ppm=renewable_ppm,
        carbon_mg=carbon_mg,
        zone=zone,
        owner=owner,
    )
    dicts = [
        [bytes(row) for row in digest_array(name, d)]
        for name, d in (
            ("device_digests", device_digests),
            ("zone_digests", zone_digests),
            ("owner_digests", owner_digests),
        )
    ]
    ss, se, dev, ist, ien, src, tech, ren, car, zn, ow = (c.tolist() for c in cols)
    out = bytearray()
    for i in range(n):
        for name, idx, table in (
            ("device", dev, dicts[0]),
            ("zone", zn, dicts[1]),
            ("owner", ow, dicts[2]),
        ):
            if not 0 <= idx[i] < len(table):
                raise RowError(
                    i, name, f"index {idx[i]} is not in its dictionary of {len(table)} entries"
                )
        head = _LEAF_INTS.pack(
            LEAF_PREFIX, ss[i], se[i], ist[i], ien[i], src[i], tech[i], ren[i], car[i]
        )
        out += hashlib.sha256(head + dicts[0][dev[i]] + dicts[1][zn[i]] + dicts[2][ow[i]]).digest()
    return np.frombuffer(bytes(out), dtype=np.uint8).reshape(n, DIGEST_SIZE).copy()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(bytes([NODE_PREFIX]) + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _mth(leaves: Sequence[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node(_mth(leaves[:k]), _mth(leaves[k:]))


def _leaf_list(leaves: Any) -> list[bytes]:
    return [bytes(row) for row in digest_array("leaves", leaves)]


def merkle_root(leaves: Any) -> bytes:
    """RFC 6962 Merkle tree hash of ``leaves`` (``(n, 32)`` uint8 or 32-byte ``bytes``)."""
    items = _leaf_list(leaves)
    if not items:
        return hashlib.sha256(b"").digest()
    return _mth(items)


def _path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if m < k:
        return [*_path(m, leaves[:k]), _mth(leaves[k:])]
    return [*_path(m - k, leaves[k:]), _mth(leaves[:k])]


def inclusion_proof(leaves: Any, index: int) -> list[bytes]:
    """RFC 6962 audit path of leaf ``index``: sibling hashes from the leaf up to the root.

    Raises:
        IndexError: ``index`` is not in ``[0, len(leaves))``.
    """
    items = _leaf_list(leaves)
    position = operator.index(index)
    if not 0 <= position < len(items):
        raise IndexError(f"leaf index {position} out of range for {len(items)} leaves")
    return _path(position, items)


def verify_inclusion(leaf_hash: Any, index: Any, n: Any, proof: Iterable[Any], root: Any) -> bool:
    """True iff ``proof`` proves leaf ``leaf_hash`` at ``index`` in a tree of ``n`` leaves
    with ``root`` (RFC 9162 section 2.1.3.2).  Malformed input verifies as False."""
    leaf, expected = bytes(leaf_hash), bytes(root)
    try:
        index = operator.index(index)
        n = operator.index(n)
    except TypeError:
        return False
    items = [bytes(p) for p in proof]
    if len(leaf) != 32 or len(expected) != 32 or any(len(p) != 32 for p in items):
        return False
    if not 0 <= index < n or n > 2**64:
        return False
    fn, sn, r = index, n - 1, leaf
    for p in items:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected


LINEAGE_PREFIX = 0x03


def issued_lineages(parents: Any, issuer: str, serial_start: Any, serial_end: Any) -> np.ndarray:
    """The lineage of each record of an issued batch: ``SHA256(0x03 || parent ||
    utf8(issuer + "/" + start + "-" + end))`` as ``(n, 32)`` uint8, ``parents`` the batch's
    ``(n, 32)`` leaves: :func:`lineage_hashes` over the records' bundle ids, without building
    the ids or the hex."""
    p = digest_array("parents", parents)
    s = np.ascontiguousarray(serial_start, dtype=np.int64)
    e = np.ascontiguousarray(serial_end, dtype=np.int64)
    if len(s) != len(p) or len(e) != len(p):
        raise ValueError(f"parents has {len(p)} rows, serial_start {len(s)}, serial_end {len(e)}")
    out = np.empty((len(p), DIGEST_SIZE), dtype=np.uint8)
    for i in range(len(p)):
        message = bytes([LINEAGE_PREFIX]) + p[i].tobytes() + f"{issuer}/{s[i]}-{e[i]}".encode()
        out[i] = np.frombuffer(hashlib.sha256(message).digest(), np.uint8)
    return out


def lineage_hashes(parents: Any, ids: Iterable[str]) -> list[str]:
    """``hex(SHA256(0x03 || parent || utf8(id)))`` per row: ``parents`` ``(n, 32)`` uint8
    (batch leaves or parent lineages), ``ids`` ``n`` bundle ids; a list of ``str``."""
    p = digest_array("parents", parents)
    items = list(ids)
    if len(p) != len(items):
        raise ValueError(f"parents has {len(p)} rows, ids {len(items)}")
    out = []
    for i, entry in enumerate(items):
        if not isinstance(entry, str):
            raise TypeError(f"id {i}: expected str, got {type(entry).__name__}")
        message = bytes([LINEAGE_PREFIX]) + p[i].tobytes() + entry.encode("utf-8")
        out.append(hashlib.sha256(message).hexdigest())
    return out
