"""docs/test-vectors/record-proof.json: a bundle proof, the issuer's key, the expected result,
and tampered copies that must be refused (docs/protocol.md "Proofs").

The vector is checked three ways: regenerated from its inputs with the node's code (so it
cannot drift from it), verified by :func:`eap.node.domain.proofs.check_bundle_proof`, and
verified by the step-by-step algorithm of docs/protocol.md written here with hashlib and
cryptography only.  ``python tests/test_proof_vector.py`` rewrites the file.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf import json_format

VECTOR = Path(__file__).resolve().parents[1] / "docs" / "test-vectors" / "record-proof.json"
ISSUER = "medellin.example"
SEED = bytes(range(32))  # key-1 of keys.json
#: A batch of three hourly solar/wind records; the proof is of record 1, split twice.
RECORDS = [
    (1000, 1500, 1718960400, 1718964000, "dev_aaaaaaaaaaaaaaaaaaaaaaaaaa", 1, 1, 1_000_000, 0,
     "CO-ANT", "acct_aaaaaaaaaaaaaaaaaaaaaaaaaa"),
    (1500, 2300, 1718964000, 1718967600, "dev_aaaaaaaaaaaaaaaaaaaaaaaaaa", 1, 1, 1_000_000, 0,
     "CO-ANT", "acct_aaaaaaaaaaaaaaaaaaaaaaaaaa"),
    (2300, 2900, 1718960400, 1718964000, "dev_bbbbbbbbbbbbbbbbbbbbbbbbbb", 2, 3, 1_000_000,
     11_000, "CO-ANT", "acct_bbbbbbbbbbbbbbbbbbbbbbbbbb"),
]
LINEAGE = [f"{ISSUER}/1500-2300", f"{ISSUER}/1500-2000", f"{ISSUER}/1700-2000"]
CELL = "876619d92ffffff"  # resolution-7 H3 cell (docs/protocol.md, "The cell")
#: name -> (what is changed, the check that refuses it)
TAMPERED = {
    "attribute": "bundle.attributes.carbonMgPerKwh: 0 -> 1 (attribute equality)",
    "wh_range": "bundle.serialEnd: 2000 -> 2100 (serial range of the bundle id)",
    "lineage_id": "proof.lineage[1]: 1500-2000 -> 1500-2100 (lineage hash)",
    "path_byte": "proof.path[0]: first byte flipped (inclusion)",
    "batch_seq": "proof.batch.seq: 7 -> 8 (header signature)",
    "record": "proof.record.renewablePpm and bundle renewable share -1 (inclusion)",
}


def build() -> dict[str, Any]:
    """The vector, computed with the node's code from the inputs above."""
    import numpy as np

    from eap.node import batches, kernels
    from eap.node.crypto.keys import key_id_for
    from eap.node.domain import provenance
    from eap.v1 import types_pb2 as pb

    key = Ed25519PrivateKey.from_private_bytes(SEED)
    raw = key.public_key().public_bytes_raw()
    recs = [pb.IssuedRecord(serial_start=r[0], serial_end=r[1],
                            interval=pb.Interval(start_unix=r[2], end_unix=r[3]), device_id=r[4],
                            source=r[5], technology=r[6], renewable_ppm=r[7],
                            carbon_mg_per_kwh=r[8], zone=r[9], owner=r[10]) for r in RECORDS]
    leaves = np.frombuffer(b"".join(provenance.leaf_hash(r) for r in recs), np.uint8)
    leaves = leaves.reshape(len(recs), 32)
    root = kernels.merkle_root(leaves)
    seq, index = 7, 1
    header = batches.header_bytes(ISSUER, seq, len(recs), root)
    proof = pb.RecordProof(
        batch=pb.BatchHeader(issuer=ISSUER, seq=seq, count=len(recs), merkle_root=root,
                             created_at_ms=1718967600000, key_id=key_id_for(raw),
                             signature=key.sign(header)),
        index=index, record=recs[index], path=kernels.inclusion_proof(leaves, index),
        lineage=LINEAGE)
    r = recs[index]
    lin = provenance.lineage(bytes(leaves[index]), LINEAGE[0])
    for cid in LINEAGE[1:]:
        lin = provenance.lineage(bytes.fromhex(lin), cid)
    bundle = pb.RecordBundle(
        id=LINEAGE[-1], issuer=ISSUER, serial_start=1700, serial_end=2000,
        attributes=pb.RecordAttributes(source=r.source, technology=r.technology,
                                       renewable_ppm=r.renewable_ppm,
                                       carbon_mg_per_kwh=r.carbon_mg_per_kwh, zone=r.zone,
                                       cell=CELL, interval=r.interval, device_id=r.device_id),
        status=pb.BUNDLE_STATUS_ACTIVE, owner="acct_cccccccccccccccccccccccccc",
        parent_id=LINEAGE[-2], lineage_hash=lin, issued_at_ms=1718970000000)
    bp = pb.BundleProof(bundle=bundle, proof=proof, cell=CELL)
    good = json_format.MessageToDict(bp)
    tampered = []
    for name, what in TAMPERED.items():
        t = pb.BundleProof()
        t.CopyFrom(bp)
        if name == "attribute":
            t.bundle.attributes.carbon_mg_per_kwh = 1
        elif name == "wh_range":
            t.bundle.serial_end = 2100
        elif name == "lineage_id":
            t.proof.lineage[1] = f"{ISSUER}/1500-2100"
        elif name == "path_byte":
            t.proof.path[0] = bytes([t.proof.path[0][0] ^ 0x01]) + t.proof.path[0][1:]
        elif name == "batch_seq":
            t.proof.batch.seq = 8
        elif name == "record":
            t.proof.record.renewable_ppm -= 1
            t.bundle.attributes.renewable_ppm -= 1
        tampered.append({"name": name, "change": what, "expected": {"ok": False},
                         "bundle_proof": json_format.MessageToDict(t)})
    return {
        "description": (
            "A bundle proof (protobuf JSON mapping of eap.v1.BundleProof) of a bundle split "
            "twice from record 1 of a 3-record batch, the issuer's public key, the expected "
            "result of the verification algorithm of docs/protocol.md 'Proofs', and tampered "
            "copies that must be refused. Bytes are base64 (protobuf JSON mapping)."),
        "issuer": ISSUER,
        "issuer_keys": [{"key_id": key_id_for(raw),
                         "public_key_base64": base64.b64encode(raw).decode()}],
        "header_bytes_hex": header.hex(),
        "leaf_hash_hex": bytes(leaves[index]).hex(),
        "bundle_proof": good,
        "expected": {"ok": True, "issuer": ISSUER, "batch_seq": seq,
                     "record": f"{ISSUER}/1500-2300", "bundle": LINEAGE[-1], "wh": 300,
                     "lineage_hash": lin},
        "tampered": tampered,
    }


