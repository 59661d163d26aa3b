"""Node key ring (create, load, sign, rotate, prune, file permissions) and peer key checks."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from eap.node.crypto import KeyRing, PeerKeys, PublicKeyInfo, fingerprint, key_id_for
from eap.node.crypto.keys import DEFAULT_RETIRED_VALIDITY_S, KEYRING_FILE
from eap.node.errors import (
    AlreadyExists,
    ConfigError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)

T0 = 1_700_000_000.0


def _key_files(path):
    return sorted(p.name for p in path.glob("ed25519_*.pem"))


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_create_writes_owner_only_files(tmp_path):
    keys = tmp_path / "home" / "keys"
    ring = KeyRing.create(keys, now=T0)
    assert _mode(keys) == 0o700
    (pem,) = keys.glob("ed25519_*.pem")
    assert _mode(pem) == 0o600
    assert _mode(keys / KEYRING_FILE) == 0o600
    assert pem.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert ring.active.created_at_ms == int(T0 * 1000)
    assert ring.active.retired_at_ms is None and ring.active.valid_until_ms is None


def test_key_id_is_prefix_of_sha256_of_raw_public_key(tmp_path):
    ring = KeyRing.create(tmp_path / "keys")
    raw = ring.active.public_key
    assert len(raw) == 32
    assert ring.active_key_id == "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]
    assert key_id_for(raw) == ring.active_key_id
    assert ring.fingerprint() == fingerprint(raw)
    assert ring.fingerprint().startswith("SHA256:") and len(ring.fingerprint()) == 7 + 43


def test_create_refuses_existing_ring(tmp_path):
    KeyRing.create(tmp_path / "keys")
    with pytest.raises(AlreadyExists):
        KeyRing.create(tmp_path / "keys")


def test_sign_then_verify_after_reload(tmp_path):
    ring = KeyRing.create(tmp_path / "keys")
    key_id, sig = ring.sign(b"data")
    assert key_id == ring.active_key_id and len(sig) == 64
    loaded = KeyRing.load(tmp_path / "keys")
    assert loaded.active == ring.active
    loaded.verify(key_id, b"data", sig)
    peers = PeerKeys({"node-a": ring.public_keys()})
    kid2, sig2 = loaded.sign(b"more")
    peers.verify("node-a", kid2, b"more", sig2)
    with pytest.raises(Unauthenticated):
        ring.verify(key_id, b"datA", sig)


def test_repr_does_not_show_private_key(tmp_path):
    ring = KeyRing.create(tmp_path / "keys")
    (pem,) = (tmp_path / "keys").glob("ed25519_*.pem")
    body = pem.read_text().splitlines()[1]
    assert body not in repr(ring)
    assert ring.active_key_id in repr(ring)


def test_rotation_keeps_old_key_verifying_until_its_validity_ends(tmp_path):
    ring = KeyRing.create(tmp_path / "keys", now=T0)
    old_id, old_sig = ring.sign(b"before rotation")
    new_id = ring.rotate(retired_validity_s=3600, now=T0 + 10)
    assert new_id != old_id and ring.active_key_id == new_id
    assert _key_files(tmp_path / "keys") == [new_id.replace(":", "_") + ".pem"]

    infos = ring.public_keys()
    assert set(infos) == {old_id, new_id}
    assert infos[old_id].retired_at_ms == int((T0 + 10) * 1000)
    assert infos[old_id].valid_until_ms == int((T0 + 10 + 3600) * 1000)
    assert infos[new_id].valid_until_ms is None

    assert ring.sign(b"x")[0] == new_id
    ring.verify(old_id, b"before rotation", old_sig, now=T0 + 3000)
    peers = PeerKeys({"node-a": infos})
    peers.verify("node-a", old_id, b"before rotation", old_sig, now=T0 + 3000)
    with pytest.raises(Unauthenticated, match="no longer valid"):
        peers.verify("node-a", old_id, b"before rotation", old_sig, now=T0 + 10 + 3600)
    with pytest.raises(Unauthenticated, match="no longer valid"):
        ring.verify(old_id, b"before rotation", old_sig, now=T0 + 10 + 3600)

    reloaded = KeyRing.load(tmp_path / "keys")
    assert reloaded.active_key_id == new_id
    assert reloaded.public_keys() == infos


def test_default_retired_validity_and_prune(tmp_path):
    ring = KeyRing.create(tmp_path / "keys", now=T0)
    first = ring.active_key_id
    second = ring.rotate(now=T0 + 1)
    assert ring.public_keys()[first].valid_until_ms == int(
        (T0 + 1 + DEFAULT_RETIRED_VALIDITY_S) * 1000
    )
    third = ring.rotate(retired_validity_s=None, now=T0 + 2)
    assert ring.prune(now=T0 + 2 + DEFAULT_RETIRED_VALIDITY_S) == [first]
    assert set(ring.public_keys()) == {second, third}
    assert set(KeyRing.load(tmp_path / "keys").public_keys()) == {second, third}


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o607])
def test_load_refuses_group_or_world_accessible_private_key(tmp_path, mode):
    ring = KeyRing.create(tmp_path / "keys")
    pem = tmp_path / "keys" / (ring.active_key_id.replace(":", "_") + ".pem")
    pem.chmod(mode)
    with pytest.raises(ConfigError, match="too open") as err:
        KeyRing.load(tmp_path / "keys")
    assert "chmod 600" in str(err.value)
    pem.chmod(0o400)
    KeyRing.load(tmp_path / "keys")


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_load_refuses_writable_key_directory(tmp_path):
    KeyRing.create(tmp_path / "keys")
    (tmp_path / "keys").chmod(0o777)
    with pytest.raises(ConfigError, match="chmod 700"):
        KeyRing.load(tmp_path / "keys")
    (tmp_path / "keys").chmod(0o755)  # readable listing is tolerated, like ~/.ssh
    KeyRing.load(tmp_path / "keys")


@pytest.mark.skipif(os.name != "posix", reason="POSIX symlinks")
def test_load_refuses_symlinked_private_key(tmp_path):
    ring = KeyRing.create(tmp_path / "keys")
    pem = tmp_path / "keys" / (ring.active_key_id.replace(":", "_") + ".pem")
    elsewhere = tmp_path / "elsewhere.pem"
    pem.rename(elsewhere)
    pem.symlink_to(elsewhere)
    with pytest.raises(ConfigError):
        KeyRing.load(tmp_path / "keys")


def test_load_missing_ring(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        KeyRing.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir(mode=0o700)
    with pytest.raises(ConfigError):
        KeyRing.load(tmp_path / "empty")


def test_load_refuses_metadata_not_matching_private_key(tmp_path):
    keys = tmp_path / "keys"
    ring = KeyRing.create(keys)
    other = KeyRing.create(tmp_path / "other")
    doc = json.loads((keys / KEYRING_FILE).read_text())
    # Point the active entry at another key's public half while keeping this file name.
    entry = other.active.as_dict()
    entry["key_id"] = ring.active_key_id
    doc["keys"] = [entry]
    (keys / KEYRING_FILE).write_text(json.dumps(doc))
    with pytest.raises(ConfigError):
        KeyRing.load(keys)
    (keys / KEYRING_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="malformed"):
        KeyRing.load(keys)


def test_passphrase_protected_ring(tmp_path):
    keys = tmp_path / "keys"
    ring = KeyRing.create(keys, passphrase=b"correct horse")
    (pem,) = keys.glob("ed25519_*.pem")
    assert b"ENCRYPTED PRIVATE KEY" in pem.read_bytes()
    with pytest.raises(ConfigError, match="needs a passphrase"):
        KeyRing.load(keys)
    with pytest.raises(ConfigError, match="wrong passphrase"):
        KeyRing.load(keys, passphrase=b"wrong")
    loaded = KeyRing.load(keys, passphrase=b"correct horse")
    assert loaded.active == ring.active
    loaded.rotate()
    (pem,) = keys.glob("ed25519_*.pem")
    assert b"ENCRYPTED PRIVATE KEY" in pem.read_bytes()
    KeyRing.load(keys, passphrase=b"correct horse")


def test_public_key_info_round_trip_and_mismatch():
    raw = bytes(range(32))
    info = PublicKeyInfo(key_id_for(raw), raw, 1, 2, 3)
    assert PublicKeyInfo.from_dict(info.as_dict()) == info
    bad = info.as_dict() | {"key_id": "ed25519:0000000000000000"}
    with pytest.raises(InvalidArgument):
        PublicKeyInfo.from_dict(bad)
    with pytest.raises(InvalidArgument):
        PublicKeyInfo.from_dict({"key_id": "x"})


def test_peer_keys_errors(tmp_path):
    ring = KeyRing.create(tmp_path / "keys")
    key_id, sig = ring.sign(b"m")
    peers = PeerKeys()
    with pytest.raises(PermissionDenied):
        peers.verify("node-a", key_id, b"m", sig)
    peers.set_peer("node-a", {})
    with pytest.raises(Unauthenticated, match="unknown key id"):
        peers.verify("node-a", key_id, b"m", sig)
    assert peers.add_key("node-a", ring.active.public_key) == key_id
    peers.verify("node-a", key_id, b"m", sig)
    assert peers.keys_of("node-a") == {key_id: (ring.active.public_key, None)}
    with pytest.raises(Unauthenticated, match="invalid signature"):
        peers.verify("node-a", key_id, b"n", sig)
    with pytest.raises(Unauthenticated):
        peers.verify("node-a", key_id, b"m", sig[:-1])
    with pytest.raises(InvalidArgument):
        peers.set_peer("node-b", {"ed25519:0000000000000000": (ring.active.public_key, None)})
    with pytest.raises(InvalidArgument):
        peers.set_peer("node-b", {key_id: (b"short", None)})
    assert "node-a" in peers and "node-b" not in peers
    peers.remove_peer("node-a")
    with pytest.raises(PermissionDenied):
        peers.verify("node-a", key_id, b"m", sig)


def test_rotation_in_two_processes_loses_no_key(tmp_path):
    keys = tmp_path / "keys"
    first = KeyRing.create(keys, now=T0)
    other = KeyRing.load(keys)  # a second process sharing the node home
    k0 = first.active_key_id
    k1 = first.rotate(now=T0 + 1)
    k2 = other.rotate(now=T0 + 2)  # starts from the ring on disk, not its stale copy
    on_disk = KeyRing.load(keys)
    assert on_disk.active_key_id == k2
    assert set(on_disk.public_keys()) == {k0, k1, k2}
    assert on_disk.public_keys()[k1].retired
    assert _key_files(keys) == [k2.replace(":", "_") + ".pem"]
    # `first` still signs with k1, which stays valid until it reloads.
    assert first.sign(b"x")[0] == k1
    first.reload()
    assert first.sign(b"x")[0] == k2
