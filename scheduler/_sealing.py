"""Job inputs and outputs in transit: X25519 sealed boxes to the recipient's identity key.

The recipient's Ed25519 identity key is converted to its X25519 form, and the data is sealed
with libsodium's anonymous sealed box (an ephemeral sender key per message). Authenticity
comes from the content hash: the opened bytes must hash to the id that a signed JobSpec or
Result committed to, so :func:`open_sealed` checks that too.
"""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

from protocol import content_hash

from ._errors import ContentMismatch, DecryptionFailed

#: Bytes a sealed box adds to its plaintext (ephemeral key + MAC).
SEAL_OVERHEAD = 48


def seal(recipient: bytes, data: bytes) -> bytes:
    """Encrypt ``data`` so that only the holder of Ed25519 key ``recipient`` can open it."""
    if len(recipient) != 32:
        raise ValueError("recipient must be a 32-byte Ed25519 public key")
    curve = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(recipient)
    return bytes(nacl.public.SealedBox(nacl.public.PublicKey(curve)).encrypt(data))


def open_sealed(key: nacl.signing.SigningKey, sealed: bytes, expected_hash: bytes) -> bytes:
    """Open a box sealed for ``key`` and check the plaintext hashes to ``expected_hash``.

    Raises :class:`DecryptionFailed` or :class:`ContentMismatch`; nothing else.
    """
    private = key.to_curve25519_private_key()
    try:
        data = bytes(nacl.public.SealedBox(private).decrypt(sealed))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise DecryptionFailed(
            "the sealed data was not made for this node's key or was altered in transit; "
            "ask the sender to send it again"
        ) from None
    if content_hash(data) != expected_hash:
        raise ContentMismatch(
            f"the data hashes to {content_hash(data).hex()[:16]}…, not the announced "
            f"{expected_hash.hex()[:16]}…; refuse it and ask the sender again"
        )
    return data
