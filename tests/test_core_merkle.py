"""Hashing/Merkle kernel: known answers computed with hashlib, RFC 6962 tree shape, proofs that
verify and stop verifying when anything is tampered with, kernel == twin (both SHA-256 code
paths of the kernel)."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eap._core import merkle_py
from eap._core.columns import RECORD_DTYPES, RowError

try:
    from eap._core import merkle as merkle_c
except ImportError:  # built with EAP_NO_EXT=1 or without a compiler
    merkle_c = None

needs_ext = pytest.mark.skipif(
    merkle_c is None, reason="compiled eap._core.merkle is not built (EAP_NO_EXT=1?)"
)
IMPLS = [pytest.param(merkle_py, id="twin"), pytest.param(merkle_c, id="cython", marks=needs_ext)]
PROPERTY = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
INT_COLUMNS = (
    "serial_start",
    "serial_end",
    "device",
    "interval_start",
    "interval_end",
    "source",
    "technology",
    "renewable_ppm",
    "carbon_mg",
    "zone",
    "owner",
)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def node(left: bytes, right: bytes) -> bytes:
    return sha(b"\x01" + left + right)


def leaves_of(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [bytes(row) for row in rng.integers(0, 256, (n, 32), dtype=np.uint8)]


def columns(n: int, rng: np.random.Generator, n_dev: int, n_zone: int, n_owner: int) -> dict:
    big = np.iinfo(np.int64)
    return {
        "serial_start": rng.integers(big.min, big.max, n, dtype=np.int64),
        "serial_end": rng.integers(big.min, big.max, n, dtype=np.int64),
        "device": rng.integers(0, n_dev, n).astype(np.int32),
        "interval_start": rng.integers(big.min, big.max, n, dtype=np.int64),
        "interval_end": rng.integers(big.min, big.max, n, dtype=np.int64),
        "source": rng.integers(0, 256, n).astype(np.uint8),
        "technology": rng.integers(0, 256, n).astype(np.uint8),
        "renewable_ppm": rng.integers(0, 2**32, n).astype(np.uint32),
        "carbon_mg": rng.integers(0, 2**32, n).astype(np.uint32),
        "zone": rng.integers(0, n_zone, n).astype(np.int32),
        "owner": rng.integers(0, n_owner, n).astype(np.int32),
    }


# --- known answers ----------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_tree_known_answers(impl):
    a, b, c, d, e = leaves_of(5)
    assert impl.merkle_root([]) == sha(b"")
    assert impl.merkle_root(np.empty((0, 32), np.uint8)) == sha(b"")
    assert impl.merkle_root([a]) == a
    assert impl.merkle_root([a, b]) == node(a, b)
    # RFC 6962: split at the largest power of two below n
    assert impl.merkle_root([a, b, c]) == node(node(a, b), c)
    assert impl.merkle_root([a, b, c, d, e]) == node(node(node(a, b), node(c, d)), e)
    assert impl.inclusion_proof([a, b, c, d, e], 4) == [node(node(a, b), node(c, d))]
    assert impl.inclusion_proof([a, b, c, d, e], 2) == [d, node(a, b), e]
    assert impl.inclusion_proof([a], 0) == []


@pytest.mark.parametrize("impl", IMPLS)
def test_dictionary_digests(impl):
    entries = ["dev-1", "Medellín", "", b"raw\x00bytes", "x" * 63, "y" * 64, "z" * 200]
    got = impl.dictionary_digests(entries)
    assert got.dtype == np.uint8 and got.shape == (len(entries), 32)
    for row, entry in zip(got, entries, strict=True):
        data = entry.encode() if isinstance(entry, str) else entry
        assert bytes(row) == sha(b"\x02" + data)
    assert np.array_equal(
        impl.dictionary_digests(["Medellín"]), impl.dictionary_digests(["Medellín".encode()])
    )
    assert impl.dictionary_digests([]).shape == (0, 32)
    with pytest.raises(TypeError, match="entry 1"):
        impl.dictionary_digests(["ok", 5])
    with pytest.raises(UnicodeEncodeError):
        impl.dictionary_digests(["\udc80"])


@pytest.mark.parametrize("impl", IMPLS)
def test_leaf_hash_layout(impl):
    dev, zone, owner = impl.dictionary_digests(["dev-a", "dev-b"]), ["CO-ANT"], ["acct_x"]
    rec = {
        "serial_start": I64_MIN,
        "serial_end": I64_MAX,
        "device": 1,
        "interval_start": -3600,
        "interval_end": 1_700_000_000,
        "source": 255,
        "technology": 14,
        "renewable_ppm": 2**32 - 1,
        "carbon_mg": 2_000_000,
        "zone": 0,
        "owner": 0,
    }
    cols = [np.array([rec[c]], dtype=RECORD_DTYPES[c]) for c in INT_COLUMNS]
    got = impl.leaf_hashes(
        *cols, dev, impl.dictionary_digests(zone), impl.dictionary_digests(owner)
    )
    preimage = (
        b"\x00"
        + struct.pack("<qqqq", I64_MIN, I64_MAX, -3600, 1_700_000_000)
        + bytes([255, 14])
        + struct.pack("<II", 2**32 - 1, 2_000_000)
        + sha(b"\x02dev-b")
        + sha(b"\x02CO-ANT")
        + sha(b"\x02acct_x")
    )
    assert len(preimage) == 1 + impl.LEAF_SIZE == 139
    assert got.shape == (1, 32) and bytes(got[0]) == sha(preimage)


@pytest.mark.parametrize("impl", IMPLS)
def test_leaf_hashes_reject_indices_outside_dictionaries(impl):
    rng = np.random.default_rng(1)
    cols = columns(5, rng, 2, 1, 1)
    digests = [impl.dictionary_digests(d) for d in (["a", "b"], ["z"], ["o"])]
    ok = impl.leaf_hashes(*cols.values(), *digests)
    assert ok.shape == (5, 32)
    for name, bad in (("device", 2), ("zone", -1), ("owner", 1)):
        broken = {k: v.copy() for k, v in cols.items()}
        broken[name][3] = bad
        with pytest.raises(RowError, match=f"row 3: {name}: index {bad}") as err:
            impl.leaf_hashes(*broken.values(), *digests)
        assert (err.value.row, err.value.column) == (3, name)
    with pytest.raises(ValueError, match=r"\(n, 32\) uint8"):
        impl.leaf_hashes(*cols.values(), np.zeros((2, 31), np.uint8), *digests[1:])
    with pytest.raises(RowError, match="expected 32 bytes"):
        impl.leaf_hashes(*cols.values(), [b"x" * 32, b"short"], *digests[1:])
    empty = impl.leaf_hashes(*[v[:0] for v in cols.values()], *digests)
    assert empty.shape == (0, 32) and empty.dtype == np.uint8


# --- proofs -------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [*range(1, 18), 31, 32, 33, 100])
def test_every_proof_verifies_and_tampering_fails(impl, n):
    leaves = leaves_of(n, seed=n)
    root = impl.merkle_root(leaves)
    for i in range(n):
        proof = impl.inclusion_proof(leaves, i)
        assert len(proof) <= max(1, (n - 1).bit_length())
        assert impl.verify_inclusion(leaves[i], i, n, proof, root)
        assert not impl.verify_inclusion(bytes(32), i, n, proof, root)
        assert not impl.verify_inclusion(leaves[i], i, n, proof, bytes(32))
        if n > 1:
            assert not impl.verify_inclusion(
                leaves[i], i ^ 1 if (i ^ 1) < n else i - 1, n, proof, root
            )
            assert not impl.verify_inclusion(leaves[i], i, n, proof[:-1], root)
            assert not impl.verify_inclusion(leaves[i], i, n, [*proof, proof[0]], root)
        for k in range(len(proof)):
            tampered = list(proof)
            tampered[k] = bytes([proof[k][0] ^ 1]) + proof[k][1:]
            assert not impl.verify_inclusion(leaves[i], i, n, tampered, root)


@pytest.mark.parametrize("impl", IMPLS)
def test_malformed_verification_input_is_false(impl):
    leaves = leaves_of(4)
    root, proof = impl.merkle_root(leaves), impl.inclusion_proof(leaves, 1)
    assert impl.verify_inclusion(leaves[1], np.int64(1), np.int32(4), proof, root)
    assert not impl.verify_inclusion(leaves[1], 1, 0, proof, root)
    assert not impl.verify_inclusion(leaves[1], -1, 4, proof, root)
    assert not impl.verify_inclusion(leaves[1], 4, 4, proof, root)
    assert not impl.verify_inclusion(leaves[1], 1.0, 4, proof, root)
    assert not impl.verify_inclusion(leaves[1][:31], 1, 4, proof, root)
    assert not impl.verify_inclusion(leaves[1], 1, 4, [p[:31] for p in proof], root)
    assert not impl.verify_inclusion(leaves[1], 1, 4, proof, root + b"\x00")
    assert not impl.verify_inclusion(leaves[1], 1, 2**70, proof, root)


@pytest.mark.parametrize("impl", IMPLS)
def test_inclusion_proof_index_out_of_range(impl):
    for bad in (-1, 3, 2**70):
        with pytest.raises(IndexError, match="out of range"):
            impl.inclusion_proof(leaves_of(3), bad)
    with pytest.raises(IndexError):
        impl.inclusion_proof([], 0)


# --- kernel against twin -----------------------------------------------------------------


@needs_ext
@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 64, 65, 257, 1000])
def test_kernel_matches_twin_on_trees(n):
    leaves = np.frombuffer(b"".join(leaves_of(n, seed=n)), np.uint8).reshape(n, 32)
    assert merkle_c.merkle_root(leaves) == merkle_py.merkle_root(leaves)
    for i in {0, n // 2, n - 1} if n else ():
        assert merkle_c.inclusion_proof(leaves, i) == merkle_py.inclusion_proof(leaves, i)


@needs_ext
@PROPERTY
@given(
    n=st.integers(0, 60),
    seed=st.integers(0, 2**32 - 1),
    sizes=st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3)),
)
def test_kernel_matches_twin_on_leaves(n, seed, sizes):
    rng = np.random.default_rng(seed)
    cols = columns(n, rng, *sizes)
    dicts = [[rng.bytes(int(rng.integers(0, 100))) for _ in range(size)] for size in sizes]
    digests = [merkle_py.dictionary_digests(d) for d in dicts]
    np.testing.assert_array_equal(merkle_c.dictionary_digests(dicts[0]), digests[0])
    want = merkle_py.leaf_hashes(*cols.values(), *digests)
    np.testing.assert_array_equal(merkle_c.leaf_hashes(*cols.values(), *digests), want)
    assert merkle_c.merkle_root(want) == merkle_py.merkle_root(want)


@needs_ext
def test_portable_sha256_matches_the_default_path():
    rng = np.random.default_rng(3)
    cols = columns(2000, rng, 50, 3, 40)
    dicts = [
        [f"dev-{i}" * (i % 9) for i in range(50)],
        ["CO-ANT", "ES-CT", "x" * 70],
        list(map(str, range(40))),
    ]
    default = merkle_c._sha256_impl()
    try:
        fast_digests = [merkle_c.dictionary_digests(d) for d in dicts]
        fast = merkle_c.leaf_hashes(*cols.values(), *fast_digests)
        fast_root = merkle_c.merkle_root(fast)
        assert merkle_c._sha256_impl("portable") == "portable"
        slow_digests = [merkle_c.dictionary_digests(d) for d in dicts]
        for f, s in zip(fast_digests, slow_digests, strict=True):
            np.testing.assert_array_equal(f, s)
        np.testing.assert_array_equal(merkle_c.leaf_hashes(*cols.values(), *slow_digests), fast)
        assert merkle_c.merkle_root(fast) == fast_root
    finally:
        assert merkle_c._sha256_impl("auto") == default
    assert fast_root == merkle_py.merkle_root(merkle_py.leaf_hashes(*cols.values(), *fast_digests))


@pytest.mark.parametrize("impl", IMPLS)
def test_lineage_hashes_known_answer_and_errors(impl):
    parents = np.arange(64, dtype=np.uint8).reshape(2, 32)
    ids = ["city.example/0-10", "é/1-2"]
    want = [
        hashlib.sha256(b"\x03" + parents[i].tobytes() + ids[i].encode()).hexdigest()
        for i in range(2)
    ]
    assert impl.lineage_hashes(parents, ids) == want
    assert impl.lineage_hashes(np.zeros((0, 32), np.uint8), []) == []
    with pytest.raises(ValueError):
        impl.lineage_hashes(parents, ids[:1])
    with pytest.raises(TypeError):
        impl.lineage_hashes(parents, ["a", b"b"])


@needs_ext
@PROPERTY
@given(
    seed=st.integers(0, 2**32 - 1),
    ids=st.lists(st.text(max_size=300), max_size=40),
)
def test_kernel_matches_twin_on_lineage(seed, ids):
    parents = np.random.default_rng(seed).integers(0, 256, (len(ids), 32), dtype=np.uint8)
    want = merkle_py.lineage_hashes(parents, ids)
    assert merkle_c.lineage_hashes(parents, ids) == want


@pytest.mark.parametrize("impl", IMPLS)
def test_issued_lineages_are_the_lineage_of_each_bundle_id(impl):
    parents = np.arange(96, dtype=np.uint8).reshape(3, 32)
    starts = np.array([0, 10, -(2**63)], np.int64)
    ends = np.array([10, 2**63 - 1, -1], np.int64)
    ids = [f"é.example/{s}-{e}" for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
    want = impl.lineage_hashes(parents, ids)
    got = impl.issued_lineages(parents, "é.example", starts, ends)
    assert got.dtype == np.uint8 and got.shape == (3, 32)
    assert [bytes(row).hex() for row in got] == want
    assert impl.issued_lineages(np.zeros((0, 32), np.uint8), "x", [], []).shape == (0, 32)
    with pytest.raises(ValueError):
        impl.issued_lineages(parents, "x", starts[:2], ends)
    with pytest.raises(ValueError):
        impl.issued_lineages(parents, "x", starts, ends[:1])


@needs_ext
@PROPERTY
@given(
    seed=st.integers(0, 2**32 - 1),
    issuer=st.text(max_size=300),
    serials=st.lists(st.tuples(st.integers(-(2**63), 2**63 - 1),
                               st.integers(-(2**63), 2**63 - 1)), max_size=40),
)
def test_kernel_matches_twin_on_issued_lineages(seed, issuer, serials):
    parents = np.random.default_rng(seed).integers(0, 256, (len(serials), 32), dtype=np.uint8)
    starts = np.array([s for s, _ in serials], np.int64)
    ends = np.array([e for _, e in serials], np.int64)
    want = merkle_py.issued_lineages(parents, issuer, starts, ends)
    np.testing.assert_array_equal(merkle_c.issued_lineages(parents, issuer, starts, ends), want)
    ids = [f"{issuer}/{s}-{e}" for s, e in serials]
    assert [bytes(r).hex() for r in want] == merkle_py.lineage_hashes(parents, ids)
