"""Round 30, N1: every pubsub RPC, DHT request and DHT answer may carry a signed peer
record, and py-libp2p's peer store took it whole, deduplicating its addresses by scanning
a list. One RPC from a fresh key, holding only its own record with 24,000 addresses, froze
a coordinator's loop for 25 s (no block produced meanwhile). A record with more than
``MAX_RECORD_ADDRS`` addresses is refused, and addresses are deduplicated with a set."""

from __future__ import annotations

import time

import trio
import varint
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.envelope import seal_record
from libp2p.peer.id import ID
from libp2p.peer.peer_record import PeerRecord
from libp2p.peer.peerdata import PeerData
from libp2p.peer.peerstore import PeerStore
from libp2p.pubsub.pb import rpc_pb2
from multiaddr import Multiaddr

from node.net import _libp2p_tuning
from node.net._libp2p_tuning import MAX_RECORD_ADDRS

from .test_libp2p_guards import node


def _addresses(n: int) -> list[Multiaddr]:
    return [Multiaddr(f"/ip4/127.0.{i >> 8 & 255}.{i & 255}/tcp/{1 + (i >> 16)}") for i in range(n)]


def test_a_record_with_too_many_addresses_is_refused_and_one_within_is_taken() -> None:
    _libp2p_tuning.install()
    pair = create_new_key_pair()
    peer = ID.from_pubkey(pair.public_key)
    store = PeerStore()
    flood = PeerRecord(peer, _addresses(MAX_RECORD_ADDRS + 1), seq=2)
    assert not store.consume_peer_record(seal_record(flood, pair.private_key), 600)
    assert peer not in store.peer_data_map or not store.peer_data_map[peer].get_addrs()
    honest = PeerRecord(peer, _addresses(16), seq=3)
    assert store.consume_peer_record(seal_record(honest, pair.private_key), 600)
    assert len(store.addrs(peer)) == 16


def test_addresses_are_deduplicated_in_order() -> None:
    _libp2p_tuning.install()
    data = PeerData()
    a, b, c = _addresses(3)
    data.add_addrs([a, b, a])
    data.add_addrs([c, b])
    assert data.get_addrs() == [a, b, c]


async def test_an_rpc_carrying_a_record_of_thousands_of_addresses_adds_none() -> None:
    with trio.fail_after(120):
        async with node(61) as victim, node(62) as stranger:
            await stranger.connect(victim.addresses()[0])
            host = stranger._host
            record = PeerRecord(host.get_id(), _addresses(5_000), seq=time.time_ns() + 10**15)
            rpc = rpc_pb2.RPC()
            rpc.senderRecord = seal_record(record, host.get_private_key()).marshal_envelope()
            data = rpc.SerializeToString()
            stream = await host.new_stream(victim._host.get_id(), ["/meshsub/1.2.0"])
            await stream.write(varint.encode(len(data)) + data)
            await trio.sleep(1)  # the tree before took the 5,000 (and 2 s of the loop)
            held = victim._host.get_peerstore().addrs(host.get_id())
            assert 0 < len(held) <= MAX_RECORD_ADDRS


async def test_a_flood_of_fake_peers_never_evicts_a_connected_one() -> None:
    # Round 30, N2: the batch eviction took the oldest entries first, connected peers
    # (the bootstrap coordinator) included.
    with trio.fail_after(60):
        async with node(63) as victim, node(64) as coordinator:
            await victim.connect(coordinator.addresses()[0])
            store = victim._host.get_peerstore()
            for _ in range(store.max_peers + 1):
                fake = ID.from_pubkey(create_new_key_pair().public_key)
                store.add_addrs(fake, [Multiaddr("/ip4/127.0.0.1/tcp/1")], 600)
            assert len(store.peer_data_map) <= store.max_peers
            assert store.addrs(coordinator._host.get_id())
