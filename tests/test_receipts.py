"""Selective-disclosure claim receipts (docs/receipts.md): issued at retirement, stored with
the claim, returned to the holder only, presented field by field, verified offline; any
tampering is refused and hidden fields stay hidden."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import grpc
import h3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from receipt_support import ROWS, setup_claim
from test_receipt_vector import _inputs, _Ring

from eap.node.api.server import build_server
from eap.node.crypto import sd
from eap.node.crypto.sd import SdError
from eap.node.domain import receipts
from eap.node.errors import InvalidArgument, NotFound
from eap.node.records.enums import Purpose
from eap.v1 import node_api_pb2 as api
from eap.v1 import node_api_pb2_grpc
from eap.v1 import types_pb2 as pb

CLI = [sys.executable, "-m", "eap.node"]
ISSUER = "medellin.example"
RING = _Ring(bytes(range(32)))
KEYS = {
    ISSUER: {
        RING.active_key_id: bytes.fromhex(
            "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
        )
    }
}


def keys_of(node) -> dict[str, dict[str, bytes]]:
    return {node.node_id: {k.key_id: k.public_key for k in node.keys.public_keys().values()}}


def issued(holder_key: bytes | None = None, proof=None) -> str:
    """A receipt over the record-proof vector's bundle, fresh random salts, no database."""
    claim, vproof = _inputs()
    return receipts.issue_receipt(
        issuer=ISSUER, keys=RING, receipt=claim, proof=proof or vproof, holder_key=holder_key
    )


def disclosures(token: str) -> dict[str, str]:
    return {sd.decode_disclosure(d)[1]: d for d in sd.parse(token).disclosures}


# -- retirement, storage, replay ----------------------------------------------------------------


def test_retire_issues_stores_and_replays_the_sd_receipt(node, solar, tmp_path):
    owner, dev = solar
    rec = setup_claim(node, owner, tmp_path)
    assert rec.sd_receipt and receipts.stored_receipt(node, rec.id) == rec.sd_receipt
    again = node.retire(
        rec.bundle.parent_id,
        wh=120,
        beneficiary='Café "La Esquina"',
        purpose="scope2-market-based",
        request_id="claim-1",
    )
    assert again.sd_receipt == rec.sd_receipt  # idempotent replay: the same receipt
    got = receipts.verify_receipt(rec.sd_receipt, keys_of(node), issuer=node.node_id)
    d = got.disclosed
    assert d["claim_id"] == rec.id and d["bundle"] == rec.bundle.id and d["wh"] == 120
    assert d["beneficiary"] == 'Café "La Esquina"' and d["owner"] == owner
    assert d["hour"] == [rec.bundle.interval_start, rec.bundle.interval_end]
    assert d["device"] == dev.id and d["source"] == "ENERGY_SOURCE_SOLAR"
    assert h3.is_valid_cell(d["cell"]) and h3.get_resolution(d["cell"]) <= 7
    assert d["inclusion"]["batch"]["count"] == len(ROWS)
    assert set(d) == set(receipts.FIELDS)
    salts = [
        sd.b64url_decode(sd.decode_disclosure(x)[0], "salt")
        for x in sd.parse(rec.sd_receipt).disclosures
    ]
    assert all(len(s) >= 16 for s in salts) and len(set(salts)) == len(salts)
    with pytest.raises(NotFound):
        receipts.stored_receipt(node, f"{node.node_id}/claim/99")
    from eap.node.records.models import Principal

    with pytest.raises(NotFound):  # another account: no receipt, not even its existence
        receipts.stored_receipt(node, rec.id, Principal("account", "acct_someoneelse"))


def test_presentation_shows_only_the_chosen_fields():
    token = issued()
    shown = receipts.present(token, ["hour", "zone", "wh"])
    got = receipts.verify_receipt(shown, KEYS, require=["wh", "hour"])
    assert list(got.disclosed) == ["hour", "zone", "wh"]
    with pytest.raises(SdError, match="not disclosed: inclusion"):
        receipts.verify_receipt(shown, KEYS, require=["wh", "inclusion"])
    assert set(got.to_dict()["undisclosed"]) == set(receipts.FIELDS) - {"hour", "zone", "wh"}
    payload = receipts.payload_of(shown)
    assert set(payload) == {"iss", "vct", "_sd_alg", "_sd"}
    with pytest.raises(InvalidArgument, match="unknown receipt field"):
        receipts.present(token, ["hour", "salary"])


