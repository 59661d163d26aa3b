"""Account ids and device pseudonyms: derivation, known answers, node secret storage."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eap.node.crypto import (
    account_id_from_public_key,
    create_node_secret,
    device_pseudonym,
    load_node_secret,
)
from eap.node.crypto.pseudonyms import DEVICE_DOMAIN
from eap.node.errors import AlreadyExists, ConfigError, InvalidArgument

PSEUDONYM = re.compile(r"^[a-z2-7]{26}$")


def test_account_id_known_answer():
    raw = bytes.fromhex("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
    assert account_id_from_public_key(raw) == "acct_kzdvvj2umnduyauf35o36k6kw4"


@given(st.binary(min_size=32, max_size=32))
def test_account_id_is_truncated_base32_of_sha256(raw):
    acct = account_id_from_public_key(raw)
    expected = base64.b32encode(hashlib.sha256(raw).digest()).decode().lower()[:26]
    assert acct == "acct_" + expected
    assert PSEUDONYM.match(acct.removeprefix("acct_"))


@pytest.mark.parametrize("raw", [b"", b"\x00" * 31, b"\x00" * 33])
def test_account_id_needs_a_32_byte_key(raw):
    with pytest.raises(InvalidArgument):
        account_id_from_public_key(raw)


def test_device_pseudonym_known_answer_and_construction():
    secret = bytes(range(32))
    dev = device_pseudonym(secret, "meter-0001")
    assert dev == "dev_mvhfvicqb7uglnqhznvaampew4"
    mac = hmac.new(secret, DEVICE_DOMAIN + b"meter-0001", "sha256").digest()
    assert dev == "dev_" + base64.b32encode(mac).decode().lower()[:26]


@given(st.binary(min_size=16, max_size=64), st.text(min_size=1, max_size=40))
def test_device_pseudonym_depends_on_secret_and_reference(secret, ref):
    dev = device_pseudonym(secret, ref)
    assert PSEUDONYM.match(dev.removeprefix("dev_"))
    assert dev == device_pseudonym(secret, ref)
    assert dev != device_pseudonym(bytes(b ^ 1 for b in secret), ref)
    assert dev != device_pseudonym(secret, ref + "x")


def test_device_pseudonym_rejects_weak_input():
    with pytest.raises(ConfigError):
        device_pseudonym(b"short", "meter")
    with pytest.raises(InvalidArgument):
        device_pseudonym(b"\x00" * 32, "")


def test_node_secret_file(tmp_path):
    path = tmp_path / "keys" / "node.secret"
    secret = create_node_secret(path)
    assert len(secret) == 32 and load_node_secret(path) == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with pytest.raises(AlreadyExists):
        create_node_secret(path)
    if os.name == "posix":
        path.chmod(0o644)
        with pytest.raises(ConfigError, match="too open"):
            load_node_secret(path)
        path.chmod(0o600)
    path.write_bytes(b"\x00" * 31)
    with pytest.raises(ConfigError, match="32 bytes"):
        load_node_secret(path)
