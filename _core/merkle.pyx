"""Record leaf hashes and RFC 6962 Merkle trees (compiled kernel; twin: ``merkle_py``).

SHA-256 is the bundled ``csrc/eap_sha256.h``: SHA-NI instructions where the CPU has them, a
portable C implementation otherwise.  Fixed-length messages (leaves: 139 bytes, inner nodes:
65) are padded once per call and only their variable bytes rewritten per hash.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

import operator

import numpy as np

from eap._core.columns import DIGEST_SIZE, RowError, digest_array, record_columns

from _sha256 cimport (
    eap_sha256_blocks,
    eap_sha256_is_shani,
    eap_sha256_pad,
    eap_sha256_prefixed,
    eap_sha256_select,
    eap_sha256_use_portable,
)

eap_sha256_select()

cdef enum:
    C_LEAF_PREFIX = 0x00
    C_NODE_PREFIX = 0x01
    C_STRING_PREFIX = 0x02
    LEAF_MSG = 139  # the prefix byte and LEAF_SIZE bytes of record
    NODE_MSG = 65

LEAF_PREFIX = C_LEAF_PREFIX
NODE_PREFIX = C_NODE_PREFIX
STRING_PREFIX = C_STRING_PREFIX
#: Bytes hashed per leaf after its prefix byte (see ``docs/core.md``).
LEAF_SIZE = LEAF_MSG - 1


def _sha256_impl(str force=None):
    """The SHA-256 code in use, ``"sha-ni"`` or ``"portable"``; ``force`` switches (tests)."""
    if force == "portable":
        eap_sha256_use_portable()
    elif force == "auto":
        eap_sha256_select()
    elif force is not None:
        raise ValueError(f"unknown SHA-256 implementation {force!r}")
    return "sha-ni" if eap_sha256_is_shani() else "portable"


cdef inline void store_le64(uint8_t* p, uint64_t v) noexcept nogil:
    cdef int b
    for b in range(8):
        p[b] = <uint8_t>(v >> (8 * b))


cdef inline void store_le32(uint8_t* p, uint32_t v) noexcept nogil:
    cdef int b
    for b in range(4):
        p[b] = <uint8_t>(v >> (8 * b))


cdef struct NodeHasher:
    uint8_t buf[128]  # 0x01 || left || right, pre-padded to two blocks


cdef inline void node_init(NodeHasher* h) noexcept nogil:
    h.buf[0] = C_NODE_PREFIX
    eap_sha256_pad(h.buf, NODE_MSG)


cdef inline void node_hash(NodeHasher* h, const uint8_t* left, const uint8_t* right,
                           uint8_t* out) noexcept nogil:
    memcpy(&h.buf[1], left, 32)
    memcpy(&h.buf[33], right, 32)
    eap_sha256_blocks(h.buf, 2, out)


def dictionary_digests(entries):
    """``H(s) = SHA256(0x02 || utf8(s))`` of each entry (``str`` or bytes-like): ``(m, 32)``."""
    cdef list items = list(entries)
    cdef Py_ssize_t m = len(items), i
    out = np.empty((m, DIGEST_SIZE), dtype=np.uint8)
    if m == 0:
        return out
    cdef uint8_t[:, ::1] o = out
    cdef const uint8_t[::1] view
    cdef bytes data
    for i in range(m):
        entry = items[i]
        if isinstance(entry, str):
            data = (<str>entry).encode("utf-8")
            eap_sha256_prefixed(C_STRING_PREFIX, <const uint8_t*>PyBytes_AS_STRING(data),
                                len(data), &o[i, 0])
        elif isinstance(entry, (bytes, bytearray, memoryview)):
            view = memoryview(entry).cast("B")
            if view.shape[0] == 0:
                eap_sha256_prefixed(C_STRING_PREFIX, NULL, 0, &o[i, 0])
            else:
                eap_sha256_prefixed(C_STRING_PREFIX, &view[0], view.shape[0], &o[i, 0])
        else:
            raise TypeError(f"dictionary entry {i}: expected str or bytes, got {type(entry).__name__}")
    return out


cdef Py_ssize_t hash_leaves(size_t n, const int64_t* ss, const int64_t* se, const int32_t* dev,
                            const int64_t* ist, const int64_t* ien, const uint8_t* src,
                            const uint8_t* tech, const uint32_t* ren, const uint32_t* car,
                            const int32_t* zone, const int32_t* owner,
                            const uint8_t* dd, int64_t nd, const uint8_t* zd, int64_t nz,
                            const uint8_t* od, int64_t no, uint8_t* out,
                            int* bad_column) noexcept nogil:
    """Leaf hash of every record into ``out``; returns -1, or the first row whose dictionary
    index is out of range (``bad_column``: 0 device, 1 zone, 2 owner)."""
    cdef uint8_t buf[192]
    cdef size_t i
    eap_sha256_pad(buf, LEAF_MSG)
    buf[0] = C_LEAF_PREFIX
    for i in range(n):
        if dev[i] < 0 or dev[i] >= nd:
            bad_column[0] = 0
            return <Py_ssize_t>i
        if zone[i] < 0 or zone[i] >= nz:
            bad_column[0] = 1
            return <Py_ssize_t>i
        if owner[i] < 0 or owner[i] >= no:
            bad_column[0] = 2
            return <Py_ssize_t>i
        store_le64(&buf[1], <uint64_t>ss[i])
        store_le64(&buf[9], <uint64_t>se[i])
        store_le64(&buf[17], <uint64_t>ist[i])
        store_le64(&buf[25], <uint64_t>ien[i])
        buf[33] = src[i]
        buf[34] = tech[i]
        store_le32(&buf[35], ren[i])
        store_le32(&buf[39], car[i])
        memcpy(&buf[43], &dd[32 * dev[i]], 32)
        memcpy(&buf[75], &zd[32 * zone[i]], 32)
        memcpy(&buf[107], &od[32 * owner[i]], 32)
        eap_sha256_blocks(buf, 3, &out[32 * i])
    return -1


def leaf_hashes(serial_start, serial_end, device, interval_start, interval_end, source,
                technology, renewable_ppm, carbon_mg, zone, owner, device_digests, zone_digests,
                owner_digests):
    """Leaf hash of every record: an ``(n, 32)`` uint8 array.

    See ``eap._core.merkle_py.leaf_hashes`` (the reference twin) for the layout.
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
        digest_array(name, d)
        for name, d in (
            ("device_digests", device_digests),
            ("zone_digests", zone_digests),
            ("owner_digests", owner_digests),
        )
    ]
    cdef size_t count = n
    out = np.empty((count, DIGEST_SIZE), dtype=np.uint8)
    if count == 0:
        return out
    cdef const int64_t[::1] ss = cols[0]
    cdef const int64_t[::1] se = cols[1]
    cdef const int32_t[::1] dev = cols[2]
    cdef const int64_t[::1] ist = cols[3]
    cdef const int64_t[::1] ien = cols[4]
    cdef const uint8_t[::1] src = cols[5]
    cdef const uint8_t[::1] tech = cols[6]
    cdef const uint32_t[::1] ren = cols[7]
    cdef const uint32_t[::1] car = cols[8]
    cdef const int32_t[::1] zn = cols[9]
    cdef const int32_t[::1] ow = cols[10]
    cdef uint8_t empty[32]
    cdef const uint8_t[:, ::1] dd = dicts[0]
    cdef const uint8_t[:, ::1] zd = dicts[1]
    cdef const uint8_t[:, ::1] od = dicts[2]
    cdef const uint8_t* ddp = &dd[0, 0] if dd.shape[0] else empty
    cdef const uint8_t* zdp = &zd[0, 0] if zd.shape[0] else empty
    cdef const uint8_t* odp = &od[0, 0] if od.shape[0] else empty
    cdef uint8_t[:, ::1] o = out
    cdef Py_ssize_t bad
    cdef int bad_column = 0
    with nogil:
        bad = hash_leaves(count, &ss[0], &se[0], &dev[0], &ist[0], &ien[0], &src[0], &tech[0],
                          &ren[0], &car[0], &zn[0], &ow[0], ddp, dd.shape[0], zdp, zd.shape[0],
                          odp, od.shape[0], &o[0, 0], &bad_column)
    if bad >= 0:
        name = ("device", "zone", "owner")[bad_column]
        value = int(cols[(2, 9, 10)[bad_column]][bad])
        size = len(dicts[bad_column])
        raise RowError(bad, name, f"index {value} is not in its dictionary of {size} entries")
    return out