def test_hidden_wh_cannot_be_matched_without_its_salt():
    """An attacker with a presentation lacking `wh` tries every plausible Wh against every
    digest: nothing matches.  The same search with the salt finds it at once, so only the
    128-bit salt protects the value, and the salt never leaves the holder."""
    token = issued()
    shown = receipts.present(token, ["hour", "zone"])
    digests = set(receipts.payload_of(shown)["_sd"])
    true_wh = receipts.verify_receipt(token, KEYS).disclosed["wh"]
    salt = sd.decode_disclosure(disclosures(token)["wh"])[0]
    assert salt not in shown

    def candidates(s: str):
        for wh in range(0, 20_001):
            yield wh, sd.digest(sd.disclosure(s, "wh", wh))

    for guess_salt in ("", "AAAAAAAAAAAAAAAAAAAAAA", sd.b64url(b"\0" * 16)):
        assert not any(d in digests for _, d in candidates(guess_salt))
    for wh in range(0, 20_001):  # nor any unsalted hash of the bare value
        for raw in (str(wh).encode(), json.dumps(["wh", wh]).encode()):
            assert sd.b64url(hashlib.sha256(raw).digest()) not in digests
    found = [wh for wh, d in candidates(salt) if d in digests]
    assert found == [true_wh]


# -- tampering ------------------------------------------------------------------------------


TOKEN = issued()
FULL = receipts.present(TOKEN, list(receipts.FIELDS))


def _replace_disclosure(token: str, name: str, mutate) -> str:
    parsed = sd.parse(token)
    out = []
    for disc in parsed.disclosures:
        salt, n, value = sd.decode_disclosure(disc)
        if n == name:
            salt, value = mutate(salt, value)
            disc = sd.b64url(json.dumps([salt, n, value]).encode())
        out.append(disc)
    return "~".join([parsed.jws, *out]) + "~"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(receipts.FIELDS),
    new=st.one_of(
        st.integers(-(2**63), 2**63),
        st.text(max_size=40),
        st.lists(st.integers(0, 2**40), min_size=2, max_size=2),
    ),
)
def test_any_changed_field_value_is_refused(name, new):
    original = receipts.verify_receipt(FULL, KEYS).disclosed[name]
    if new == original:
        return
    bad = _replace_disclosure(FULL, name, lambda s, v: (s, new))
    with pytest.raises(SdError, match="not committed"):
        receipts.verify_receipt(bad, KEYS)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(receipts.FIELDS), salt=st.binary(min_size=16, max_size=32))
def test_any_changed_salt_is_refused(name, salt):
    bad = _replace_disclosure(FULL, name, lambda s, v: (sd.b64url(salt), v))
    with pytest.raises(SdError):
        receipts.verify_receipt(bad, KEYS)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_changed_byte_of_the_issuer_jwt_is_refused(data):
    jws = sd.parse(FULL).jws
    at = data.draw(st.integers(0, len(jws) - 1))
    ch = data.draw(
        st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    )
    if jws[at] == ch:
        return
    bad = jws[:at] + ch + jws[at + 1 :] + FULL[len(jws) :]
    with pytest.raises(SdError):
        receipts.verify_receipt(bad, KEYS)


def _bad_proof(what: str):
    _, proof = _inputs()
    bad = pb.RecordProof()
    bad.CopyFrom(proof)
    if what == "path":
        bad.path[0] = bytes([bad.path[0][0] ^ 1]) + bad.path[0][1:]
    elif what == "root":
        bad.batch.merkle_root = bytes(32)
    elif what == "index":
        bad.index = (bad.index + 1) % bad.batch.count
    elif what == "batch signature":
        bad.batch.signature = bytes([bad.batch.signature[0] ^ 1]) + bad.batch.signature[1:]
    elif what == "record":
        bad.record.carbon_mg_per_kwh += 1
    return bad