# -- the algorithm of docs/protocol.md "Proofs", from the prose --------------------------------


def _h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def _leaf(r: dict[str, Any]) -> bytes:
    """docs/core.md: SHA-256 of 0x00 and 138 bytes of fields (139 bytes hashed)."""
    def d(s: str) -> bytes:
        return _h(b"\x02", s.encode("utf-8"))

    iv = r["interval"]
    body = struct.pack("<qqqqBBII", int(r["serialStart"]), int(r["serialEnd"]),
                       int(iv["startUnix"]), int(iv["endUnix"]),
                       _enum(r["source"], "ENERGY_SOURCE_"), _enum(r["technology"], "TECHNOLOGY_"),
                       r.get("renewablePpm", 0), r.get("carbonMgPerKwh", 0))
    body += d(r["deviceId"]) + d(r["zone"]) + d(r["owner"])
    assert len(body) == 138
    return _h(b"\x00", body)


def _enum(value: Any, prefix: str) -> int:
    from eap.v1 import types_pb2 as pb

    if isinstance(value, int):
        return value
    return (pb.EnergySource if prefix == "ENERGY_SOURCE_" else pb.Technology).Value(value)


def _root_from_path(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes | None:
    """RFC 9162 §2.1.3.2 verification of an inclusion path."""
    if index >= size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = _h(b"\x01", p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _h(b"\x01", r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def independent_verify(doc: dict[str, Any], keys: dict[str, bytes]) -> str | None:
    """None when the proof holds, else the failed step."""
    bp = doc
    p, b = bp["proof"], bp["bundle"]
    h, r = p["batch"], p["record"]
    issuer = h["issuer"].encode()
    root = base64.b64decode(h["merkleRoot"])
    header = (b"EAP-BATCH-v1\x00" + struct.pack(">H", len(issuer)) + issuer
              + struct.pack(">QI", int(h["seq"]), h["count"]) + root)
    try:
        Ed25519PublicKey.from_public_bytes(keys[h["keyId"]]).verify(
            base64.b64decode(h["signature"]), header)
    except (KeyError, InvalidSignature):
        return "signature"
    leaf = _leaf(r)
    path = [base64.b64decode(x) for x in p.get("path", [])]
    if _root_from_path(leaf, p.get("index", 0), h["count"], path) != root:
        return "inclusion"
    ids = p["lineage"]
    if ids[0] != f"{h['issuer']}/{r['serialStart']}-{r['serialEnd']}":
        return "lineage start"
    lo, hi = int(r["serialStart"]), int(r["serialEnd"])
    lin = _h(b"\x03", leaf, ids[0].encode())
    for cid in ids[1:]:
        who, span = cid.rsplit("/", 1)
        s, e = (int(x) for x in span.split("-"))
        if who != h["issuer"] or not lo <= s < e <= hi or (s, e) == (lo, hi):
            return "lineage range"
        lo, hi = s, e
        lin = _h(b"\x03", lin, cid.encode())
    if b["id"] != ids[-1] or b["lineageHash"] != lin.hex():
        return "lineage hash"
    if (b["issuer"], int(b["serialStart"]), int(b["serialEnd"])) != (h["issuer"], lo, hi):
        return "serial range"
    a = b["attributes"]
    for name in ("deviceId", "zone", "source", "technology", "renewablePpm", "carbonMgPerKwh",
                 "interval"):
        if a.get(name) != r.get(name):
            return "attributes"
    return None


# -- tests ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vector() -> dict[str, Any]:
    return json.loads(VECTOR.read_text(encoding="utf-8"))


def test_vector_is_what_the_code_computes(vector):
    assert build() == vector


def _keys(vector) -> dict[str, dict[str, bytes]]:
    return {vector["issuer"]: {k["key_id"]: base64.b64decode(k["public_key_base64"])
                               for k in vector["issuer_keys"]}}


def test_node_verifier_accepts_the_proof_and_refuses_each_tampering(vector):
    from eap.node.domain import proofs
    from eap.node.domain.provenance import ProofError
    from eap.v1 import types_pb2 as pb

    bp = json_format.ParseDict(vector["bundle_proof"], pb.BundleProof())
    res = proofs.check_bundle_proof(bp, _keys(vector)).to_dict()
    exp = vector["expected"]
    assert (res["issuer"], res["batch_seq"], res["record"]["id"], res["bundle"], res["wh"],
            res["lineage_hash"]) == (exp["issuer"], exp["batch_seq"], exp["record"],
                                     exp["bundle"], exp["wh"], exp["lineage_hash"])
    for t in vector["tampered"]:
        with pytest.raises(ProofError):
            proofs.check_bundle_proof(json_format.ParseDict(t["bundle_proof"], pb.BundleProof()),
                                      _keys(vector))


def test_the_documented_algorithm_agrees(vector):
    keys = _keys(vector)[vector["issuer"]]
    assert independent_verify(copy.deepcopy(vector["bundle_proof"]), keys) is None
    for t in vector["tampered"]:
        assert independent_verify(t["bundle_proof"], keys) is not None, t["name"]
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    assert independent_verify(vector["bundle_proof"], dict.fromkeys(keys, other)) == "signature"


if __name__ == "__main__":
    VECTOR.write_text(json.dumps(build(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {VECTOR}")
