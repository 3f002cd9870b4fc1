"""The node key on disk: round trips, encryption, modes, damage, and the libp2p peer id."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nacl.pwhash
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.peer.id import ID

from node.keystore import (
    CorruptKeyFileError,
    InsecureKeyFileError,
    KdfParams,
    KeyExistsError,
    KeyNotFoundError,
    KeystoreError,
    NodeIdentity,
    PassphraseRequiredError,
    WrongPassphraseError,
    create_identity,
    decode_key_file,
    encode_encrypted_key_file,
    encode_plain_key_file,
    key_path,
    load_identity,
    load_or_create_identity,
    read_key_info,
)

# The cheapest argon2id parameters, so the tests spend their time on behaviour.
FAST = KdfParams(nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN // 1024)
SEED = bytes(range(32))


def libp2p_peer_id(public_key: bytes) -> str:
    return str(ID.from_pubkey(Ed25519PublicKey.from_bytes(public_key)).to_base58())


def test_plain_round_trip(tmp_path: Path) -> None:
    made = create_identity(tmp_path)
    loaded = load_identity(tmp_path)
    assert loaded.public_key == made.public_key
    assert bytes(loaded.signing_key) == bytes(made.signing_key)
    info = read_key_info(tmp_path)
    assert not info.encrypted
    assert info.peer_id == made.peer_id
    signed = loaded.signing_key.sign(b"hello")
    made.signing_key.verify_key.verify(signed)


def test_encrypted_round_trip(tmp_path: Path) -> None:
    made = create_identity(tmp_path, "correct horse", kdf=FAST)
    assert read_key_info(tmp_path).encrypted
    assert read_key_info(tmp_path).public_key == made.public_key
    loaded = load_identity(tmp_path, "correct horse")
    assert bytes(loaded.signing_key) == bytes(made.signing_key)
    assert b"correct horse" not in key_path(tmp_path).read_bytes()
    assert bytes(made.signing_key) not in key_path(tmp_path).read_bytes()


def test_wrong_or_missing_passphrase(tmp_path: Path) -> None:
    create_identity(tmp_path, "right", kdf=FAST)
    before = key_path(tmp_path).read_bytes()
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        load_identity(tmp_path, "wrong")
    with pytest.raises(PassphraseRequiredError, match="encrypted"):
        load_identity(tmp_path)
    with pytest.raises(PassphraseRequiredError):
        load_identity(tmp_path, "")
    with pytest.raises(WrongPassphraseError):
        load_or_create_identity(tmp_path, "wrong")
    assert key_path(tmp_path).read_bytes() == before
    assert issubclass(WrongPassphraseError, KeystoreError)


def test_passphrase_is_unicode_normalized(tmp_path: Path) -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    made = create_identity(tmp_path, composed, kdf=FAST)
    assert load_identity(tmp_path, decomposed).public_key == made.public_key


def test_file_and_directory_modes(tmp_path: Path) -> None:
    os.umask(0o022)
    data_dir = tmp_path / "fresh" / "node"
    create_identity(data_dir)
    path = key_path(data_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["node.key"]  # no temporary left


def test_readable_by_others_is_refused(tmp_path: Path) -> None:
    create_identity(tmp_path)
    os.chmod(key_path(tmp_path), 0o644)
    with pytest.raises(InsecureKeyFileError, match="chmod 600"):
        load_identity(tmp_path)


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    first = create_identity(tmp_path)
    with pytest.raises(KeyExistsError, match="--force"):
        create_identity(tmp_path)
    assert load_identity(tmp_path).public_key == first.public_key
    second = create_identity(tmp_path, force=True)
    assert second.public_key != first.public_key
    assert load_identity(tmp_path).public_key == second.public_key


def test_load_or_create_creates_once(tmp_path: Path) -> None:
    with pytest.raises(KeyNotFoundError, match="aimx keys new"):
        load_identity(tmp_path)
    first = load_or_create_identity(tmp_path)
    assert load_or_create_identity(tmp_path).public_key == first.public_key
    enc = tmp_path / "enc"
    made = load_or_create_identity(enc, "pw")
    assert read_key_info(enc).encrypted
    assert load_or_create_identity(enc, "pw").public_key == made.public_key


@pytest.mark.parametrize("encrypted", [False, True])
def test_damaged_file_is_reported_and_never_overwritten(tmp_path: Path, encrypted: bool) -> None:
    create_identity(tmp_path, "pw" if encrypted else None, kdf=FAST)
    path = key_path(tmp_path)
    good = path.read_bytes()
    damaged = [
        b"",
        good[:-1],
        good + b"\0",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\n",
        *(good[:i] + bytes([good[i] ^ 0x01]) + good[i + 1 :] for i in range(len(good))),
    ]
    for data in damaged:
        path.write_bytes(data)
        with pytest.raises(CorruptKeyFileError):
            load_or_create_identity(tmp_path, "pw")
        with pytest.raises(CorruptKeyFileError):
            read_key_info(tmp_path)
        assert path.read_bytes() == data


def test_not_a_regular_file(tmp_path: Path) -> None:
    key_path(tmp_path).mkdir(parents=True)
    with pytest.raises(CorruptKeyFileError, match="not a regular file"):
        load_or_create_identity(tmp_path)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_mutation_gives_a_keystore_error(data: st.DataObject) -> None:
    good = encode_encrypted_key_file(SEED, "pw", salt=bytes(16), nonce=bytes(24), kdf=FAST)
    good = data.draw(st.sampled_from([good, encode_plain_key_file(SEED)]))
    cut = data.draw(st.integers(0, len(good)))
    junk = data.draw(st.binary(max_size=8))
    mutated = good[:cut] + junk + good[cut + len(junk) :]
    try:
        seed = decode_key_file(mutated, "pw")
    except KeystoreError:
        return
    assert seed == SEED  # only a no-op mutation may decode, and then to the same key


@settings(max_examples=50)
@given(st.binary(min_size=32, max_size=32))
def test_account_id_is_the_libp2p_peer_id(seed: bytes) -> None:
    identity = NodeIdentity.from_seed(seed)
    assert identity.peer_id == libp2p_peer_id(identity.public_key)
    assert identity.peer_id.startswith("12D3KooW")


def test_stored_account_id_is_the_libp2p_peer_id(tmp_path: Path) -> None:
    made = create_identity(tmp_path)
    assert read_key_info(tmp_path).peer_id == libp2p_peer_id(made.public_key)


def test_secret_not_in_repr(tmp_path: Path) -> None:
    made = create_identity(tmp_path, seed=SEED)
    assert SEED.hex() not in repr(made)
    assert "signing_key" not in repr(made)


def _spec_vectors() -> dict[str, str]:
    text = (Path(__file__).parents[2] / "specs" / "identity.md").read_text()
    block = text.split("## Test vectors", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    pairs = (line.split(":", 1) for line in block.strip().splitlines())
    return {key.strip(): value.strip() for key, value in pairs}


def test_spec_test_vectors() -> None:
    v = _spec_vectors()
    seed = bytes.fromhex(v["seed"])
    identity = NodeIdentity.from_seed(seed)
    assert identity.public_key.hex() == v["public key"]
    assert identity.peer_id == v["peer id"] == libp2p_peer_id(identity.public_key)
    assert encode_plain_key_file(seed).hex() == v["plain file"]
    kdf = KdfParams(int(v["opslimit"]), int(v["memlimit KiB"]))
    encrypted = encode_encrypted_key_file(
        seed,
        v["passphrase"],
        salt=bytes.fromhex(v["salt"]),
        nonce=bytes.fromhex(v["nonce"]),
        kdf=kdf,
    )
    assert encrypted.hex() == v["encrypted file"]
    assert decode_key_file(bytes.fromhex(v["encrypted file"]), v["passphrase"]) == seed
    assert decode_key_file(bytes.fromhex(v["plain file"]), None) == seed