@pytest.mark.parametrize("what", ["path", "root", "index", "batch signature", "record"])
def test_a_wrong_merkle_inclusion_is_refused_even_when_the_issuer_signed_it(what):
    """The inclusion is checked on its own merits, not only through the issuer's signature."""
    token = issued(proof=_bad_proof(what))
    shown = receipts.present(token, ["wh", "inclusion"])
    with pytest.raises(SdError, match="inclusion"):
        receipts.verify_receipt(shown, KEYS)
    assert receipts.verify_receipt(receipts.present(token, ["wh"]), KEYS).disclosed == {"wh": 300}


def test_wrong_key_issuer_or_duplicates_are_refused():
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    with pytest.raises(SdError, match="signature"):
        receipts.verify_receipt(FULL, {ISSUER: {RING.active_key_id: other}})
    with pytest.raises(SdError, match="no trusted public key"):
        receipts.verify_receipt(FULL, {"barcelona.example": KEYS[ISSUER]})
    with pytest.raises(SdError, match="expected"):
        receipts.verify_receipt(FULL, KEYS, issuer="barcelona.example")
    parsed = sd.parse(FULL)
    dup = "~".join([parsed.jws, parsed.disclosures[0], parsed.disclosures[0]]) + "~"
    with pytest.raises(SdError, match="twice"):
        receipts.verify_receipt(dup, KEYS)
    for junk in ("", "~", "a.b.c~", "x" * 300_000, FULL.replace("~", "~~", 1), "é~"):
        with pytest.raises(SdError):
            receipts.verify_receipt(junk, KEYS)


# -- key binding ------------------------------------------------------------------------------


def test_key_bound_receipt_needs_the_holders_signature():
    holder = Ed25519PrivateKey.generate()
    token = issued(holder_key=holder.public_key().public_bytes_raw())
    assert receipts.payload_of(token)["cnf"]["jwk"]["crv"] == "Ed25519"
    with pytest.raises(InvalidArgument, match="holder"):
        receipts.present(token, ["wh"])
    shown = receipts.present(token, ["wh", "zone"], holder.sign, "nonce-1", "verifier-x")
    got = receipts.verify_receipt(shown, KEYS, nonce="nonce-1", audience="verifier-x")
    assert got.disclosed == {"wh": 300, "zone": "CO-ANT"} and got.key_binding["aud"] == "verifier-x"
    with pytest.raises(SdError, match="nonce"):
        receipts.verify_receipt(shown, KEYS, nonce="nonce-2")
    with pytest.raises(SdError, match="aud"):
        receipts.verify_receipt(shown, KEYS, audience="verifier-y")
    with pytest.raises(SdError, match="needs a KB-JWT"):
        receipts.verify_receipt(shown.rsplit("~", 1)[0] + "~", KEYS)
    # a disclosure dropped after the holder signed: sd_hash no longer matches
    head, *discs, kb = shown.split("~")
    with pytest.raises(SdError, match="sd_hash"):
        receipts.verify_receipt("~".join([head, discs[0], kb]), KEYS)
    # someone else's key cannot bind it
    thief = receipts.present(token, ["wh"], Ed25519PrivateKey.generate().sign, "n", "a")
    with pytest.raises(SdError, match="holder key"):
        receipts.verify_receipt(thief, KEYS)
    # an unbound receipt refuses a holder signer and a KB-JWT
    with pytest.raises(InvalidArgument, match="binds no holder key"):
        receipts.present(TOKEN, ["wh"], holder.sign, "n", "a")
    unbound = receipts.present(TOKEN, ["wh"])
    with pytest.raises(SdError, match="binds no holder key"):
        receipts.verify_receipt(unbound + shown.rsplit("~", 1)[1], KEYS)


# -- gRPC: the holder gets the receipt, nobody else does --------------------------------------


