"""Review round 29 (F4): 128 fresh keys each reserved at a coordinator's relay and left in
5 s; py-libp2p kept each reservation its whole hour, connected or not, counted nothing per
host, and every new home node was refused (status 201) meanwhile. A reservation now ends
with its peer's last connection, is for the peer of the connection it came on, and the
table is shared by host (node/net/_relay_reservations.py). Real hosts on loopback, the
table cut to a few places; every loopback peer is one host, so the host of each is set by
the test where hosts matter."""

from __future__ import annotations

import contextlib
from collections.abc import Hashable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, StopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as CircuitPeer
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.protocol import STOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

from node.net import Reachability
from node.net._libp2p_transport import peer_id_of
from node.net.libp2p_host import Libp2pNetwork

from ...keys import key, pub
from .test_relay import node

OK = 100
REFUSED = 201  # RESOURCE_LIMIT_EXCEEDED
FLOOD = ("ip", "203.0.113.1")
HONEST = ("ip", "198.51.100.7")


async def reserve(net: Libp2pNetwork, relay: bytes, named: bytes | None = None) -> int:
    """Send one ``RESERVE`` (for the peer ``named``, by default ourselves); the status."""
    stream = await net._host.new_stream(peer_id_of(relay), [HOP_PROTOCOL_ID])
    try:
        own = net._host.get_id().to_bytes()
        request = HopMessage(type=HopMessage.RESERVE, peer=CircuitPeer(id=named or own))
        await write_delimited_msg(stream, request)
        answer = await read_delimited_msg(stream, HopMessage)
    finally:
        with contextlib.suppress(Exception):
            await stream.close()
    return int(answer.status)


def table(relay: Libp2pNetwork, places: int) -> Any:
    """The relay's reservation table, cut to ``places``."""
    manager = relay._relay.protocol.resource_manager
    manager.limits.max_reservations = places
    return manager


async def test_strangers_that_reserve_and_leave_keep_no_home_node_out() -> None:
    """F4's repro, scaled to a table of 4: 4 fresh keys reserve and disconnect; a home node
    arriving after them gets its reservation (it was refused for the hour)."""
    with trio.fail_after(60):
        async with node(1, relay_service=True, reachability=Reachability.PUBLIC) as relay:
            reservations = table(relay, 4)
            address = relay.addresses()[0]
            for n in range(10, 14):
                async with node(n) as stranger:
                    await stranger.connect(address)
                    assert await reserve(stranger, relay.local_peer) == OK
            while relay.connected_peers():
                await trio.sleep(0.05)  # the relay has seen every stranger leave
            async with node(
                2, listen=(), bootstrap=(address,), reachability=Reachability.PRIVATE
            ) as home:
                assert home.relays() == (relay.local_peer,)
                assert set(reservations._reservations) == {peer_id_of(home.local_peer)}


