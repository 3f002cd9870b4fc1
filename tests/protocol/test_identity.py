"""Peer ids: ours equal py-libp2p's for the same Ed25519 key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.peer.id import ID

from protocol import RemoteProtocolError, peer_id, public_key_of


@given(st.binary(min_size=32, max_size=32))
def test_peer_id_matches_libp2p(key: bytes) -> None:
    ours = peer_id(key)
    assert ours == ID.from_pubkey(Ed25519PublicKey.from_bytes(key)).to_base58()
    assert ours.startswith("12D3KooW")
    assert public_key_of(ours) == key


@pytest.mark.parametrize(
    "text", ["", "0OIl", "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", "1" * 70]
)
def test_other_ids_are_refused(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        public_key_of(text)