def test_grpc_returns_the_sd_receipt_to_the_holder_only(node, solar, tmp_path):
    owner, _ = solar
    node.import_readings(
        __import__("support").write_csv(tmp_path / "m.csv", ROWS), request_id="imp"
    )
    node.issue(request_id="iss")
    server, port = build_server(node, "127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = node_api_pb2_grpc.NodeApiStub(channel)
        op = (("authorization", f"Bearer {node.config.api_token()}"),)
        holder = stub.CreateAccount(api.CreateAccountRequest(request_id="h"), metadata=op)
        other = stub.CreateAccount(api.CreateAccountRequest(request_id="o"), metadata=op)
        b = stub.ListBundles(
            api.ListBundlesRequest(purpose=api.READ_PURPOSE_OPERATIONS, owner=owner), metadata=op
        ).bundles[0]
        moved = stub.TransferBundle(
            api.TransferBundleRequest(
                request_id="t", bundle_id=b.id, to_account=holder.account.id, wh=40
            ),
            metadata=op,
        )
        as_holder = (("authorization", f"Bearer {holder.token}"),)
        as_other = (("authorization", f"Bearer {other.token}"),)
        rec = stub.RetireBundle(
            api.RetireBundleRequest(
                request_id="r",
                bundle_id=moved.transferred.id,
                beneficiary="Metro",
                purpose="scope2",
            ),
            metadata=as_holder,
        )
        assert rec.sd_receipt
        assert receipts.verify_receipt(rec.sd_receipt, keys_of(node)).disclosed["wh"] == 40
        mine = stub.ListClaims(
            api.ListClaimsRequest(purpose=api.READ_PURPOSE_HOLDINGS), metadata=as_holder
        ).claims
        assert [c.sd_receipt for c in mine] == [rec.sd_receipt]
        for md in (as_other, as_holder):
            seen = stub.ListClaims(
                api.ListClaimsRequest(purpose=api.READ_PURPOSE_TRANSPARENCY), metadata=md
            ).claims
            assert [c.id for c in seen] == [rec.id]
            assert seen[0].sd_receipt == ""  # public reads never carry the salts
        assert (
            stub.ListClaims(
                api.ListClaimsRequest(purpose=api.READ_PURPOSE_HOLDINGS), metadata=as_other
            ).claims
            == []
        )
        ops = stub.ListClaims(
            api.ListClaimsRequest(purpose=api.READ_PURPOSE_OPERATIONS), metadata=op
        ).claims
        assert ops[0].sd_receipt == rec.sd_receipt
    finally:
        channel.close()
        server.stop(0).wait()


# -- the CLI, end to end ------------------------------------------------------------------------


def _cli(*args: str, home: Path | None = None, ok: bool = True):
    extra = ["--home", str(home)] if home is not None else []
    proc = subprocess.run([*CLI, *args, *extra], capture_output=True, text=True, timeout=120)
    if ok:
        assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def test_cli_retire_present_verify_and_tampered_file(tmp_path):
    home = tmp_path / "node"
    _cli(
        "init", "--node-id", "medellin.example", "--zone", "CO-ANT", "--operator-signed", home=home
    )
    owner = json.loads(_cli("account", "create", "--json", home=home).stdout)["account"]["id"]
    _cli(
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
        home=home,
    )
    csv = __import__("support").write_csv(tmp_path / "m.csv", ROWS)
    _cli("meter", "import", str(csv), home=home)
    _cli("issue", home=home)
    listed = _cli("bundles", "--owner", owner, "--json", home=home).stdout
    bundle = json.loads(listed.splitlines()[0])
    claim = json.loads(
        _cli(
            "retire",
            bundle["id"],
            "--beneficiary",
            "[bold]Metro[/bold]",
            "--purpose",
            "scope2",
            "--json",
            home=home,
        ).stdout
    )
    ident = json.loads(_cli("identity", "--json", home=home).stdout)
    key = next(f"{k['keyId']}={k['publicKey']}" for k in ident["keys"])
    shown = tmp_path / "shown.sdjwt"
    _cli(
        "receipt",
        "present",
        claim["id"],
        "--show",
        "hour,zone,wh,beneficiary",
        "--out",
        str(shown),
        home=home,
    )
    ok = _cli("receipt", "verify", str(shown), "--issuer-key", key)
    assert "receipt OK: issued by medellin.example" in ok.stdout
    assert '  beneficiary: "[bold]Metro[/bold]"' in ok.stdout  # literally, no markup
    assert f"  hour: [{bundle['interval_start']}, {bundle['interval_end']}]" in ok.stdout
    assert '  zone: "CO-ANT"' in ok.stdout and "  wh: 200" in ok.stdout
    assert "not disclosed: claim_id, bundle, cell" in ok.stdout
    as_json = json.loads(
        _cli("receipt", "verify", str(shown), "--issuer-key", key, "--json").stdout
    )
    assert as_json["disclosed"]["wh"] == 200
    ident_file = tmp_path / "identity.json"
    ident_file.write_text(_cli("identity", "--json", home=home).stdout)
    by_identity = _cli("receipt", "verify", str(shown), "--identity", str(ident_file))
    assert by_identity.stdout == ok.stdout
    wrong_node = _cli(
        "receipt",
        "verify",
        str(shown),
        "--identity",
        str(ident_file),
        "--issuer",
        "barcelona.example",
        ok=False,
    )
    assert wrong_node.returncode == 13 and "barcelona.example" in wrong_node.stderr
    needs = _cli(
        "receipt", "verify", str(shown), "--issuer-key", key, "--require", "wh,inclusion", ok=False
    )
    assert needs.returncode == 13 and "not disclosed: inclusion" in needs.stderr
    empty = _cli(
        "receipt",
        "present",
        claim["id"],
        "--show",
        ",",
        "--out",
        str(tmp_path / "z"),
        home=home,
        ok=False,
    )
    assert empty.returncode == 2 and "at least one field" in empty.stderr
    # the holder exports the full receipt, then presents from the file alone
    full = tmp_path / "full.sdjwt"
    _cli("receipt", "export", claim["id"], "--out", str(full), home=home)
    again = tmp_path / "again.sdjwt"
    _cli("receipt", "present", "--from", str(full), "--show", "wh,inclusion", "--out", str(again))
    out = _cli("receipt", "verify", str(again), "--issuer-key", key).stdout
    assert "inclusion: verified: leaf 0 of batch medellin.example#1" in out
    # tampered: wh 200 -> 999 inside its disclosure
    text = shown.read_text().strip()
    jws, *discs, tail = text.split("~")
    for i, d in enumerate(discs):
        salt, name, _value = json.loads(base64.urlsafe_b64decode(d + "=" * (-len(d) % 4)))
        if name == "wh":
            discs[i] = (
                base64.urlsafe_b64encode(json.dumps([salt, name, 999]).encode())
                .rstrip(b"=")
                .decode()
            )
    bad = tmp_path / "bad.sdjwt"
    bad.write_text("~".join([jws, *discs, tail]) + "\n")
    refused = _cli("receipt", "verify", str(bad), "--issuer-key", key, ok=False)
    assert refused.returncode == 13 and "not committed" in refused.stderr
    assert "999" not in refused.stdout
    # a key of another node
    stranger = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    from eap.node.crypto.keys import key_id_for

    wrong = _cli(
        "receipt",
        "verify",
        str(shown),
        "--issuer-key",
        f"{key_id_for(stranger)}={base64.b64encode(stranger).decode()}",
        ok=False,
    )
    assert wrong.returncode == 13 and "no trusted public key" in wrong.stderr
    # bad usage and bad input: clear messages, non-zero exit
    assert _cli("receipt", "verify", str(shown), ok=False).returncode == 2
    unknown = _cli(
        "receipt",
        "present",
        claim["id"],
        "--show",
        "salary",
        "--out",
        str(tmp_path / "x"),
        home=home,
        ok=False,
    )
    assert unknown.returncode != 0 and "unknown receipt field salary" in unknown.stderr
    missing = _cli(
        "receipt",
        "export",
        "medellin.example/claim/77",
        "--out",
        str(tmp_path / "y"),
        home=home,
        ok=False,
    )
    assert missing.returncode != 0 and "no claim" in missing.stderr
    for cmd in (
        ["receipt", "--help"],
        ["receipt", "present", "--help"],
        ["receipt", "verify", "--help"],
        ["receipt", "export", "--help"],
    ):
        assert "Usage" in _cli(*cmd).stdout


def test_cli_presents_a_key_bound_receipt_with_the_holder_key(tmp_path):
    holder = Ed25519PrivateKey.generate()
    pem = tmp_path / "holder.pem"
    pem.write_bytes(
        holder.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    full = tmp_path / "full.sdjwt"
    full.write_text(issued(holder.public_key().public_bytes_raw()) + "\n")
    out = tmp_path / "p.sdjwt"
    key = f"{RING.active_key_id}={base64.b64encode(KEYS[ISSUER][RING.active_key_id]).decode()}"
    no_key = _cli(
        "receipt", "present", "--from", str(full), "--show", "wh", "--out", str(out), ok=False
    )
    assert no_key.returncode != 0 and "holder" in no_key.stderr
    _cli(
        "receipt",
        "present",
        "--from",
        str(full),
        "--show",
        "wh",
        "--out",
        str(out),
        "--holder-key",
        str(pem),
        "--nonce",
        "n-1",
        "--audience",
        "auditor",
    )
    ok = _cli(
        "receipt",
        "verify",
        str(out),
        "--issuer-key",
        key,
        "--nonce",
        "n-1",
        "--audience",
        "auditor",
    )
    assert "holder key binding: verified" in ok.stdout
    replay = _cli("receipt", "verify", str(out), "--issuer-key", key, "--nonce", "n-2", ok=False)
    assert replay.returncode == 13 and "nonce" in replay.stderr


# -- serials issued by another node, and claims older than SD receipts ------------------------


def test_receipt_of_imported_serials_proves_inclusion_in_the_issuers_batch(tmp_path):
    from test_transfers_support import Federation

    f = Federation(tmp_path / "fed", "ab")
    try:
        a, b = f["a"], f["b"]
        a.engine.send(a.bundles[1], to=f.to("b"), wh=100, request_id="move")
        f.settle()
        moved = f"{a.node_id}/1000-1100"
        rec = b.node.retire(
            moved, wh=40, beneficiary="Metro", purpose="scope2", request_id="claim-at-b"
        )
        shown = receipts.present(rec.sd_receipt, ["wh", "inclusion"])
        both = {**keys_of(a.node), **keys_of(b.node)}
        got = receipts.verify_receipt(shown, both, issuer=b.node_id)
        assert got.issuer == b.node_id and got.disclosed["wh"] == 40
        assert got.disclosed["inclusion"]["batch"]["issuer"] == a.node_id
        # the receipt's issuer alone cannot vouch for the other node's batch
        with pytest.raises(SdError, match=f"inclusion: batch {a.node_id}"):
            receipts.verify_receipt(shown, keys_of(b.node))
        assert receipts.verify_receipt(
            receipts.present(rec.sd_receipt, ["wh"]), keys_of(b.node)
        ).disclosed == {"wh": 40}
    finally:
        for city in f.cities.values():
            city.node.close()


def test_claims_made_before_sd_receipts_say_so(node, solar, tmp_path):
    from sqlalchemy import update

    from eap.node.errors import FailedPrecondition
    from eap.node.store import schema as t

    owner, _ = solar
    rec = setup_claim(node, owner, tmp_path)
    with node.store.transaction() as conn:
        conn.execute(update(t.claims).where(t.claims.c.id == rec.id).values(sd_receipt=None))
    with pytest.raises(FailedPrecondition, match="before SD receipts"):
        receipts.stored_receipt(node, rec.id)
    listed = node.list_claims(purpose=Purpose.OPERATIONS).items
    assert [c.sd_receipt for c in listed] == [""]


def test_only_ed25519_algorithms_are_accepted():
    """`EdDSA` and RFC 9864's `Ed25519` verify; `none`, HMAC or ECDSA never do."""
    parsed = sd.parse(TOKEN)
    payload = receipts.payload_of(TOKEN)
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    for alg, ok in (
        ("Ed25519", True),
        ("EdDSA", True),
        ("none", False),
        ("HS256", False),
        ("ES256", False),
        ("ed25519", False),
    ):
        head = {"alg": alg, "kid": RING.active_key_id, "typ": receipts.TYP}
        token = "~".join([sd.sign_jws(head, payload, key.sign), *parsed.disclosures]) + "~"
        if ok:
            assert receipts.verify_receipt(token, KEYS).disclosed["wh"] == 300
        else:
            with pytest.raises(SdError, match="alg"):
                receipts.verify_receipt(token, KEYS)