async def test_a_full_table_yields_a_place_to_a_host_holding_fewer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Strangers of one host that stay connected hold every place; a home node of another
    host takes the newest of them, and then keeps it: the flood's host, holding more than
    the home's, can take nothing back, and the home's renewal passes."""
    honest = pub(key(2))

    def host_of(stream: Any, peer: bytes) -> Hashable:
        return HONEST if peer == honest else FLOOD

    monkeypatch.setattr("node.net._relay_reservations.host_of", host_of)
    with trio.fail_after(60):
        async with node(1, relay_service=True, reachability=Reachability.PUBLIC) as relay:
            reservations = table(relay, 3)
            address = relay.addresses()[0]
            async with AsyncExitStack() as stack:
                strangers = [await stack.enter_async_context(node(n)) for n in range(10, 13)]
                for stranger in strangers:
                    await stranger.connect(address)
                    assert await reserve(stranger, relay.local_peer) == OK
                async with node(
                    2, listen=(), bootstrap=(address,), reachability=Reachability.PRIVATE
                ) as home:
                    assert home.relays() == (relay.local_peer,)
                    held = set(reservations._reservations)
                    assert peer_id_of(honest) in held and len(held) == 3
                    assert peer_id_of(strangers[-1].local_peer) not in held  # the newest
                    async with node(13) as late:
                        await late.connect(address)
                        assert await reserve(late, relay.local_peer) == REFUSED
                    assert await reserve(strangers[-1], relay.local_peer) == REFUSED
                    assert await reserve(home, relay.local_peer) == OK
                    assert peer_id_of(honest) in reservations._reservations


async def test_a_reserve_is_for_the_peer_of_its_connection() -> None:
    """A ``RESERVE`` naming made-up peer ids took a place for each (and, their peers never
    connecting, would hold it for the hour): one connection filled the table."""
    made_up = [peer_id_of(pub(key(f"made-up-{n}"))) for n in range(4)]
    with trio.fail_after(60):
        async with node(1, relay_service=True, reachability=Reachability.PUBLIC) as relay:
            reservations = table(relay, 4)
            async with node(10) as stranger:
                await stranger.connect(relay.addresses()[0])
                for peer in made_up:
                    # py-libp2p answered nothing to these (it failed writing its error)
                    with contextlib.suppress(Exception), trio.move_on_after(5):
                        await reserve(stranger, relay.local_peer, peer.to_bytes())
                held = set(reservations._reservations)
    assert held == {peer_id_of(stranger.local_peer)}


def _limits(places: int) -> RelayLimits:
    return RelayLimits(duration=3600, data=1 << 30, max_circuit_conns=64, max_reservations=places)


async def test_the_host_holding_the_most_gives_up_its_newest_place() -> None:
    from node.net._relay_reservations import Reservations

    reservations = Reservations(_limits(4), None)  # no host: every peer counts as connected
    made = 0

    def take(name: str, group: Hashable) -> bool:
        nonlocal made
        peer = peer_id_of(pub(key(name)))
        reservations.arriving[peer] = group
        try:
            if not reservations.can_accept_reservation(peer):
                return False
            reservations.reserve(peer)
        finally:
            reservations.arriving.pop(peer)
        made += 1
        reservations._reservations[peer].created_at = made  # one after the other
        return True

    def held() -> set[str]:
        names = {peer_id_of(pub(key(n))): n for n in ("a1", "a2", "a3", "b1", "b2", "b3", "c", "d")}
        return {names[p] for p in reservations._reservations}

    a, b, c, d = ("ip", "A"), ("ip", "B"), ("ip", "C"), ("ip6", b"D")
    assert all(take(*x) for x in (("a1", a), ("a2", a), ("b1", b), ("b2", b)))
    assert take("c", c) and held() == {"a1", "a2", "b1", "c"}  # b2: the newest of 2 and 2
    assert take("b3", b) and held() == {"a1", "b1", "b3", "c"}  # A held 2, B 1
    assert take("a3", a) and held() == {"a1", "a3", "b1", "c"}  # B held 2, A 1
    assert take("d", d) and held() == {"a1", "b1", "c", "d"}  # all held 1: the newest
    assert not take("a2", a)  # its host holds as many as the most
    assert reservations.held_by_host(a) == 1 and reservations.evicted == 4
    reservations.forget(peer_id_of(pub(key("c"))))
    assert take("a2", a) and held() == {"a1", "a2", "b1", "d"}


async def _stop(attacker: Any, victim: Any) -> Any:
    """A STOP CONNECT from ``attacker`` (acting as a relay) to ``victim``: its status, or
    None when the stream was refused."""
    try:
        stream = await attacker._host.new_stream(victim._host.get_id(), [STOP_PROTOCOL_ID])
        message = StopMessage(type=StopMessage.CONNECT)
        message.peer.id = attacker._host.get_id().to_bytes()
        await write_delimited_msg(stream, message)
        with trio.fail_after(5):
            return (await read_delimited_msg(stream, StopMessage)).status
    except Exception:
        return None


async def test_a_relayed_connection_is_taken_only_from_a_relay_of_ours() -> None:
    """Round 36, F2: every node took a relayed connection (STOP) from any peer, for any key:
    one TCP connection brought 255 connections of fresh keys that no inbound bound
    counted. Now only from a relay holding a reservation of ours."""
    with trio.fail_after(40):
        async with node(61, relay_service=True) as relay:
            bootstrap = relay.addresses()[:1]
            async with (
                node(62, bootstrap=bootstrap, reachability=Reachability.PRIVATE) as private,
                node(63) as stranger,
            ):
                await stranger.connect(private.addresses()[0])
                assert await _stop(stranger, private) is None  # the tree before: 100 (OK)
                assert await _stop(relay, private) == OK  # our relay: answered
