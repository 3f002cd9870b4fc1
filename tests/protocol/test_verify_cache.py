"""The labelled verification cache: answers exactly as a real Ed25519 check would.

A signature this process made over exact bytes, or a check that passed before, is answered
from the cache; anything else (a changed body, another signature, another key) is checked
for real and refused.
"""

from __future__ import annotations

import nacl.exceptions
import nacl.signing
import pytest

import protocol
import protocol._envelope as envelope
from protocol import _verify_cache
from protocol._examples import VECTOR_CHAIN_ID, example_messages, vector_key
from protocol._verify_cache import verification_cache

CHAIN = VECTOR_CHAIN_ID


def _bid() -> protocol.Message:
    return next(m for m in example_messages() if isinstance(m, protocol.Bid))


def _flip(raw: bytes, index: int) -> bytes:
    return raw[:index] + bytes([raw[index] ^ 1]) + raw[index + 1 :]


def test_a_message_signed_in_the_run_is_checked_from_the_cache() -> None:
    with verification_cache(True) as cache:
        assert cache is not None
        signed = protocol.sign(_bid(), vector_key(), CHAIN)
        again = protocol.decode(signed.raw, CHAIN, protocol.Bid)
        assert again.message == signed.message
        assert (cache.checks, cache.hits) == (0, 1)


def test_changed_bytes_are_checked_for_real_and_refused() -> None:
    with verification_cache(True) as cache:
        assert cache is not None
        signed = protocol.sign(_bid(), vector_key(), CHAIN)
        # a byte of the signature, then a byte of the body (the price field's last byte
        # sits before the 100-byte signer and signature tail)
        for index in (len(signed.raw) - 1, len(signed.raw) - 101):
            with pytest.raises(protocol.RemoteProtocolError, match="bad signature"):
                protocol.decode(_flip(signed.raw, index), CHAIN, protocol.Bid)
        assert cache.checks == 2 and cache.hits == 0
        # a failing check is never cached
        with pytest.raises(protocol.RemoteProtocolError):
            protocol.decode(_flip(signed.raw, len(signed.raw) - 1), CHAIN, protocol.Bid)
        assert cache.checks == 3


def test_another_key_is_checked_for_real() -> None:
    """The same signed bytes under another public key are not a cache hit."""
    key = vector_key()
    other = bytes(nacl.signing.SigningKey(bytes(range(1, 33))).verify_key)
    with verification_cache(True) as cache:
        assert cache is not None
        signed = cache.crypto_sign(b"body", bytes(key) + bytes(key.verify_key))
        assert cache.crypto_sign_open(signed, bytes(key.verify_key)) == b"body"
        with pytest.raises(nacl.exceptions.BadSignatureError):
            cache.crypto_sign_open(signed, other)
        assert (cache.checks, cache.hits) == (1, 1)


def test_a_message_from_outside_is_checked_once_then_cached() -> None:
    signed = protocol.sign(_bid(), vector_key(), CHAIN)  # before the cache was on
    with verification_cache(True) as cache:
        assert cache is not None
        protocol.decode(signed.raw, CHAIN, protocol.Bid)
        protocol.decode(signed.raw, CHAIN, protocol.Bid)
        assert (cache.checks, cache.hits) == (1, 1)


def test_two_generations_bound_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_verify_cache, "GENERATION", 2)
    with verification_cache(True) as cache:
        assert cache is not None
        first = protocol.sign(_bid(), vector_key(), CHAIN)
        for price in range(1, 5):  # four more entries: the first one's generation is gone
            bid = _bid()
            protocol.sign(type(bid)(**{**_fields(bid), "price": price}), vector_key(), CHAIN)
        protocol.decode(first.raw, CHAIN, protocol.Bid)
        assert (cache.checks, cache.hits) == (1, 0)


def test_disabled_changes_nothing() -> None:
    before = getattr(envelope, "nacl")  # noqa: B009 - the module's own name for nacl
    with verification_cache(False) as cache:
        assert cache is None and getattr(envelope, "nacl") is before  # noqa: B009
    with verification_cache(True):
        assert getattr(envelope, "nacl") is not before  # noqa: B009
    assert getattr(envelope, "nacl") is before  # noqa: B009


def _fields(message: protocol.Message) -> dict[str, object]:
    import dataclasses

    return {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}  # type: ignore[arg-type]
