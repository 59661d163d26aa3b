"""A holder-signed account's claim receipt is bound to the holder's key (SD-JWT ``cnf``):
only the holder can present it, and a verifier sees that the holder did."""

from __future__ import annotations

import pytest
from test_holder_keys import _later, held  # noqa: F401  (fixture)
from test_receipts import keys_of

from eap.node.crypto import sd
from eap.node.domain import holder_auth as H
from eap.node.domain import receipts
from eap.node.errors import InvalidArgument
from eap.node.records.models import Principal


def test_holder_signed_claim_receipt_needs_the_holder_to_present(node, held):  # noqa: F811
    key, acct, bundle = held["key"], held["account"], held["bundles"][0]
    intent = H.Intent(
        node_id=node.node_id, account=acct, operation=H.RETIRE, moves=((bundle, 0),),
        beneficiary="Escuela 12", purpose="scope2", request_id="c-kb", expires_at_ms=_later(),
    )
    receipt = node.retire(
        bundle, beneficiary="Escuela 12", purpose="scope2", request_id="c-kb",
        holder=H.sign(key, intent), principal=Principal("account", acct),
    )
    token = receipt.sd_receipt
    assert receipts.payload_of(token)["cnf"]  # bound to the holder's key
    with pytest.raises(InvalidArgument, match="holder"):
        receipts.present(token, ["hour", "wh"])  # the operator, who has the receipt, cannot
    shown = receipts.present(token, ["hour", "wh"], key.sign, nonce="n-1", audience="verifier")
    checked = receipts.verify_receipt(shown, keys_of(node), nonce="n-1", audience="verifier")
    assert checked.holder_key == H.public_key_of(key)
    assert set(checked.disclosed) == {"hour", "wh"}
    with pytest.raises(sd.SdError):  # another key cannot stand in for the holder's
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        forged = receipts.present(
            token, ["hour"], Ed25519PrivateKey.generate().sign, nonce="n-1", audience="verifier"
        )
        receipts.verify_receipt(forged, keys_of(node), nonce="n-1", audience="verifier")
    with pytest.raises(sd.SdError):  # a presentation made for one verifier fails at another
        receipts.verify_receipt(shown, keys_of(node), nonce="n-2", audience="verifier")
