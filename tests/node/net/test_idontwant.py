"""GossipSub v1.2's IDONTWANT notices go out only for messages of at least
``IDONTWANT_MIN_BYTES`` (as go-libp2p sends them): py-libp2p sent one RPC to every mesh
peer for every message, an empty block's included."""

from __future__ import annotations

from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2

from node.net import _libp2p_tuning
from node.net._libp2p_gossip import IDONTWANT_MIN_BYTES

TOPIC = "aimx/test/ledger/blocks"


def _gossipsub() -> tuple[GossipSub, list[Any]]:
    gossipsub = GossipSub(protocols=[PROTOCOL_ID_V12], degree=6, degree_low=4, degree_high=12)
    peer = ID(b"\x00\x24" + bytes(36))
    gossipsub.pubsub = object()  # type: ignore[assignment]
    gossipsub.mesh[TOPIC] = {peer}
    gossipsub.peer_protocol[peer] = PROTOCOL_ID_V12
    sent: list[Any] = []

    async def emit_idontwant(msg_ids: list[bytes], to_peer: ID) -> None:
        sent.append((msg_ids, to_peer))

    gossipsub.emit_idontwant = emit_idontwant  # type: ignore[method-assign]
    return gossipsub, sent


def _cached(gossipsub: GossipSub, size: int, seqno: bytes) -> bytes:
    msg = rpc_pb2.Message(data=b"x" * size, topicIDs=[TOPIC], from_id=b"me", seqno=seqno)
    gossipsub.mcache.put(msg)
    return msg.from_id + msg.seqno


async def test_idontwant_only_for_messages_past_the_threshold() -> None:
    _libp2p_tuning.install()
    gossipsub, sent = _gossipsub()
    small = _cached(gossipsub, IDONTWANT_MIN_BYTES - 1, b"\x01")
    await gossipsub._emit_idontwant_for_message(small, [TOPIC])
    assert sent == []
    large = _cached(gossipsub, IDONTWANT_MIN_BYTES, b"\x02")
    await gossipsub._emit_idontwant_for_message(large, [TOPIC])
    assert [ids for ids, _ in sent] == [[large]]
    # a message the cache does not hold is announced as before
    await gossipsub._emit_idontwant_for_message(b"me\x03", [TOPIC])
    assert len(sent) == 2
    await trio.lowlevel.checkpoint()
