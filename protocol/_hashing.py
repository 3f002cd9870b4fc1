"""BLAKE2b-256 content hashes: job ids, model and input ids, output commitments."""

from __future__ import annotations

import hashlib

HASH_SIZE = 32


def content_hash(data: bytes) -> bytes:
    """The 32-byte BLAKE2b-256 digest of ``data``."""
    return hashlib.blake2b(data, digest_size=HASH_SIZE).digest()
