"""Round 38, M1: an identify answer or push may carry 1,000 listen addresses, which
py-libp2p stores one call each, and our peer store's deduplication built a set per call:
1,000 addresses cost 500,000 hashes (80 ms of loop a message), and 96 pushes from 24 keys
froze a node 1.9 s, leaving 24,000 addresses behind. The set is kept with the list, and an
identify message's first 64 addresses are kept."""

from __future__ import annotations

from typing import Any

import multiaddr
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.peer.peerdata import PeerData
from libp2p.peer.peerstore import PeerStore

from node.net import _libp2p_tuning
from node.net._libp2p_tuning import MAX_RECORD_ADDRS

from .test_review31_pubsub import _peer


def _addresses(n: int) -> list[multiaddr.Multiaddr]:
    return [
        multiaddr.Multiaddr(f"/ip4/10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/tcp/4001")
        for i in range(n)
    ]


def test_adding_addresses_one_call_each_costs_a_hash_each(monkeypatch: Any) -> None:
    _libp2p_tuning.install()
    addresses = _addresses(1_000)
    hashes = [0]
    hash_of = multiaddr.Multiaddr.__hash__

    def counted(self: multiaddr.Multiaddr) -> int:
        hashes[0] += 1
        return hash_of(self)

    monkeypatch.setattr(multiaddr.Multiaddr, "__hash__", counted)
    data = PeerData()
    for address in addresses:  # as py-libp2p stores identify's addresses
        data.add_addrs([address])
    data.add_addrs(addresses[:10])  # repeats are not kept twice
    assert data.get_addrs() == addresses
    assert hashes[0] <= 5 * len(addresses)  # the tree before: about 500,000
    data.clear_addrs()
    data.add_addrs(addresses[:3])
    assert data.get_addrs() == addresses[:3]


async def test_an_identify_message_of_many_addresses_keeps_the_first_64() -> None:
    _libp2p_tuning.install()
    from libp2p.identity.identify_push.identify_push import update_peerstore_from_identify

    message = Identify(listen_addrs=[a.to_bytes() for a in _addresses(1_000)])
    store = PeerStore()
    peer = _peer(91)
    await update_peerstore_from_identify(store, peer, message)
    assert len(store.addrs(peer)) == MAX_RECORD_ADDRS  # the tree before: 1,000
