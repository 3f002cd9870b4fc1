"""Round 35: GossipSub's GRAFT and PRUNE, and multistream-select's messages, as py-libp2p
took them from a stranger. 10,000 GRAFTs for topics we do not follow (139 KB, one RPC)
froze a coordinator's loop 1.6 s, each answered with a PRUNE; PRUNEs for made-up topics
left back-offs of the sender's choosing that outlived it (2.4 MB held 56 MB); and one
socket with no key declared a 200 MiB multistream message and had it read."""

from __future__ import annotations

import time
from typing import Any

import pytest
from libp2p.protocol_muxer.exceptions import MultiselectCommunicatorError
from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2

from node.net import _libp2p_tuning
from node.net._libp2p_gossip import MAX_PRUNE_BACKOFF_S
from node.net._libp2p_handshakes import MAX_MULTISTREAM_MESSAGE
from node.net._libp2p_tuning import MAX_RPC_MESH_CONTROL, bounded_rpc

from .test_review31_pubsub import _peer

OURS = "aimx/test/ledger/blocks"


def _router() -> tuple[Any, list[tuple[str, str]]]:
    _libp2p_tuning.install()
    gossipsub = GossipSub(protocols=[PROTOCOL_ID_V12], degree=6, degree_low=4, degree_high=12)
    gossipsub.pubsub = object()  # type: ignore[assignment]
    gossipsub.mesh[OURS] = set()
    handled: list[tuple[str, str]] = []

    async def graft(msg: Any, peer: Any) -> None:
        handled.append(("graft", msg.topicID))

    gossipsub.handle_graft = graft  # type: ignore[method-assign]
    return gossipsub, handled


def _control(grafts: list[str] = [], prunes: list[tuple[str, int]] = []) -> Any:  # noqa: B006
    rpc = rpc_pb2.RPC()
    for topic in grafts:
        rpc.control.graft.add(topicID=topic)
    for topic, backoff in prunes:
        rpc.control.prune.add(topicID=topic, backoff=backoff)
    return rpc


def test_an_rpc_of_too_many_grafts_or_prunes_loses_them() -> None:
    rpc = _control(grafts=["x"] * (MAX_RPC_MESH_CONTROL + 1), prunes=[("y", 1)])
    assert bounded_rpc(rpc)
    assert len(rpc.control.graft) == 0 and len(rpc.control.prune) == 1


async def test_grafts_for_topics_we_do_not_follow_are_ignored_and_one_a_topic_taken() -> None:
    gossipsub, handled = _router()
    made_up = [f"made/up/{i}" for i in range(40)]
    await gossipsub.handle_rpc(_control(grafts=[*made_up, OURS, OURS, OURS]), _peer(81))
    assert handled == [("graft", OURS)]  # the tree before: 43 handled, 40 PRUNEs built


async def test_prunes_leave_bounded_back_offs_that_go_with_the_peer() -> None:
    gossipsub, _ = _router()
    peer = _peer(82)
    prunes = [(f"made/up/{i}", 1 << 62) for i in range(40)] + [(OURS, 1 << 62)]
    await gossipsub.handle_rpc(_control(prunes=prunes), peer)
    assert list(gossipsub.back_off) == [OURS]  # the tree before: 41 topics
    assert gossipsub.back_off[OURS][peer] <= time.time() + MAX_PRUNE_BACKOFF_S + 1
    gossipsub.remove_peer(peer)
    assert gossipsub.back_off == {}


class _Endless:
    """A reader declaring a 200 MiB message, then sending bytes for ever."""

    def __init__(self) -> None:
        self.prefix = bytearray(b"\x80\x80\x80\x64")  # 200 MiB as a varint
        self.served = 0

    async def read(self, n: int | None = None) -> bytes:
        size = 1 if n is None or n < 0 else n
        if self.prefix:
            return bytes([self.prefix.pop(0)])
        self.served += size
        return b"a" * size

    async def write(self, data: bytes) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_a_multistream_message_past_its_bound_is_refused_before_it_is_read() -> None:
    _libp2p_tuning.install()
    reader = _Endless()
    with pytest.raises(MultiselectCommunicatorError):
        await MultiselectCommunicator(reader).read()  # type: ignore[arg-type]
    assert reader.served == 0  # the tree before read all 200 MiB
    assert MAX_MULTISTREAM_MESSAGE == 1024
