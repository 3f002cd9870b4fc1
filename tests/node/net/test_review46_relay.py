"""Round 46, R1 and R2: a relay's circuits. R1: one key, with no reservation of its own,
took 63 of an honest private node's 64 circuit slots in 0.5 s, and an honest source was
refused while it held them (for up to the hour, idle circuits never ending). A source may
now hold ``MAX_CIRCUITS_PER_SOURCE`` circuits, and one host ``MAX_CIRCUITS_PER_HOST_TO_PEER``
to one destination. R2: py-libp2p kept the streams of the newest circuit by peer and closed
those when any circuit of that peer ended: a stranger resetting its circuit to a private
node cut the honest circuit opened after it. Each circuit now closes only its own
streams. Real hosts on loopback; every loopback peer is one host, so the host of each is
set by the test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as CircuitPeer
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

from node.net import Reachability
from node.net._libp2p_transport import peer_id_of
from node.net._relay_reservations import MAX_CIRCUITS_PER_HOST_TO_PEER
from node.net.libp2p_host import Libp2pNetwork

from ...keys import key, pub
from .test_libp2p import ECHO, echo
from .test_relay import node

OK = 100
STRANGER = ("ip", "203.0.113.1")
HONEST = ("ip", "198.51.100.7")


async def connect(net: Libp2pNetwork, relay: bytes, dest: bytes) -> tuple[int, Any]:
    """One raw ``CONNECT`` to ``dest`` through ``relay``: its status and its stream (left
    open: on OK, a circuit to ``dest`` that says nothing)."""
    stream = await net._host.new_stream(peer_id_of(relay), [HOP_PROTOCOL_ID])
    request = HopMessage(type=HopMessage.CONNECT, peer=CircuitPeer(id=peer_id_of(dest).to_bytes()))
    await write_delimited_msg(stream, request)
    answer = await read_delimited_msg(stream, HopMessage)
    return int(answer.status), stream


@pytest.fixture
def hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stranger (key 10) is one host, every other peer another."""
    stranger = pub(key(10))

    def host_of(stream: Any, peer: bytes) -> Hashable:
        return STRANGER if peer == stranger else HONEST

    monkeypatch.setattr("node.net._relay_reservations.host_of", host_of)


@asynccontextmanager
async def relayed(circuits: int = 64) -> AsyncIterator[tuple[Libp2pNetwork, ...]]:
    """A relay (``circuits`` a reservation), a private node reserved at it serving ECHO, a
    stranger connected to the relay, and an outsider that knows the relay."""
    async with node(1, relay_service=True, reachability=Reachability.PUBLIC) as relay:
        relay._relay.protocol.limits.max_circuit_conns = circuits
        bootstrap = relay.addresses()[:1]
        async with (
            node(2, listen=(), bootstrap=bootstrap, reachability=Reachability.PRIVATE) as private,
            node(10) as stranger,
            node(3, bootstrap=bootstrap) as outsider,
        ):
            private.set_handler(ECHO, echo)
            await stranger.connect(relay.addresses()[0])
            yield relay, private, stranger, outsider


@pytest.mark.usefixtures("hosts")
async def test_one_source_takes_no_more_than_its_share_of_a_private_nodes_circuits() -> None:
    with trio.fail_after(60):
        async with relayed(MAX_CIRCUITS_PER_HOST_TO_PEER + 2) as (
            relay,
            private,
            stranger,
            outsider,
        ):
            held = []
            for _ in range(MAX_CIRCUITS_PER_HOST_TO_PEER + 4):
                status, stream = await connect(stranger, relay.local_peer, private.local_peer)
                if status == OK:
                    held.append(stream)
            # the tree before: every slot of the private node's reservation
            assert len(held) == MAX_CIRCUITS_PER_HOST_TO_PEER
            got = await outsider.request(private.local_peer, ECHO, b"hello", timeout=15)
            assert got == b"hello"


async def test_a_circuit_that_ends_leaves_the_others_to_its_destination_alone() -> None:
    with trio.fail_after(60):
        async with relayed() as (relay, private, stranger, outsider):
            status, circuit = await connect(stranger, relay.local_peer, private.local_peer)
            assert status == OK
            got = await outsider.request(private.local_peer, ECHO, b"hello", timeout=15)
            assert got == b"hello"  # the honest circuit, opened after the stranger's
            network = outsider._host.get_network()
            (honest,) = network.get_connections(peer_id_of(private.local_peer))
            with contextlib.suppress(Exception):
                # junk for the private node's handshake: it resets its end at once
                await circuit.write(b"\x00\x10" + b"\xff" * 16)
                await trio.sleep(1)
                await circuit.reset()
            await trio.sleep(0.5)
            # the tree before: as the stranger's circuit ended at the private node's end, the
            # relay closed the honest circuit's streams (the newest kept under the private
            # node's id), and this request's bytes went nowhere
            got = await outsider.request(private.local_peer, ECHO, b"again", timeout=5)
            assert got == b"again"
            # over the same circuit (the tree before: the outsider had to dial again)
            assert network.get_connections(peer_id_of(private.local_peer)) == [honest]
