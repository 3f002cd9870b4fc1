"""The test suite's Ed25519 keys: one fixed derivation, by index or by name.

``key(3)`` and ``key("alice")`` are the same keys in every test file and on every run: the
32-byte seed is the keyed BLAKE2b-256 of the label (its decimal digits for an index) under
one fixed test seed. Tests that need several nodes number them; tests that tell a story
name them.
"""

from __future__ import annotations

import hashlib

import nacl.signing

#: The fixed seed every test key derives from.
TEST_SEED = b"aimx-test-keys/1"


def key(label: int | str) -> nacl.signing.SigningKey:
    """The signing key numbered or named ``label``."""
    seed = hashlib.blake2b(str(label).encode(), key=TEST_SEED, digest_size=32).digest()
    return nacl.signing.SigningKey(seed)


def pub(signing_key: nacl.signing.SigningKey) -> bytes:
    """The 32-byte public key of ``signing_key`` (an account, a peer's key)."""
    return bytes(signing_key.verify_key)
