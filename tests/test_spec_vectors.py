"""The published test vectors (docs/test-vectors/) against the node's code and the spec's prose.

Every vector is recomputed twice: with the node's own functions, and with a minimal
reimplementation written here from the documents alone (docs/protocol.md "Canonical JSON",
docs/federation.md §2, docs/security.md §4, docs/core.md), so that neither the code nor the
spec can change without the other.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from eap._core import merkle_py
from eap.node import batches, kernels
from eap.node.crypto.envelope import signing_input
from eap.node.crypto.keys import fingerprint, key_id_for
from eap.node.domain import ledger
from eap.node.domain import node as node_module
from eap.node.errors import InvalidArgument, Unauthenticated
from eap.node.federation.descriptor import (
    DESCRIPTOR_DOMAIN,
    NodeDescriptor,
    ca_fingerprint,
    canonical_json,
    pem_certificates,
)

VECTORS = Path(__file__).resolve().parents[1] / "docs" / "test-vectors"


def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def private_keys() -> dict[str, Ed25519PrivateKey]:
    return {k["name"]: Ed25519PrivateKey.from_private_bytes(bytes.fromhex(k["seed_hex"]))
            for k in load("keys.json")["keys"]}


def check_signature(key: Ed25519PrivateKey, message: bytes, signature_hex: str) -> None:
    """Ed25519 is deterministic: signing again gives the published bytes, which verify."""
    assert key.sign(message).hex() == signature_hex
    key.public_key().verify(bytes.fromhex(signature_hex), message)


# -- independent reimplementations, from the prose ------------------------------------------------

_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
          "\t": "\\t"}


def spec_string(s: str) -> str:
    out = ['"']
    for ch in s:
        cp = ord(ch)
        if ch in _SHORT:
            out.append(_SHORT[ch])
        elif 0x20 <= cp <= 0x7E:
            out.append(ch)
        elif cp <= 0xFFFF:
            out.append(f"\\u{cp:04x}")
        else:
            cp -= 0x10000
            out.append(f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}")
    out.append('"')
    return "".join(out)


def spec_canonical(value: Any) -> bytes:
    """EAP canonical JSON as docs/protocol.md describes it, without the json module."""

    def enc(v: Any) -> str:
        if v is None:
            return "null"
        if v is True:
            return "true"
        if v is False:
            return "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return spec_string(v)
        if isinstance(v, list):
            return "[" + ",".join(enc(x) for x in v) + "]"
        if isinstance(v, dict):
            # Code point order = the order of the keys' UTF-32 (or UTF-8) bytes.
            keys = sorted(v, key=lambda k: k.encode("utf-32-be"))
            return "{" + ",".join(spec_string(k) + ":" + enc(v[k]) for k in keys) + "}"
        raise TypeError(type(v))

    text = enc(value)
    assert text.isascii()
    return text.encode("ascii")


def spec_key_id(public_key: bytes) -> str:
    return "ed25519:" + hashlib.sha256(public_key).hexdigest()[:16]


def spec_fingerprint(data: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


def spec_pem_der(pem: str) -> bytes:
    """The DER of the first certificate of a PEM text."""
    m = re.search(r"-----BEGIN CERTIFICATE-----\r?\n(.*?)-----END CERTIFICATE-----", pem, re.S)
    assert m
    return base64.b64decode("".join(m.group(1).split()))


def spec_envelope_input(c: dict[str, Any]) -> bytes:
    def u16(b: bytes) -> bytes:
        return struct.pack(">H", len(b)) + b

    return (b"EAP-ENVELOPE-v1\x00" + u16(c["payload_type"].encode()) + u16(c["origin"].encode())
            + u16(c["destination"].encode()) + struct.pack(">q", c["expires_at_ms"])
            + u16(c["key_id"].encode()) + u16(bytes.fromhex(c["nonce_hex"]))
            + struct.pack(">I", len(bytes.fromhex(c["payload_hex"])))
            + bytes.fromhex(c["payload_hex"]))


def spec_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 Merkle tree hash with 0x01 inner nodes."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + spec_mth(leaves[:k]) + spec_mth(leaves[k:])).digest()


def spec_path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m < k:
        return [*spec_path(m, leaves[:k]), spec_mth(leaves[k:])]
    return [*spec_path(m - k, leaves[k:]), spec_mth(leaves[:k])]


# -- keys ----------------------------------------------------------------------------------------


def test_keys():
    for k in load("keys.json")["keys"]:
        key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(k["seed_hex"]))
        pk = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        assert pk.hex() == k["public_key_hex"]
        assert base64.b64encode(pk).decode() == k["public_key_base64"]
        assert key_id_for(pk) == spec_key_id(pk) == k["key_id"]
        assert fingerprint(pk) == spec_fingerprint(pk) == k["fingerprint"]


# -- canonical JSON --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", load("canonical-json.json")["cases"], ids=lambda c: c["name"])
def test_canonical_json(case):
    expected = bytes.fromhex(case["canonical_hex"])
    assert case["canonical"].encode("ascii") == expected
    assert canonical_json(case["value"]) == expected
    assert spec_canonical(case["value"]) == expected
    assert json.loads(expected) == case["value"]  # it is JSON, and means the same value


def test_canonical_json_refuses_what_has_no_canonical_form():
    for value in (1.0, float("nan"), {"x": [0.5]}, "\ud800", {"\udc00": 1}, {1: 2}):
        with pytest.raises(ValueError):
            canonical_json(value)


# -- node descriptor -------------------------------------------------------------------------------


def test_descriptor_vector():
    v = load("descriptor.json")
    key = private_keys()[v["signing_key"]]
    body = v["body"]
    canonical = v["canonical_body"].encode("ascii")
    assert canonical_json(body) == spec_canonical(body) == canonical
    signed = bytes.fromhex(v["signing_input_hex"])
    assert signed == b"EAP-DESCRIPTOR-v1\x00" + canonical == DESCRIPTOR_DOMAIN + canonical
    check_signature(key, signed, v["signature_hex"])
    assert base64.b64decode(v["signature_base64"]).hex() == v["signature_hex"]
    # tls_ca_fingerprint: SHA256: + unpadded standard base64 of SHA-256(DER of the first cert).
    der = spec_pem_der(body["tls_ca_pem"])
    assert hashlib.sha256(der).hexdigest() == v["tls_ca_der_sha256_hex"]
    assert spec_fingerprint(der) == ca_fingerprint(body["tls_ca_pem"].encode()) \
        == body["tls_ca_fingerprint"]
    # The signed document, however it is laid out, is accepted and signs the same bytes.
    for text in v["accepted_documents"]:
        doc = json.loads(text)
        assert {k: x for k, x in doc.items() if k != "signature"} == body
        desc = NodeDescriptor.from_json(text)
        assert desc.signing_input() == signed
        assert desc.signature.hex() == v["signature_hex"]
        assert desc.active_key.key_id == doc["signature"]["key_id"]
        assert NodeDescriptor.from_json(desc.to_json()) == desc


@pytest.mark.parametrize("case", load("descriptor.json")["refused"], ids=lambda c: c["name"])
def test_descriptor_refused(case):
    with pytest.raises((InvalidArgument, Unauthenticated)):
        NodeDescriptor.from_json(case["document"])
    with pytest.raises((InvalidArgument, Unauthenticated)):
        NodeDescriptor.from_json(case["document"].encode("utf-8"))


def test_published_ca_pem_is_bare_certificate_blocks():
    pem = load("descriptor.json")["body"]["tls_ca_pem"].encode("ascii")
    bundle = b"# Federation CA\r\n" + pem.replace(b"\n", b"\r\n") + b"trailing text\n" + pem
    assert pem_certificates(bundle) == pem + pem
    with pytest.raises(InvalidArgument):
        pem_certificates(b"no certificate here")


def test_descriptor_refuses_non_utf8_encodings():
    text = load("descriptor.json")["accepted_documents"][1]
    assert NodeDescriptor.from_json(text.encode("utf-8"))
    for encoding in ("utf-16", "utf-32", "utf-8-sig"):
        with pytest.raises(InvalidArgument):
            NodeDescriptor.from_json(text.encode(encoding))


# -- signed envelope -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", load("envelope.json")["cases"], ids=lambda c: c["name"])
def test_envelope(case):
    key = private_keys()[case["signing_key"]]
    pk = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert spec_key_id(pk) == case["key_id"]
    data = signing_input(
        payload_type=case["payload_type"], origin=case["origin"],
        destination=case["destination"], expires_at_ms=case["expires_at_ms"],
        key_id=case["key_id"], nonce=bytes.fromhex(case["nonce_hex"]),
        payload=bytes.fromhex(case["payload_hex"]))
    assert data.hex() == spec_envelope_input(case).hex() == case["signing_input_hex"]
    check_signature(key, data, case["signature_hex"])


# -- Merkle leaves, roots, proofs ------------------------------------------------------------------


def test_merkle():
    v = load("merkle.json")
    digests = {}
    for name, entries in v["dictionaries"].items():
        strings = [e["string"] for e in entries]
        spec = [hashlib.sha256(b"\x02" + s.encode("utf-8")).digest() for s in strings]
        assert [d.hex() for d in spec] == [e["digest_hex"] for e in entries]
        assert [bytes(d).hex() for d in merkle_py.dictionary_digests(strings)] == \
            [e["digest_hex"] for e in entries]
        digests[name] = spec
    leaves = []
    for r in v["records"]:
        leaf_input = struct.pack(
            "<BqqqqBBII", 0, r["serial_start"], r["serial_end"], r["interval_start"],
            r["interval_end"], r["source"], r["technology"], r["renewable_ppm"], r["carbon_mg"],
        ) + digests["devices"][r["device"]] + digests["zones"][r["zone"]] \
            + digests["owners"][r["owner"]]
        assert len(leaf_input) == 139 and leaf_input.hex() == r["leaf_input_hex"]
        assert hashlib.sha256(leaf_input).hexdigest() == r["leaf_hash_hex"]
        leaves.append(hashlib.sha256(leaf_input).digest())
    # The node's kernels (compiled or pure-Python) agree leaf by leaf.
    names = ["serial_start", "serial_end", "interval_start", "interval_end", "device", "source",
             "technology", "renewable_ppm", "carbon_mg", "zone", "owner"]
    arrays = {n: np.array([r[n] for r in v["records"]], dtype=batches.COLUMNS[n])
              for n in names}
    dicts = {k: [e["string"] for e in v["dictionaries"][k]] for k in v["dictionaries"]}
    node_leaves = kernels.leaf_hashes(arrays, dicts["devices"], dicts["zones"], dicts["owners"])
    assert [bytes(x) for x in node_leaves] == leaves
    assert spec_mth([]).hex() == v["empty_tree_root_hex"]
    assert merkle_py.merkle_root(np.zeros((0, 32), np.uint8)).hex() == v["empty_tree_root_hex"]
    for tree in v["trees"]:
        n, root = tree["leaves"], bytes.fromhex(tree["root_hex"])
        assert spec_mth(leaves[:n]) == kernels.merkle_root(leaves[:n]) == root
        for i, proof_hex in enumerate(tree["proofs"]):
            proof = [bytes.fromhex(p) for p in proof_hex]
            assert spec_path(i, leaves[:n]) == kernels.inclusion_proof(leaves[:n], i) == proof
            assert kernels.verify_inclusion(leaves[i], i, n, proof, root)
            assert merkle_py.verify_inclusion(leaves[i], i, n, proof, root)


# -- batch header ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", load("batch-header.json")["cases"], ids=lambda c: c["issuer"])
def test_batch_header(case):
    key = private_keys()[case["signing_key"]]
    root = bytes.fromhex(case["merkle_root_hex"])
    issuer = case["issuer"].encode("utf-8")
    spec = (b"EAP-BATCH-v1\x00" + struct.pack(">H", len(issuer)) + issuer
            + struct.pack(">Q", case["seq"]) + struct.pack(">I", case["count"]) + root)
    header = batches.header_bytes(case["issuer"], case["seq"], case["count"], root)
    assert header.hex() == spec.hex() == case["header_hex"]
    check_signature(key, header, case["signature_hex"])


def test_batch_header_root_is_the_merkle_vector():
    root = load("batch-header.json")["cases"][0]["merkle_root_hex"]
    assert root == load("merkle.json")["trees"][-1]["root_hex"]


# -- lineage ---------------------------------------------------------------------------------------


def test_lineage():
    steps = load("lineage.json")["steps"]
    assert steps[0]["parent_hex"] == load("merkle.json")["records"][0]["leaf_hash_hex"]
    known = {}
    for s in steps:
        parent = bytes.fromhex(s["parent_hex"])
        data = b"\x03" + parent + s["bundle_id"].encode("utf-8")
        assert data.hex() == s["input_hex"]
        assert hashlib.sha256(data).hexdigest() == s["lineage_hex"]
        assert ledger.lineage(parent, s["bundle_id"]) == s["lineage_hex"]
        issuer, span = s["bundle_id"].rsplit("/", 1)
        start, end = (int(x) for x in span.split("-"))
        assert ledger.bundle_id(issuer, start, end) == s["bundle_id"]
        known[s["lineage_hex"]] = s
    assert all(s["parent_hex"] in known for s in steps[1:])  # a chain back to the leaf


# -- claim receipt ---------------------------------------------------------------------------------


class _Signer:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key
        pk = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id_for(pk)

    def sign(self, data: bytes) -> tuple[str, bytes]:
        return self.key_id, self.key.sign(data)


@pytest.mark.parametrize("case", load("claim-receipt.json")["cases"], ids=lambda c: c["body"]["id"])
def test_claim_receipt(case, monkeypatch):
    key = private_keys()[case["signing_key"]]
    body = case["body"]
    canonical = case["canonical_body"].encode("ascii")
    assert spec_canonical(body) == canonical_json(body) == canonical
    hashed = b"EAP-CLAIM-v1\x00" + canonical
    assert hashed.hex() == case["hashed_input_hex"]
    digest = hashlib.sha256(hashed).digest()
    assert digest.hex() == case["digest_hex"]
    check_signature(key, digest, case["signature_hex"])  # the digest is the signed message
    # The node's own receipt code, fed the same values, produces the same digest and signature.
    issuer, seq = body["id"].rsplit("/claim/", 1)
    bundle = SimpleNamespace(
        id=body["bundle"], lineage_hash=body["lineage"], wh=body["wh"],
        interval_start=body["generation"][0], interval_end=body["generation"][1],
        source=body["source"], carbon_mg=body["carbon_mg"])
    monkeypatch.setattr(node_module, "now_ms", lambda: body["claimed_at_ms"])
    fake_node = SimpleNamespace(node_id=issuer, keys=_Signer(key))
    receipt = node_module.Node._receipt(
        fake_node, int(seq), bundle, body["beneficiary"], body["purpose"],
        body["consumption"][0], body["consumption"][1], body["zone"])
    assert receipt.id == body["id"] and receipt.key_id == case["key_id"]
    assert receipt.digest.hex() == case["digest_hex"]
    assert receipt.signature.hex() == case["signature_hex"]


def test_vectors_cover_the_edge_cases():
    """The string edge cases the spec calls out appear in the vectors."""
    text = "".join(json.dumps(c["value"]) for c in load("canonical-json.json")["cases"])
    receipt = load("claim-receipt.json")["cases"][0]["canonical_body"]
    for escaped in ("\\n", '\\"', "\\\\", "\\u007f", "\\u00e9", "\\ud83d\\ude00"):
        assert escaped in text
    for escaped in ('\\"', "\\\\", "\\u007f", "\\u00e9", "\\ud83d\\ude00"):
        assert escaped in receipt
    assert "\\n" in load("descriptor.json")["canonical_body"]  # the PEM's line ends
