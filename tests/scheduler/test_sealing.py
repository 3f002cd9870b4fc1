"""Sealed boxes to an identity key, and the content-hash check on opening."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import content_hash
from scheduler import SEAL_OVERHEAD, ContentMismatch, DecryptionFailed, SealError, open_sealed, seal

from ..keys import key

ALICE = key("alice")
BOB = key("bob")


@settings(max_examples=25)
@given(st.binary(max_size=4096))
def test_round_trip(data: bytes) -> None:
    box = seal(bytes(ALICE.verify_key), data)
    assert len(box) == len(data) + SEAL_OVERHEAD
    assert len(data) < 16 or data not in box
    assert open_sealed(ALICE, box, content_hash(data)) == data


def test_each_seal_is_fresh() -> None:
    pub = bytes(ALICE.verify_key)
    assert seal(pub, b"same") != seal(pub, b"same")


def test_wrong_key_cannot_open() -> None:
    box = seal(bytes(ALICE.verify_key), b"model input")
    with pytest.raises(DecryptionFailed):
        open_sealed(BOB, box, content_hash(b"model input"))


@pytest.mark.parametrize("where", [0, 31, 32, 40, -1])
def test_tampering_is_detected(where: int) -> None:
    box = bytearray(seal(bytes(ALICE.verify_key), b"tensor bytes"))
    box[where] ^= 0x01
    with pytest.raises(DecryptionFailed):
        open_sealed(ALICE, bytes(box), content_hash(b"tensor bytes"))


def test_truncated_box_is_refused() -> None:
    with pytest.raises(DecryptionFailed):
        open_sealed(ALICE, b"\x00" * 10, content_hash(b""))


def test_hash_must_match() -> None:
    box = seal(bytes(ALICE.verify_key), b"what was sent")
    with pytest.raises(ContentMismatch) as info:
        open_sealed(ALICE, box, content_hash(b"what was announced"))
    assert isinstance(info.value, SealError)
    assert "ask the sender" in str(info.value)


def test_recipient_key_length_is_checked() -> None:
    with pytest.raises(ValueError):
        seal(b"short", b"x")
