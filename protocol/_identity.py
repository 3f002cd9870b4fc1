"""Account ids as people see them: the libp2p peer id of the Ed25519 key.

A libp2p peer id for an Ed25519 key is the identity multihash of the protobuf
``PublicKey{Type: Ed25519, Data: key}``, written in base58btc (``12D3KooW...``).
"""

from __future__ import annotations

from ._errors import RemoteProtocolError

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
# identity multihash (0x00), length 36, protobuf: field 1 varint 1 (Ed25519), field 2 len 32
_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        if c not in _B58_INDEX:
            raise RemoteProtocolError(f"invalid base58 character {c!r} in peer id")
        n = n * 58 + _B58_INDEX[c]
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


def peer_id(public_key: bytes) -> str:
    """The libp2p peer id string of a 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return _b58encode(_PREFIX + public_key)


def public_key_of(peer_id_text: str) -> bytes:
    """The Ed25519 public key inside a peer id (refuses other key types)."""
    if len(peer_id_text) > 64:
        raise RemoteProtocolError("peer id is too long")
    raw = _b58decode(peer_id_text)
    if len(raw) != len(_PREFIX) + 32 or not raw.startswith(_PREFIX):
        raise RemoteProtocolError("not the peer id of an Ed25519 key")
    return raw[len(_PREFIX) :]
