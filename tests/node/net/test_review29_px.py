"""Round 29, F3: py-libp2p takes GossipSub peer exchange from every peer, so one
stranger's PRUNE, naming fresh keys whose signed peer records list any host and port, made
the node dial each of them (28 KB bought 128 outbound connections to a host of the
stranger's choice). The node takes peer exchange from nobody."""

from __future__ import annotations

import trio
import varint
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.envelope import seal_record
from libp2p.peer.id import ID
from libp2p.peer.peer_record import PeerRecord
from libp2p.pubsub.pb import rpc_pb2
from multiaddr import Multiaddr

from .test_libp2p_guards import node

PX_PEERS = 8


def _prune_with_px(port: int) -> bytes:
    rpc = rpc_pb2.RPC()
    prune = rpc.control.prune.add()
    prune.topicID = "any topic"
    for _ in range(PX_PEERS):
        pair = create_new_key_pair()
        peer = ID.from_pubkey(pair.public_key)
        record = PeerRecord(peer, [Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")])
        info = prune.peers.add()
        info.peerID = peer.to_bytes()
        info.signedPeerRecord = seal_record(record, pair.private_key).marshal_envelope()
    return rpc.SerializeToString()


async def test_a_strangers_prune_with_peer_exchange_makes_us_dial_nobody() -> None:
    with trio.fail_after(60):
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        dialled = 0

        async def count_dials() -> None:
            nonlocal dialled
            while True:
                conn, _ = await listener.accept()
                dialled += 1
                conn.close()

        async with trio.open_nursery() as nursery, node(41) as victim, node(42) as stranger:
            nursery.start_soon(count_dials)
            await stranger.connect(victim.addresses()[0])
            stream = await stranger._host.new_stream(victim._host.get_id(), ["/meshsub/1.2.0"])
            data = _prune_with_px(port)
            await stream.write(varint.encode(len(data)) + data)
            await trio.sleep(3)  # the tree before dialled all 8 within a second
            assert dialled == 0
            assert victim.connected_peers() == {stranger.local_peer}
            nursery.cancel_scope.cancel()
        listener.close()
