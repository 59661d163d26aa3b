"""An SD claim receipt verifier written from docs/receipts.md alone.

It shares NO code with the node: only json, base64, hashlib, struct and ``cryptography`` (no
``eap`` import).  It checks the published vector (docs/test-vectors/sd-receipt.json) and a
presentation made by a real node through the ``eap-node`` CLI in a separate process.  An
off-the-shelf JOSE library (joserfc) verifies the same signatures.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

VECTOR = Path(__file__).resolve().parents[1] / "docs" / "test-vectors" / "sd-receipt.json"
CLI = [sys.executable, "-m", "eap.node"]


class Refused(Exception):
    pass


def b64u(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        raise Refused("not base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:
        raise Refused("non-canonical base64url")
    return raw


def b64u_enc(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def ed25519(key: bytes, sig: bytes, msg: bytes) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(sig, msg)
    except (InvalidSignature, ValueError) as exc:
        raise Refused("bad signature") from exc


def jws(token: str) -> tuple[dict, dict, bytes, bytes]:
    h, p, s = token.split(".")
    return json.loads(b64u(h)), json.loads(b64u(p)), f"{h}.{p}".encode(), b64u(s)


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def inclusion_root(leaf: bytes, index: int, count: int, path: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2."""
    if not 0 <= index < count:
        raise Refused("index outside the batch")
    fn, sn, r = index, count - 1, leaf
    for p in path:
        if sn == 0:
            raise Refused("path too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Refused("path too short")
    return r


def verify(
    token: str, keys: dict[str, dict[str, bytes]], nonce: str | None = None, aud: str | None = None
) -> dict[str, Any]:
    """docs/receipts.md "Verifying", step by step.  Returns the disclosed fields."""
    parts = token.split("~")
    issuer_jwt, discs, kb = parts[0], parts[1:-1], parts[-1]
    header, payload, signing_input, sig = jws(issuer_jwt)
    if header.get("alg") not in ("EdDSA", "Ed25519") or header.get("typ") != "eap-receipt+sd-jwt":
        raise Refused("header")
    key = keys.get(payload.get("iss"), {}).get(header.get("kid"))
    if key is None:
        raise Refused("unknown key")
    ed25519(key, sig, signing_input)
    if payload.get("_sd_alg") != "sha-256" or payload.get("vct") != "urn:eap:claim-receipt:1":
        raise Refused("payload")
    digests = payload["_sd"]
    disclosed: dict[str, Any] = {}
    for d in discs:
        if b64u_enc(hashlib.sha256(d.encode("ascii")).digest()) not in digests:
            raise Refused("disclosure not committed")
        salt, name, value = json.loads(b64u(d))
        if len(b64u(salt)) < 16 or name in disclosed or name in payload:
            raise Refused("salt or repeated name")
        disclosed[name] = value
    if "cnf" in payload:
        if not kb:
            raise Refused("key binding required")
        kh, kp, kin, ksig = jws(kb)
        if kh.get("typ") != "kb+jwt" or kh.get("alg") not in ("EdDSA", "Ed25519"):
            raise Refused("kb header")
        ed25519(b64u(payload["cnf"]["jwk"]["x"]), ksig, kin)
        without = "~".join(parts[:-1]) + "~"
        if kp["sd_hash"] != b64u_enc(hashlib.sha256(without.encode("ascii")).digest()):
            raise Refused("sd_hash")
        if (nonce is not None and kp["nonce"] != nonce) or (aud is not None and kp["aud"] != aud):
            raise Refused("nonce/aud")
    elif kb:
        raise Refused("unexpected KB-JWT")
    inc = disclosed.get("inclusion")
    if inc is not None:
        b = inc["batch"]
        root = bytes.fromhex(b["merkle_root"])
        issuer = b["issuer"].encode()
        header_bytes = (
            b"EAP-BATCH-v1\x00"
            + struct.pack(">H", len(issuer))
            + issuer
            + struct.pack(">QI", b["seq"], b["count"])
            + root
        )
        bkey = keys.get(b["issuer"], {}).get(b["key_id"])
        if bkey is None:
            raise Refused("unknown batch key")
        ed25519(bkey, bytes.fromhex(b["signature"]), header_bytes)
        got = inclusion_root(
            bytes.fromhex(inc["leaf"]),
            inc["index"],
            b["count"],
            [bytes.fromhex(p) for p in inc["path"]],
        )
        if got != root:
            raise Refused("not included")
    return disclosed


@pytest.fixture(scope="module")
def vector() -> dict[str, Any]:
    return json.loads(VECTOR.read_text())


def _keys(doc) -> dict[str, dict[str, bytes]]:
    k = doc["issuer_key"]
    return {doc["issuer"]: {k["key_id"]: base64.b64decode(k["public_key_base64"])}}


def test_vector_presentation_verifies_independently(vector):
    got = verify(vector["presentation"], _keys(vector))
    assert got == vector["expected_disclosed"]
    assert set(got) == set(vector["shown"])
    # every digest in the full receipt is one of the documented disclosures
    for d in vector["disclosures"]:
        assert d["digest"] == b64u_enc(hashlib.sha256(d["disclosure"].encode()).digest())
        assert json.loads(b64u(d["disclosure"])) == d["decoded"]


@pytest.mark.parametrize(
    "what",
    [
        "wh value 300 -> 301",
        "wh salt changed",
        "Merkle path byte flipped",
        "batch root changed",
        "issuer signature changed",
        "payload claim iss changed",
        "disclosure not committed (extra)",
    ],
)
def test_vector_tampering_is_refused_independently(vector, what):
    with pytest.raises((Refused, ValueError, KeyError)):
        verify(vector["tampered"][what], _keys(vector))


def test_vector_key_binding_independently(vector):
    kb = vector["key_binding"]
    got = verify(vector["bound_presentation"], _keys(vector), kb["nonce"], kb["aud"])
    assert got == vector["expected_disclosed"]
    stripped = vector["bound_presentation"].rsplit("~", 1)[0] + "~"
    with pytest.raises(Refused, match="key binding required"):
        verify(stripped, _keys(vector))
    with pytest.raises(Refused, match="nonce"):
        verify(vector["bound_presentation"], _keys(vector), "other-nonce", kb["aud"])


@pytest.mark.filterwarnings("ignore::Warning")  # joserfc flags EdDSA as deprecated (RFC 9864)
def test_standard_jose_library_verifies_issuer_jwt_and_kb_jwt(vector):
    """joserfc, knowing nothing of EAP, checks the issuer's and the holder's EdDSA JWS."""
    from joserfc import jws as jose_jws
    from joserfc.errors import BadSignatureError
    from joserfc.jwk import OKPKey

    raw = base64.b64decode(vector["issuer_key"]["public_key_base64"])
    issuer = OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": b64u_enc(raw)})
    token = jose_jws.deserialize_compact(
        vector["presentation"].split("~")[0], issuer, algorithms=["EdDSA"]
    )
    assert token.headers()["kid"] == vector["issuer_key"]["key_id"]
    assert json.loads(token.payload)["iss"] == vector["issuer"]
    holder = OKPKey.import_key(
        {"kty": "OKP", "crv": "Ed25519", "x": vector["holder_public_key_base64url"]}
    )
    kb = jose_jws.deserialize_compact(
        vector["bound_presentation"].split("~")[-1], holder, algorithms=["EdDSA"]
    )
    assert json.loads(kb.payload)["nonce"] == vector["key_binding"]["nonce"]
    bad = vector["tampered"]["issuer signature changed"].split("~")[0]
    with pytest.raises(BadSignatureError):
        jose_jws.deserialize_compact(bad, issuer, algorithms=["EdDSA"])


def _run(home: Path, *args: str) -> str:
    proc = subprocess.run(
        [*CLI, *args, "--home", str(home)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_live_node_presentation_verifies_independently(tmp_path):
    """A real node, driven through its CLI in other processes, retires energy and presents
    hour, zone and wh; this verifier checks it with the key `eap-node identity` prints."""
    home = tmp_path / "node"
    _run(home, "init", "--node-id", "medellin.example", "--zone", "CO-ANT", "--operator-signed")
    owner = json.loads(_run(home, "account", "create", "--json"))["account"]["id"]
    _run(
        home,
        "device",
        "register",
        "--ref",
        "roof-1",
        "--capacity-w",
        "250",
        "--source",
        "solar",
        "--technology",
        "photovoltaic",
        "--commissioned",
        "2020-05-01",
        "--lat",
        "6.2",
        "--lon",
        "-75.5",
        "--zone",
        "CO-ANT",
        "--owner",
        owner,
        "--meter-id",
        "1",
        "--attestation",
        "doc-1",
    )
    csv = tmp_path / "m.csv"
    csv.write_text(
        "interval_start_datetime,interval_end_datetime,device_id,interval_usage,"
        "gross_net_indicator\n2026-01-01 10:00:00,2026-01-01 11:00:00,1,200,NET\n"
        "2026-01-01 11:00:00,2026-01-01 12:00:00,1,180,NET\n"
    )
    _run(home, "meter", "import", str(csv))
    _run(home, "issue")
    bundle = json.loads(_run(home, "bundles", "--owner", owner, "--json").splitlines()[0])
    claim = json.loads(
        _run(
            home,
            "retire",
            bundle["id"],
            "--wh",
            "50",
            "--beneficiary",
            "Metro",
            "--purpose",
            "scope2",
            "--json",
        )
    )
    out = tmp_path / "p.sdjwt"
    _run(
        home,
        "receipt",
        "present",
        claim["id"],
        "--show",
        "hour,zone,wh,inclusion",
        "--out",
        str(out),
    )
    ident = json.loads(_run(home, "identity", "--json"))
    keys = {ident["nodeId"]: {k["keyId"]: base64.b64decode(k["publicKey"]) for k in ident["keys"]}}
    got = verify(out.read_text().strip(), keys)
    assert got["wh"] == 50 and got["zone"] == "CO-ANT"
    assert got["hour"] == [bundle["interval_start"], bundle["interval_end"]]
    assert set(got) == {"hour", "zone", "wh", "inclusion"}
    assert "Metro" not in out.read_text()
