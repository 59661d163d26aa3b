"""docs/test-vectors/sd-receipt.json: SD claim receipts with fixed keys and salts.

Regenerated here with the node's code (so the file cannot drift from it) and verified with
:func:`eap.node.domain.receipts.verify_receipt`; ``tests/test_receipt_independent.py`` checks
the same file with an implementation of docs/receipts.md that shares no code with the node.
``python tests/test_receipt_vector.py`` rewrites the file.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

DOCS = Path(__file__).resolve().parents[1] / "docs" / "test-vectors"
VECTOR = DOCS / "sd-receipt.json"
ISSUER = "medellin.example"
ISSUER_SEED = bytes(range(32))  # key-1 of keys.json
HOLDER_SEED = bytes(range(32, 64))  # key-2 of keys.json
SHOW = ["hour", "zone", "wh", "inclusion"]
NONCE, AUDIENCE, IAT = "n-4f1c2a", "https://verifier.example", 1767312100


def salt_of(name: str) -> str:
    """Fixed test salt: base64url of the first 16 bytes of SHA-256("eap-test-salt:" + name)."""
    raw = hashlib.sha256(b"eap-test-salt:" + name.encode()).digest()[:16]
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class _Ring:
    """The KeyRing surface issue_receipt uses, over a fixed seed."""

    def __init__(self, seed: bytes) -> None:
        from eap.node.crypto.keys import key_id_for

        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.active_key_id = key_id_for(self._key.public_key().public_bytes_raw())

    def sign(self, data: bytes) -> tuple[str, bytes]:
        return self.active_key_id, self._key.sign(data)


def _inputs():
    from google.protobuf import json_format

    from eap.node.api import convert
    from eap.node.records.models import ClaimReceipt
    from eap.v1 import types_pb2 as pb

    doc = json.loads((DOCS / "record-proof.json").read_text())
    bp = json_format.ParseDict(doc["bundle_proof"], pb.BundleProof())
    a = bp.bundle.attributes
    bundle = dataclasses.replace(convert.bundle_from(bp.bundle), status=2)  # as the vector was made
    claim = ClaimReceipt(
        id=f"{ISSUER}/claim/42",
        bundle=bundle,
        beneficiary='Café "La Esquina" \\ Medellín 😀',
        purpose="scope2-market-based/24-7-hourly",
        consumption_start=a.interval.start_unix,
        consumption_end=a.interval.end_unix,
        consumption_zone="CO-ANT",
        claimed_at_ms=1767312000456,
        digest=b"",
        signature=b"",
        key_id="",
    )
    return claim, bp.proof


def _flip_char(text: str, at: int) -> str:
    c = text[at]
    return text[:at] + ("B" if c != "B" else "C") + text[at + 1 :]


def _reencode(disc: str, mutate) -> str:
    arr = json.loads(base64.urlsafe_b64decode(disc + "=" * (-len(disc) % 4)))
    mutate(arr)
    raw = json.dumps(arr, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def tampered(presentation: str) -> dict[str, str]:
    """Copies of a presentation (no KB-JWT) that a verifier must refuse, by what changed."""
    jws, *discs, _ = presentation.split("~")
    names = [json.loads(base64.urlsafe_b64decode(d + "=" * (-len(d) % 4)))[1] for d in discs]
    i_wh, i_inc = names.index("wh"), names.index("inclusion")

    def swap(i: int, new: str) -> str:
        out = list(discs)
        out[i] = new
        return "~".join([jws, *out]) + "~"

    def inc(fn):
        def mutate(arr):
            fn(arr[2])

        return _reencode(discs[i_inc], mutate)

    h, p, s = jws.split(".")
    return {
        "wh value 300 -> 301": swap(i_wh, _reencode(discs[i_wh], lambda a: a.__setitem__(2, 301))),
        "wh salt changed": swap(
            i_wh, _reencode(discs[i_wh], lambda a: a.__setitem__(0, salt_of("x")))
        ),
        "Merkle path byte flipped": swap(
            i_inc,
            inc(
                lambda v: v["path"].__setitem__(
                    0, ("0" if v["path"][0][0] != "0" else "1") + v["path"][0][1:]
                )
            ),
        ),
        "batch root changed": swap(
            i_inc, inc(lambda v: v["batch"].__setitem__("merkle_root", "00" * 32))
        ),
        "issuer signature changed": "~".join([f"{h}.{p}.{_flip_char(s, 5)}", *discs]) + "~",
        "payload claim iss changed": "~".join([f"{h}.{_flip_char(p, 10)}.{s}", *discs]) + "~",
        "disclosure not committed (extra)": "~".join(
            [
                jws,
                *discs,
                base64.urlsafe_b64encode(json.dumps([salt_of("cell"), "cell", "N00E000"]).encode())
                .rstrip(b"=")
                .decode(),
            ]
        )
        + "~",
    }


def build() -> dict[str, Any]:
    """The vector, computed with the node's code."""
    from eap.node.crypto import sd
    from eap.node.domain import receipts

    claim, proof = _inputs()
    ring = _Ring(ISSUER_SEED)
    holder = Ed25519PrivateKey.from_private_bytes(HOLDER_SEED)
    holder_pub = holder.public_key().public_bytes_raw()
    salts = {name: salt_of(name) for name in receipts.FIELDS}
    full = receipts.issue_receipt(issuer=ISSUER, keys=ring, receipt=claim, proof=proof, salts=salts)
    bound = receipts.issue_receipt(
        issuer=ISSUER, keys=ring, receipt=claim, proof=proof, salts=salts, holder_key=holder_pub
    )
    shown = receipts.present(full, SHOW)
    shown_bound = receipts.present(bound, SHOW, holder.sign, NONCE, AUDIENCE, now=IAT)
    discs = sd.parse(full).disclosures
    return {
        "description": (
            "Selective-disclosure claim receipts (docs/receipts.md). The issuer key is key-1 "
            "and the holder key key-2 of keys.json; salt of field F = base64url(first 16 "
            "bytes of SHA-256('eap-test-salt:' || F)). 'sd_jwt' is the full receipt, "
            "'presentation' shows only 'shown'; the 'bound' variants carry cnf and a KB-JWT "
            "(nonce, aud, iat below). Every entry of 'tampered' must be refused."
        ),
        "issuer": ISSUER,
        "issuer_key": {
            "key_id": ring.active_key_id,
            "public_key_base64": base64.b64encode(
                Ed25519PrivateKey.from_private_bytes(ISSUER_SEED).public_key().public_bytes_raw()
            ).decode(),
        },
        "holder_public_key_base64url": sd.b64url(holder_pub),
        "disclosures": [
            {"disclosure": d, "decoded": list(sd.decode_disclosure(d)), "digest": sd.digest(d)}
            for d in discs
        ],
        "sd_jwt": full,
        "shown": SHOW,
        "presentation": shown,
        "expected_disclosed": {n: receipts.receipt_claims(claim, proof)[n] for n in SHOW},
        "bound_sd_jwt": bound,
        "key_binding": {"nonce": NONCE, "aud": AUDIENCE, "iat": IAT},
        "bound_presentation": shown_bound,
        "tampered": tampered(shown),
    }


def test_vector_is_reproduced_by_the_node() -> None:
    assert json.loads(VECTOR.read_text()) == build()


def test_vector_verifies_with_the_node_and_tampering_is_refused() -> None:
    from eap.node.crypto.sd import SdError
    from eap.node.domain import receipts

    doc = json.loads(VECTOR.read_text())
    keys = {
        ISSUER: {
            doc["issuer_key"]["key_id"]: base64.b64decode(doc["issuer_key"]["public_key_base64"])
        }
    }
    got = receipts.verify_receipt(doc["presentation"], keys)
    assert got.disclosed == doc["expected_disclosed"]
    kb = doc["key_binding"]
    bound = receipts.verify_receipt(
        doc["bound_presentation"], keys, nonce=kb["nonce"], audience=kb["aud"]
    )
    assert bound.key_binding["iat"] == kb["iat"]
    for what, bad in doc["tampered"].items():
        with pytest.raises(SdError):
            receipts.verify_receipt(bad, keys)
            pytest.fail(f"accepted: {what}")


if __name__ == "__main__":
    VECTOR.write_text(json.dumps(build(), indent=2, ensure_ascii=True) + "\n")
    print(f"wrote {VECTOR}")
