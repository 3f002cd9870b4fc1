"""Round 49: streams the node opens itself, answered by a hostile peer. K1: a DHT peer
that answered our query, wrote 256 KiB more and never closed made us keep it for the
connection's life (400 lookups: 800 streams, 191 MiB). R1: a relay answering a RESERVE with
an expiry of 2**64 - 1 ended a private node (``time.ctime`` out of range). P1: bytes a peer
wrote on an idle pooled request stream were read as the next request's answer."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import trio
import varint
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, Reservation
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

from node.net import Reachability, _libp2p_relay
from node.net._framing import response_frame
from node.net.libp2p_host import Libp2pNetwork

from .test_libp2p_guards import node
from .test_relay import node as configured_node

PAD = 200_000


def _held(net: Libp2pNetwork, other: Libp2pNetwork) -> int:
    """Bytes ``net`` holds unread on its connections to ``other``."""
    conns = net._host.get_network().connections.get(other._host.get_id(), [])
    return sum(len(b) for c in conns for b in c.muxed_conn.stream_buffers.values())


async def _varint(stream: Any) -> int:
    shift = value = 0
    for _ in range(9):
        byte = await stream.read(1)
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
    raise ValueError("varint too long")


async def _padding_dht_peer(stream: Any) -> None:
    """Answers one DHT query with an empty message, then writes PAD bytes more and never
    closes."""
    size = await _varint(stream)
    data = b""
    while len(data) < size:
        data += await stream.read(size - len(data))
    query = Message()
    query.ParseFromString(data)
    answer = Message(type=query.type, key=query.key).SerializeToString()
    await stream.write(varint.encode(len(answer)) + answer + b"\0" * PAD)
    await trio.sleep(60)


_padding_dht_peer.aimx_guarded = True  # type: ignore[attr-defined]  # the stranger's own guard off


async def test_a_dht_query_answered_past_its_answer_and_left_open_keeps_nothing() -> None:
    with trio.fail_after(60):
        async with node(151) as victim, node(152) as stranger:
            stranger._host.set_stream_handler(TProtocol("/ipfs/kad/1.0.0"), _padding_dht_peer)
            await stranger.connect(victim.addresses()[0])
            await trio.sleep(1)
            for n in range(6):
                await victim.find_providers(f"class{n}", limit=5, timeout=2)
            await trio.sleep(0.5)
            assert _held(victim, stranger) < PAD  # the tree before: 2 streams a lookup, 2.4 MB


async def _relay_saying_forever(stream: Any) -> None:
    """A relay that grants every RESERVE until 2**64 - 1."""
    await read_delimited_msg(stream, HopMessage)
    answer = HopMessage(
        type=HopMessage.STATUS, status=100, reservation=Reservation(expire=2**64 - 1)
    )
    await write_delimited_msg(stream, answer)
    await trio.sleep(5)


async def test_a_relay_granting_a_reservation_for_ever_ends_nothing() -> None:
    with trio.fail_after(60):
        async with configured_node(1) as relay:
            relay._host.set_stream_handler(HOP_PROTOCOL_ID, _relay_saying_forever)
            address = relay.addresses()[0]
            # the tree before: the node ended as it started (OverflowError)
            async with configured_node(
                2, listen=(), bootstrap=(address,), reachability=Reachability.PRIVATE
            ) as home:
                assert home.relays() == (relay.local_peer,)
                assert (
                    home._relay.reserved[address] <= time.time() + _libp2p_relay.MAX_RESERVATION_S
                )


PROTO = "/aimx/review49/1"


async def _answer_and_pad(stream: Any) -> None:
    """Answers each request frame 'ok', and a moment later writes bytes nobody asked for
    (until the stream is reset)."""
    with contextlib.suppress(Exception):
        while True:
            size = await _varint(stream)
            data = b""
            while len(data) < size:
                data += await stream.read(size - len(data))
            await stream.write(response_frame(0, b"ok"))
            await trio.sleep(0.2)  # the answer read, the stream back in the pool
            await stream.write(b"\0" * 1_000)


_answer_and_pad.aimx_guarded = True  # type: ignore[attr-defined]


async def test_bytes_on_an_idle_pooled_stream_are_not_the_next_answer() -> None:
    with trio.fail_after(60):
        async with node(153) as victim, node(154) as stranger:
            stranger._host.set_stream_handler(TProtocol(PROTO), _answer_and_pad)
            key = await victim.connect(stranger.addresses()[0])
            for _ in range(3):  # the tree before: the second read the padding as its answer
                assert await victim.request(key, PROTO, b"q", timeout=5) == b"ok"
                await trio.sleep(0.5)
