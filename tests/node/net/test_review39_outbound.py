"""Round 39, F2: a DHT lookup dials the peers each answer names, and nothing closed those
connections once it was over; nothing bounded outbound connections below the 600 in all.
A stranger answering lookups with keys it serves could fill the node's connections and
have every dial of its own refused, its coordinators' included. Outbound connections past
the bound are now closed, the least recently used first, never those to the node's own
peers (bootstrap, relays, mesh) or to a peer with a request of ours under way."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import trio
import varint
from hypothesis import given
from hypothesis import strategies as st
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.rcmgr.metrics import Direction

from node.net._libp2p_records import RECORD_PROTOCOL
from node.net._libp2p_trim import Outbound, to_close
from node.net.libp2p_host import Libp2pNetwork

from .helpers import node
from .test_review29_dht_answers import KAD, _read_varint

SYBILS = 8
BOUND = 3
SLOW = "/aimx/test/slow/1"


def _outbound(net: Libp2pNetwork) -> list[Any]:
    conns = net._host.get_network().get_connections()
    return [c for c in conns if c.direction == Direction.OUTBOUND]


async def test_connections_lookups_opened_are_closed_past_the_bound() -> None:
    with trio.fail_after(120):
        async with AsyncExitStack() as stack:
            boot = await stack.enter_async_context(node(61))
            victim = await stack.enter_async_context(node(62, bootstrap=boot.addresses()[:1]))
            victim._trim.bound, victim._trim.grace = BOUND, 0.5
            stranger = await stack.enter_async_context(node(63))
            sybils = [await stack.enter_async_context(node(64 + i)) for i in range(SYBILS)]
            answers = 0

            async def kad(stream: Any) -> None:
                """Every query is answered with the sybils as the closer peers."""
                nonlocal answers
                try:
                    size = await _read_varint(stream)
                    data = b""
                    while len(data) < size:
                        chunk = await stream.read(size - len(data))
                        if not chunk:
                            return
                        data += chunk
                    request = Message()
                    request.ParseFromString(data)
                    answer = Message(type=request.type, key=request.key)
                    for sybil in sybils:
                        peer = answer.closerPeers.add()
                        peer.id = sybil._host.get_id().to_bytes()
                        peer.addrs.extend(a.to_bytes() for a in sybil._host.get_addrs())
                    answers += 1
                    out = answer.SerializeToString()
                    await stream.write(varint.encode(len(out)) + out)
                except Exception:
                    return

            stranger._host.set_stream_handler(KAD, kad)
            await victim.connect(stranger.addresses()[0])
            peerstore = victim._host.get_peerstore()
            for _ in range(100):  # identify tells the victim the stranger serves the DHT
                if KAD in peerstore.get_protocols(stranger._host.get_id()):
                    break
                await trio.sleep(0.1)
            peak = 0
            for _ in range(3):
                await victim.find_providers("onnx.cpu.m2", limit=5, timeout=3)
                peak = max(peak, len(_outbound(victim)))
            assert answers > 0
            # the lookups dialled the sybils: the tree before kept them all
            assert peak > BOUND + 2
            # a request of ours makes a peer the most recently used
            used = sybils[0]
            await victim.request(used.local_peer, RECORD_PROTOCOL, b"", timeout=5)
            for _ in range(100):
                if len(_outbound(victim)) <= BOUND + 1:
                    break
                await trio.sleep(0.1)
            held = {c.muxed_conn.peer_id for c in _outbound(victim)}
            # the bound, plus the bootstrap peer, which is never closed
            assert len(held) <= BOUND + 1
            assert boot._host.get_id() in held
            assert used._host.get_id() in held
            assert victim._trim.trimmed >= peak - BOUND - 1
            # and the node dials what it needs again
            await victim.request(sybils[-1].local_peer, RECORD_PROTOCOL, b"", timeout=5)


async def test_a_connection_whose_peer_we_are_serving_is_not_closed() -> None:
    """Round 41, F1: "used" counted only our own requests, so the connection we dialled
    to a provider was closed while its Result upload or content fetch was being served."""
    with trio.fail_after(120):
        async with AsyncExitStack() as stack:
            victim = await stack.enter_async_context(node(81))
            peers = [await stack.enter_async_context(node(82 + i)) for i in range(6)]
            started = trio.Event()

            async def slow(peer: bytes, data: bytes) -> bytes:
                started.set()
                await trio.sleep(2)
                return b"done"

            victim.set_handler(SLOW, slow)
            for peer in peers:  # outbound from the victim, none of them used since
                await victim.connect(peer.addresses()[0])
            assert len(_outbound(victim)) == len(peers)
            uploader = peers[0]  # the oldest: the first to go
            answer: list[bytes] = []
            async with trio.open_nursery() as nursery:

                async def upload() -> None:
                    answer.append(await uploader.request(victim.local_peer, SLOW, b"r", timeout=10))

                nursery.start_soon(upload)
                await started.wait()
                victim._trim.bound, victim._trim.grace = 2, 0.0
                victim._trim._trim_soon()
                for _ in range(50):
                    if len(_outbound(victim)) <= 2:
                        break
                    await trio.sleep(0.05)
                held = {c.muxed_conn.peer_id for c in _outbound(victim)}
                assert uploader._host.get_id() in held  # closed last, not never
                assert len(held) == 2  # within the bound (round 43, F1)
            assert answer == [b"done"]


_conns = st.lists(
    st.tuples(st.integers(0, 5), st.floats(0, 100), st.floats(0, 100)), max_size=30
).map(
    lambda rows: [
        Outbound(conn=i, peer=peer, opened=opened, used=max(opened, used))
        for i, (peer, opened, used) in enumerate(rows)
    ]
)


@given(
    _conns,
    st.sets(st.integers(0, 5)),
    st.integers(0, 10),
    st.floats(0, 50),
    st.sets(st.integers(0, 5)),
)
def test_the_choice_leaves_the_bound_and_closes_the_least_recently_used(
    conns: list[Outbound], keep: set[int], bound: int, grace: float, spare: set[int]
) -> None:
    now = 100.0
    chosen = set(to_close(conns, keep, now, bound, grace, spare))
    free = [c for c in conns if c.peer not in keep]
    closable = [c for c in free if now - c.opened >= grace]
    assert all(c.conn in {f.conn for f in closable} for c in conns if c.conn in chosen)
    # the bound holds whoever is spared (round 43, F1), as far as the grace allows
    assert len(chosen) == min(len(closable), max(0, len(free) - bound))
    for group in (False, True):  # the spared last; each group least recently used first
        mine = [c for c in closable if (c.peer in spare) == group]
        shut = [c for c in mine if c.conn in chosen]
        left = [c for c in mine if c.conn not in chosen]
        if shut and left:
            assert max(c.used for c in shut) <= min(c.used for c in left)
    if any(c.conn in chosen for c in closable if c.peer in spare):
        assert all(c.conn in chosen for c in closable if c.peer not in spare)
