"""Sealed outputs: a Result's output travels encrypted under a one-time key.

(Apart from this, every transfer is also sealed to its recipient's identity key in transit:
``scheduler.seal``.)

The requester holds the sealed bytes before it signs a Receipt; the key comes after, in an
Unseal or in the provider's claim on the ledger (specs/marketplace.md, "Fair exchange"). So
a requester never reads an output it did not receipt, and a provider is never paid by
claim without publishing what opens the bytes it already handed over.

The key is derived, not drawn: from the provider's signing key and what identifies the
output, so that a provider restarted between its receipt and its claim finds it again, and
a simulator run stays the same run. Each key seals exactly one output, so the nonce is
fixed.
"""

from __future__ import annotations

import hashlib

import nacl.exceptions
import nacl.secret
import nacl.signing

from ._errors import RemoteProtocolError
from ._hashing import content_hash

KEY_SIZE = nacl.secret.SecretBox.KEY_SIZE
#: Sealed bytes are this much longer than the output (the authenticator).
SEAL_OVERHEAD = nacl.secret.SecretBox.MACBYTES
_NONCE = bytes(nacl.secret.SecretBox.NONCE_SIZE)
_PERSONAL = b"aimx-unseal-key1"  # 16 bytes: BLAKE2b's personalisation


def output_key(
    signing_key: nacl.signing.SigningKey, job_id: bytes, replica: int, commitment: bytes
) -> bytes:
    """The one-time key for the output of ``replica`` of ``job_id`` whose commitment is
    ``commitment``: only the provider can compute it before it reveals it."""
    return hashlib.blake2b(
        job_id + bytes([replica]) + commitment,
        key=bytes(signing_key),
        digest_size=KEY_SIZE,
        person=_PERSONAL,
    ).digest()


def key_hash(key: bytes) -> bytes:
    """What a Result and a sealed Receipt name the key by."""
    return content_hash(key)


def seal_output(key: bytes, output: bytes) -> bytes:
    """``output`` encrypted and authenticated under ``key``."""
    return nacl.secret.SecretBox(key).encrypt(output, _NONCE).ciphertext


def unseal_output(key: bytes, sealed: bytes) -> bytes:
    """The output that ``sealed`` holds, or :class:`RemoteProtocolError` when ``key`` does
    not open it (the sender sealed something else than it named)."""
    if len(key) != KEY_SIZE:
        raise RemoteProtocolError(f"an unseal key has {KEY_SIZE} bytes, not {len(key)}")
    try:
        return nacl.secret.SecretBox(key).decrypt(sealed, _NONCE)
    except nacl.exceptions.CryptoError:
        raise RemoteProtocolError("the key does not open the sealed output bytes") from None