cdef void tree_root(uint8_t* level, size_t n, uint8_t* out) noexcept nogil:
    """Root of the tree over the ``n >= 1`` hashes in ``level`` (overwritten)."""
    cdef NodeHasher h
    cdef size_t m = n, i
    node_init(&h)
    while m > 1:
        for i in range(m // 2):
            node_hash(&h, &level[64 * i], &level[64 * i + 32], &level[32 * i])
        if m % 2:
            memcpy(&level[32 * (m // 2)], &level[32 * (m - 1)], 32)
        m = (m + 1) // 2
    memcpy(out, level, 32)


def merkle_root(leaves):
    """RFC 6962 Merkle tree hash of ``leaves`` (``(n, 32)`` uint8 or 32-byte ``bytes``)."""
    arr = digest_array("leaves", leaves)
    cdef size_t n = arr.shape[0]
    cdef uint8_t digest[32]
    if n == 0:
        eap_sha256_prefixed(-1, NULL, 0, digest)
        return PyBytes_FromStringAndSize(<char*>digest, 32)
    cdef const uint8_t[:, ::1] lv = arr
    cdef uint8_t* level = <uint8_t*>malloc(32 * n)
    if level == NULL:
        raise MemoryError()
    with nogil:
        memcpy(level, &lv[0, 0], 32 * n)
        tree_root(level, n, digest)
    free(level)
    return PyBytes_FromStringAndSize(<char*>digest, 32)


cdef void audit_path(uint8_t* level, size_t n, size_t index, uint8_t* path,
                     size_t* length) noexcept nogil:
    """Sibling hashes from leaf ``index`` up to the root, into ``path``; ``level`` is
    overwritten.  Pairing left to right and carrying an odd last node up unchanged builds
    exactly the RFC 6962 tree (split at the largest power of two below the size)."""
    cdef NodeHasher h
    cdef size_t m = n, i, k = 0
    node_init(&h)
    while m > 1:
        if (index ^ 1) < m:
            memcpy(&path[32 * k], &level[32 * (index ^ 1)], 32)
            k += 1
        for i in range(m // 2):
            node_hash(&h, &level[64 * i], &level[64 * i + 32], &level[32 * i])
        if m % 2:
            memcpy(&level[32 * (m // 2)], &level[32 * (m - 1)], 32)
        m = (m + 1) // 2
        index //= 2
    length[0] = k


def inclusion_proof(leaves, index):
    """RFC 6962 audit path of leaf ``index``: sibling hashes from the leaf up to the root.

    Raises:
        IndexError: ``index`` is not in ``[0, len(leaves))``.
    """
    arr = digest_array("leaves", leaves)
    cdef size_t n = arr.shape[0]
    position = operator.index(index)
    if not 0 <= position < n:
        raise IndexError(f"leaf index {position} out of range for {n} leaves")
    cdef size_t idx = position
    cdef const uint8_t[:, ::1] lv = arr
    cdef uint8_t* level = <uint8_t*>malloc(32 * n)
    cdef uint8_t path[32 * 64]
    cdef size_t length = 0, k
    if level == NULL:
        raise MemoryError()
    with nogil:
        memcpy(level, &lv[0, 0], 32 * n)
        audit_path(level, n, idx, path, &length)
    free(level)
    return [PyBytes_FromStringAndSize(<char*>&path[32 * k], 32) for k in range(length)]


def verify_inclusion(leaf_hash, index, n, proof, root):
    """True iff ``proof`` proves leaf ``leaf_hash`` at ``index`` in a tree of ``n`` leaves
    with ``root`` (RFC 9162 section 2.1.3.2).  Malformed input verifies as False."""
    cdef bytes leaf = bytes(leaf_hash)
    cdef bytes expected = bytes(root)
    try:
        index = operator.index(index)
        n = operator.index(n)
    except TypeError:
        return False
    cdef list items = [bytes(p) for p in proof]
    if len(leaf) != 32 or len(expected) != 32 or any(len(p) != 32 for p in items):
        return False
    if not 0 <= index < n or n > 2**64:
        return False
    cdef uint64_t fn = index, sn = n - 1
    cdef NodeHasher h
    cdef uint8_t r[32]
    cdef bytes p
    node_init(&h)
    memcpy(r, PyBytes_AS_STRING(leaf), 32)
    for p in items:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            node_hash(&h, <const uint8_t*>PyBytes_AS_STRING(p), r, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            node_hash(&h, r, <const uint8_t*>PyBytes_AS_STRING(p), r)
        fn >>= 1
        sn >>= 1
    return sn == 0 and PyBytes_FromStringAndSize(<char*>r, 32) == expected


cdef enum:
    C_LINEAGE_PREFIX = 0x03
    C_DIGEST = 32

LINEAGE_PREFIX = C_LINEAGE_PREFIX
cdef const char* HEX = b"0123456789abcdef"


def lineage_hashes(parents, ids):
    """``hex(SHA256(0x03 || parent || utf8(id)))`` per row: ``parents`` ``(n, 32)`` uint8
    (batch leaves or parent lineages), ``ids`` ``n`` bundle ids; a list of ``str``."""
    cdef const uint8_t[:, ::1] p = digest_array("parents", parents)
    cdef list items = list(ids)
    cdef Py_ssize_t n = len(items), i, k, size
    if p.shape[0] != n:
        raise ValueError(f"parents has {p.shape[0]} rows, ids {n}")
    cdef list out = [None] * n
    cdef uint8_t digest[32]
    cdef char text[64]
    cdef uint8_t* buf = NULL
    cdef Py_ssize_t cap = 0
    cdef bytes data
    try:
        for i in range(n):
            entry = items[i]
            if not isinstance(entry, str):
                raise TypeError(f"id {i}: expected str, got {type(entry).__name__}")
            data = (<str>entry).encode("utf-8")
            size = C_DIGEST + len(data)
            if size > cap:
                free(buf)
                cap = size * 2
                buf = <uint8_t*>malloc(cap)
                if buf == NULL:
                    raise MemoryError()
            memcpy(buf, &p[i, 0], C_DIGEST)
            memcpy(buf + C_DIGEST, PyBytes_AS_STRING(data), len(data))
            eap_sha256_prefixed(C_LINEAGE_PREFIX, buf, size, digest)
            for k in range(32):
                text[2 * k] = HEX[digest[k] >> 4]
                text[2 * k + 1] = HEX[digest[k] & 15]
            out[i] = text[:64].decode("ascii")
    finally:
        free(buf)
    return out


cdef inline Py_ssize_t _decimal(uint8_t* out, int64_t v) noexcept nogil:
    """``v`` in decimal ASCII at ``out`` (at most 20 bytes); the length written."""
    cdef uint8_t tmp[20]
    cdef uint64_t u
    cdef Py_ssize_t n = 0, k = 0, j
    if v < 0:
        out[0] = 45  # '-'
        k = 1
        u = <uint64_t>(-(v + 1)) + 1
    else:
        u = <uint64_t>v
    while True:
        tmp[n] = 48 + <uint8_t>(u % 10)
        n += 1
        u = u // 10
        if u == 0:
            break
    for j in range(n):
        out[k + j] = tmp[n - 1 - j]
    return k + n


def issued_lineages(parents, str issuer, serial_start, serial_end):
    """The lineage of each record of an issued batch: ``SHA256(0x03 || parent ||
    utf8(issuer + "/" + start + "-" + end))`` as ``(n, 32)`` uint8, ``parents`` the batch's
    ``(n, 32)`` leaves: :func:`lineage_hashes` over the records' bundle ids, without building
    the ids or the hex."""
    cdef const uint8_t[:, ::1] p = digest_array("parents", parents)
    cdef const int64_t[::1] s = np.ascontiguousarray(serial_start, dtype=np.int64)
    cdef const int64_t[::1] e = np.ascontiguousarray(serial_end, dtype=np.int64)
    cdef Py_ssize_t n = p.shape[0], i, k
    if s.shape[0] != n or e.shape[0] != n:
        raise ValueError(f"parents has {n} rows, serial_start {s.shape[0]}, "
                         f"serial_end {e.shape[0]}")
    cdef bytes prefix = (issuer + "/").encode("utf-8")
    cdef Py_ssize_t plen = len(prefix)
    out = np.empty((n, C_DIGEST), dtype=np.uint8)
    cdef uint8_t[:, ::1] o = out
    cdef uint8_t* buf = <uint8_t*>malloc(C_DIGEST + plen + 42)
    if buf == NULL:
        raise MemoryError()
    memcpy(buf + C_DIGEST, PyBytes_AS_STRING(prefix), plen)
    try:
        with nogil:
            for i in range(n):
                memcpy(buf, &p[i, 0], C_DIGEST)
                k = C_DIGEST + plen
                k += _decimal(buf + k, s[i])
                buf[k] = 45  # '-'
                k += 1
                k += _decimal(buf + k, e[i])
                eap_sha256_prefixed(C_LINEAGE_PREFIX, buf, k, &o[i, 0])
    finally:
        free(buf)
    return out
