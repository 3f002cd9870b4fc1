"""Signed envelopes: ``[domain_tag, chain_id, body, signer, signature]``.

The signature is Ed25519 over the canonical encoding of ``[domain_tag, chain_id, body]``.
Because the tag names the type and version and the chain id names the network, a signature
made for one message type or one chain never verifies as another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import nacl.bindings
import nacl.exceptions
import nacl.signing

from ._canonical import pack_checked, unpack
from ._errors import LocalProtocolError, RemoteProtocolError
from ._hashing import content_hash
from ._limits import MAX_CHAIN_ID_LEN, MAX_MESSAGE_BYTES
from ._messages import Message

M = TypeVar("M", bound=Message)

_SIG_TAIL = 2 + 32 + 2 + 64  # bin8 header + key, bin8 header + signature
_HEADER5 = b"\x95"
_HEADER3 = b"\x93"
# msgpack's shortest headers of a 32-byte and a 64-byte byte string (bin 8).
_BIN32 = b"\xc4\x20"
_BIN64 = b"\xc4\x40"


@dataclass(frozen=True, slots=True)
class Signed(Generic[M]):
    """A decoded or freshly signed message with its signer, signature and wire bytes."""

    message: M
    chain_id: str
    signer: bytes
    signature: bytes
    raw: bytes
    _id: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def id(self) -> bytes:
        """BLAKE2b-256 of the wire bytes: the job id of a JobSpec, the id of a transaction.

        Hashed once, on first use: ``raw`` is immutable bytes in a frozen object, so the id
        of an envelope never changes. Not part of equality, repr or the constructor.
        """
        id_ = self._id
        if id_ is None:
            id_ = content_hash(self.raw)
            object.__setattr__(self, "_id", id_)
        return id_


def _check_chain_id(chain_id: str) -> None:
    if not isinstance(chain_id, str) or not 0 < len(chain_id.encode()) <= MAX_CHAIN_ID_LEN:
        raise LocalProtocolError(f"chain id must be 1..{MAX_CHAIN_ID_LEN} bytes of text")


def signing_bytes(message: Message, chain_id: str) -> bytes:
    """The exact bytes an Ed25519 signature covers."""
    return pack_checked([message.TAG, chain_id, message.wire()])


def sign(message: M, key: nacl.signing.SigningKey, chain_id: str) -> Signed[M]:
    """Sign ``message`` for ``chain_id`` with ``key``; checks the signer field matches."""
    _check_chain_id(chain_id)
    signer = bytes(key.verify_key)
    field = message.SIGNER_FIELD
    if field is not None and getattr(message, field) != signer:
        raise LocalProtocolError(
            f"{type(message).__name__}.{field} must be the signing key's public key"
        )
    body = pack_checked([message.TAG, chain_id, message.wire()])
    # crypto_sign returns signature || message; its 64-byte secret key is seed || public key.
    secret = bytes(key) + signer
    signature = nacl.bindings.crypto_sign(body, secret)[:64]
    raw = b"".join((_HEADER5, body[1:], _BIN32, signer, _BIN64, signature))
    return Signed(message, chain_id, signer, signature, raw)


def decode(
    data: bytes,
    chain_id: str,
    *types: type[Message],
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> Signed[Any]:
    """Decode and verify a signed message of one of ``types`` on ``chain_id``.

    Every failure (size, encoding, unknown or unexpected tag, wrong chain, bad field, bad
    signature, signer not matching the message) is a :class:`RemoteProtocolError`.
    """
    if not types:
        raise LocalProtocolError("decode needs at least one expected message type")
    # Records check every field's type, so the generic type walk is not needed here.
    value = unpack(data, max_bytes=max_bytes, check_types=False)
    if type(value) is not list or len(value) != 5:
        raise RemoteProtocolError("a signed message is an array of 5 items")
    tag, chain, body, signer, signature = value
    for cls in types:
        if tag == cls.TAG:
            break
    else:
        names = ", ".join(t.TAG for t in types)
        raise RemoteProtocolError(f"unexpected message type {tag!r}; expected {names}")
    if type(chain) is not str or chain != chain_id:
        raise RemoteProtocolError(f"message is for chain {chain!r}, not {chain_id!r}")
    if type(signer) is not bytes or len(signer) != 32:
        raise RemoteProtocolError("signer must be a 32-byte Ed25519 public key")
    if type(signature) is not bytes or len(signature) != 64:
        raise RemoteProtocolError("signature must be 64 bytes")
    message = cls.from_wire(body)
    field = cls.SIGNER_FIELD
    if field is not None and getattr(message, field) != signer:
        raise RemoteProtocolError(f"{cls.__name__}.{field} does not match the signer")
    raw = bytes(data)
    try:
        nacl.bindings.crypto_sign_open(signature + _HEADER3 + raw[1:-_SIG_TAIL], signer)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise RemoteProtocolError(f"bad signature on {cls.__name__}") from None
    return Signed(message, chain, signer, signature, raw)


def encode_unsigned(message: Message) -> bytes:
    """``[tag, body]``: for messages whose authenticity comes from the channel."""
    return pack_checked([message.TAG, message.wire()])


def decode_unsigned(
    data: bytes, *types: type[Message], max_bytes: int = MAX_MESSAGE_BYTES
) -> Message:
    """Decode ``[tag, body]`` into one of ``types``."""
    value = unpack(data, max_bytes=max_bytes)
    if type(value) is not list or len(value) != 2:
        raise RemoteProtocolError("an unsigned message is an array of 2 items")
    tag, body = value
    cls = next((t for t in types if tag == t.TAG), None)
    if cls is None:
        raise RemoteProtocolError(f"unexpected message type {tag!r}")
    return cls.from_wire(body)
