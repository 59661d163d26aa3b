"""Holder-held keys on one node: moves of a holder-signed account need the holder's signature.

Transfers, splits and claims through the domain layer (SQLite and PostgreSQL): the holder's
signature moves the bundle; the operator alone, an account token alone, another key, a
tampered field, an expired or reused signature are all refused with nothing changed; custodial
accounts keep working as before.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import os
import stat

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from support import write_csv

from eap.node.domain import holder_auth as H
from eap.node.errors import InvalidArgument, PermissionDenied
from eap.node.records.enums import Purpose, Status
from eap.node.records.models import Principal


def _issue(node, tmp_path, owner: str, tag: str, hours: int = 3) -> list[str]:
    node.register_device(
        request_id=f"dev-{tag}",
        local_ref=f"roof-{tag}",
        capacity_w=100_000,
        source="solar",
        technology="photovoltaic",
        commissioned_on="2020-01-01",
        latitude=6.2,
        longitude=-75.5,
        zone="CO-ANT",
        owner=owner,
        meter_id=f"m-{tag}",
        attestation_evidence="grid connection",
    )
    t0 = dt.datetime(2024, 1, 1)
    rows = [
        (
            f"{t0 + dt.timedelta(hours=h):%Y-%m-%d %H:%M:%S}",
            f"{t0 + dt.timedelta(hours=h + 1):%Y-%m-%d %H:%M:%S}",
            f"m-{tag}",
            1000 + h,
        )
        for h in range(hours)
    ]
    node.import_readings(write_csv(tmp_path / f"{tag}.csv", rows), request_id=f"imp-{tag}")
    node.issue(request_id=f"iss-{tag}")
    items = node.list_bundles(purpose=Purpose.OPERATIONS, owner=owner, status=int(Status.ACTIVE))
    return [b.id for b in items.items]


@pytest.fixture
def held(node, tmp_path):
    """A holder-signed account (its key, its token, three bundles) and a custodial buyer."""
    key = Ed25519PrivateKey.generate()
    created = node.create_account(request_id="holder", holder_public_key=H.public_key_of(key))
    buyer = node.create_account(request_id="buyer").account.id
    bundles = _issue(node, tmp_path, created.account.id, "h")
    return dict(
        key=key, account=created.account.id, token=created.token, buyer=buyer, bundles=bundles
    )


def _later(seconds: int = 300) -> int:
    return H.now_ms() + seconds * 1000


def _transfer_auth(node, key, account, bundle, *, to, wh=0, rid, expires=None, **extra):
    intent = H.Intent(
        node_id=node.node_id,
        account=account,
        operation=H.TRANSFER,
        moves=((bundle, wh),),
        destination=to,
        request_id=rid,
        expires_at_ms=expires or _later(),
        **extra,
    )
    return H.sign(key, intent)


def _snapshot(node):
    b = node.list_bundles(purpose=Purpose.OPERATIONS, page_size=1000).items
    return sorted((x.id, x.owner, x.status) for x in b), node.status().wh_retired


def test_the_holder_key_is_on_the_account_record_but_not_in_transparency_reads(node, held):
    acct = next(
        a for a in node.list_accounts(purpose=Purpose.OPERATIONS).items if a.id == held["account"]
    )
    assert acct.holder_public_key == H.public_key_of(held["key"])
    public = node.list_accounts(purpose=Purpose.TRANSPARENCY).items
    assert all(a.holder_public_key is None for a in public)
    buyer = next(
        a for a in node.list_accounts(purpose=Purpose.OPERATIONS).items if a.id == held["buyer"]
    )
    assert buyer.holder_public_key is None
    message, other = H.DOMAIN + b"presentation", b"EAP-OTHER-v1\x00presentation"
    signature = held["key"].sign(message)
    assert H.signed_by_holder(acct, message, signature)
    assert not H.signed_by_holder(acct, other, signature)
    assert not H.signed_by_holder(buyer, message, signature)


def test_signed_transfer_split_and_claim_move_the_bundles(node, held):
    key, acct, buyer, bundles = held["key"], held["account"], held["buyer"], held["bundles"]
    auth = _transfer_auth(node, key, acct, bundles[0], to=buyer, wh=400, rid="t-1")
    res = node.transfer(bundles[0], to_account=buyer, wh=400, request_id="t-1", holder=auth)
    assert res.transferred.owner == buyer and res.transferred.wh == 400
    assert res.remainder.owner == acct
    # The same request again (even re-signed with a new expiry) is the first result.
    again = node.transfer(
        bundles[0],
        to_account=buyer,
        wh=400,
        request_id="t-1",
        holder=_transfer_auth(
            node, key, acct, bundles[0], to=buyer, wh=400, rid="t-1", expires=_later(600)
        ),
    )
    assert again == res
    claim = H.Intent(
        node_id=node.node_id,
        account=acct,
        operation=H.RETIRE,
        moves=((bundles[1], 0),),
        beneficiary="Escuela 12",
        purpose="scope2",
        request_id="c-1",
        expires_at_ms=_later(),
    )
    receipt = node.retire(
        bundles[1],
        beneficiary="Escuela 12",
        purpose="scope2",
        request_id="c-1",
        holder=H.sign(key, claim),
        principal=Principal("account", acct),
    )
    assert receipt.bundle.status == Status.RETIRED and receipt.beneficiary == "Escuela 12"


def test_operator_or_token_alone_is_refused_and_nothing_changes(node, held):
    bundles, buyer = held["bundles"], held["buyer"]
    before = _snapshot(node)
    for principal in (Principal.operator(), Principal("account", held["account"])):
        with pytest.raises(PermissionDenied, match="needs its holder's signature"):
            node.transfer(bundles[0], to_account=buyer, request_id="op-1", principal=principal)
        with pytest.raises(PermissionDenied, match="holder's signature"):
            node.retire(
                bundles[0], beneficiary="x", purpose="y", request_id="op-2", principal=principal
            )
    assert _snapshot(node) == before
    # A refused request id stays free: the holder's own request with it goes through.
    auth = _transfer_auth(node, held["key"], held["account"], bundles[0], to=buyer, rid="op-1")
    assert (
        node.transfer(
            bundles[0], to_account=buyer, request_id="op-1", holder=auth
        ).transferred.owner
        == buyer
    )


def test_forged_tampered_expired_and_reused_signatures_are_refused(node, held):
    key, acct, buyer, bundles = held["key"], held["account"], held["buyer"], held["bundles"]
    other = node.create_account(request_id="other").account.id
    before = _snapshot(node)
    good = dict(to=buyer, wh=100, rid="r-1")

    def attempt(auth, *, to=buyer, wh=100, rid="r-1", bundle=bundles[0]):
        return node.transfer(bundle, to_account=to, wh=wh, request_id=rid, holder=auth)

    stranger = Ed25519PrivateKey.generate()
    cases = {
        "wrong key": (_transfer_auth(node, stranger, acct, bundles[0], **good), {}),
        "tampered amount": (_transfer_auth(node, key, acct, bundles[0], **good), {"wh": 900}),
        "tampered destination": (
            _transfer_auth(node, key, acct, bundles[0], **good),
            {"to": other},
        ),
        "other bundle": (
            _transfer_auth(node, key, acct, bundles[0], **good),
            {"bundle": bundles[1]},
        ),
        "other node": (
            H.sign(
                key,
                H.Intent(
                    node_id="elsewhere.example",
                    account=acct,
                    operation=H.TRANSFER,
                    moves=((bundles[0], 100),),
                    destination=buyer,
                    request_id="r-1",
                    expires_at_ms=_later(),
                ),
            ),
            {},
        ),
        "signed as a claim": (
            H.sign(
                key,
                H.Intent(
                    node_id=node.node_id,
                    account=acct,
                    operation=H.RETIRE,
                    moves=((bundles[0], 100),),
                    destination=buyer,
                    request_id="r-1",
                    expires_at_ms=_later(),
                ),
            ),
            {},
        ),
    }
    for name, (auth, change) in cases.items():
        with pytest.raises(PermissionDenied, match="does not authorize"):
            attempt(auth, **change)
        assert _snapshot(node) == before, name
    expired = _transfer_auth(node, key, acct, bundles[0], expires=H.now_ms() - 1, **good)
    with pytest.raises(PermissionDenied, match="expired"):
        attempt(expired)
    forged_expiry = dataclasses.replace(
        _transfer_auth(node, key, acct, bundles[0], **good), expires_at_ms=_later(900)
    )
    with pytest.raises(PermissionDenied, match="does not authorize"):
        attempt(forged_expiry)
    with pytest.raises(InvalidArgument, match="hours ahead"):
        attempt(_transfer_auth(node, key, acct, bundles[0], expires=_later(2 * 86400), **good))
    assert _snapshot(node) == before
    auth = _transfer_auth(node, key, acct, bundles[0], **good)
    with pytest.raises(PermissionDenied, match="does not authorize"):  # for another request
        attempt(auth, rid="r-2")
    assert _snapshot(node) == before
    attempt(auth)
    moved = _snapshot(node)
    assert moved != before
    with pytest.raises(PermissionDenied, match="does not authorize"):  # and once used
        attempt(auth, rid="r-3", wh=100, bundle=bundles[1])
    assert _snapshot(node) == moved


def test_a_used_signature_is_never_accepted_again(node, held):
    """Even with the request's idempotency record gone and the bundle back with the holder,
    a spent signature moves nothing."""
    key, acct, buyer, bundles = held["key"], held["account"], held["buyer"], held["bundles"]
    auth = _transfer_auth(node, key, acct, bundles[0], to=buyer, rid="u-1")
    node.transfer(bundles[0], to_account=buyer, request_id="u-1", holder=auth)
    node.transfer(bundles[0], to_account=acct, request_id="back")  # custodial buyer returns it
    from eap.node.store import schema as t

    with node.store.transaction() as conn:
        conn.execute(t.idempotency.delete().where(t.idempotency.c.request_id == "u-1"))
    before = _snapshot(node)
    assert node.get_bundle(bundles[0]).owner == acct
    with pytest.raises(PermissionDenied, match="already used"):
        node.transfer(bundles[0], to_account=buyer, request_id="u-1", holder=auth)
    assert _snapshot(node) == before


def test_custodial_accounts_are_unchanged(node, tmp_path):
    owner = node.create_account(request_id="cust").account.id
    buyer = node.create_account(request_id="cust-buyer").account.id
    bundles = _issue(node, tmp_path, owner, "c")
    res = node.transfer(bundles[0], to_account=buyer, wh=5, request_id="c-t")
    assert res.transferred.owner == buyer
    rec = node.retire(
        bundles[1],
        beneficiary="b",
        purpose="p",
        request_id="c-r",
        principal=Principal("account", owner),
    )
    assert rec.bundle.status == Status.RETIRED


def test_holder_keys_parse_from_file_base64_and_hex(tmp_path):
    raw = H.public_key_of(Ed25519PrivateKey.generate())
    (tmp_path / "k.pub").write_text(base64.b64encode(raw).decode() + "\n")
    for text in (
        str(tmp_path / "k.pub"),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.hex(),
    ):
        assert H.parse_public_key(text) == raw, text
    for bad in ("", "not a key", base64.b64encode(raw[:31]).decode(), str(tmp_path)):
        with pytest.raises(InvalidArgument, match="holder_key"):
            H.parse_public_key(bad)


def test_bad_holder_keys_are_refused(node):
    for bad in (b"\x01" * 31, b"\x00" * 33):
        with pytest.raises(InvalidArgument, match="holder_public_key"):
            node.create_account(request_id=f"bad-{len(bad)}", holder_public_key=bad)
    with pytest.raises(PermissionDenied):
        node.create_account(
            request_id="acct-tok",
            holder_public_key=b"\x01" * 32,
            principal=Principal("account", "acct_x"),
        )


def test_one_holder_key_gives_unrelated_account_ids(node):
    raw = H.public_key_of(Ed25519PrivateKey.generate())
    ids = [
        node.create_account(request_id=f"same-{i}", holder_public_key=raw).account.id
        for i in range(3)
    ]
    from eap.node.crypto import account_id_from_public_key

    assert len(set(ids)) == 3 and account_id_from_public_key(raw) not in ids


_text = st.text(max_size=12)
_i64 = st.integers(-(2**63), 2**63 - 1)
_intents = st.builds(
    H.Intent,
    node_id=_text,
    account=_text,
    operation=st.sampled_from(H.OPERATIONS),
    moves=st.lists(st.tuples(_text, _i64), max_size=3).map(tuple),
    request_id=_text,
    expires_at_ms=_i64,
    destination=_text,
    price_minor=_i64,
    currency=_text,
    beneficiary=_text,
    purpose=_text,
    consumption_start=_i64,
    consumption_end=_i64,
    consumption_zone=_text,
)


@settings(max_examples=300, deadline=None)
@given(_intents, _intents)
def test_canonical_message_is_injective(a, b):
    """Two different requests never share signing bytes, so no signature serves both."""
    assert (a.message() == b.message()) == (a == b)
    assert a.message().startswith(H.DOMAIN)


def test_cli_holder_new_writes_a_private_key_and_signs(tmp_path):
    from eap.node.cli import main

    out = tmp_path / "wallet"
    res = CliRunner().invoke(main, ["keys", "holder-new", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    key_file = out / H.PRIVATE_KEY_FILE
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    key = H.load_private_key(key_file)
    assert H.parse_public_key(str(out / H.PUBLIC_KEY_FILE)) == H.public_key_of(key)
    again = CliRunner().invoke(main, ["keys", "holder-new", "--out", str(out)])
    assert again.exit_code != 0  # never overwrites a holder key
    assert H.load_private_key(key_file).private_bytes_raw() == key.private_bytes_raw()


def test_the_documented_test_vector():
    """docs/holder-keys.md: a wallet in another language checks itself against these bytes."""
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "holder-keys.md").read_text()
    blocks = re.findall(r"\n\n((?:    [0-9a-f]+\n)+)", page)
    message, signature = ("".join(b.split()) for b in blocks[:2])
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    intent = H.Intent(
        node_id="medellin.example",
        account="acct_" + "a" * 26,
        operation=H.TRANSFER,
        moves=(("medellin.example/0-1000", 250),),
        destination="acct_" + "b" * 26,
        request_id="req-1",
        expires_at_ms=1767225600000,
    )
    assert intent.message().hex() == message
    assert H.sign(key, intent).signature.hex() == signature
    assert H.public_key_of(key).hex() in page
    assert H.verify(H.public_key_of(key), bytes.fromhex(message), bytes.fromhex(signature))
