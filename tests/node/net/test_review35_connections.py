"""Round 35: py-libp2p took one of its 300 inbound slots for every socket it accepted, before
a byte was read, and held the slot (and a task) until the whole swarm ended, not until the
connection did: a node took no inbound connection after its 300th, and one IP's 300 idle
sockets refused every new peer. A slot now ends with its connection, and sockets in
handshake are bounded per host and in all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio

from node.net import _libp2p_handshakes, _libp2p_transport
from node.net._libp2p_handshakes import handshakes
from node.net._limits import MAX_HANDSHAKES, MAX_HANDSHAKES_PER_HOST

from .test_libp2p_guards import node


def _port(address: str) -> int:
    parts = address.split("/")
    return int(parts[parts.index("tcp") + 1])


async def test_a_peer_that_left_holds_no_inbound_slot() -> None:
    with trio.fail_after(60):
        async with node(95) as victim:
            slots = victim._host.get_network()._inbound_limiter
            for i in range(6):
                async with node(200 + i) as peer:
                    await peer.connect(victim.addresses()[0])
                    await trio.sleep(0.1)
                    assert slots.borrowed_tokens >= 1
            await trio.sleep(1)
            assert slots.borrowed_tokens == 0  # the tree before: 6, for the node's life


async def test_idle_sockets_from_many_hosts_leave_room_for_a_new_peer() -> None:
    with trio.fail_after(60):
        async with node(96) as victim, node(97) as newcomer:
            port = _port(victim.addresses()[0])
            sockets = []
            try:
                for i in range(320):  # 20 hosts of 127/8, 16 idle sockets each, no byte sent
                    sock = trio.socket.socket()
                    await sock.bind((f"127.0.0.{2 + i // 16}", 0))
                    await sock.connect(("127.0.0.1", port))
                    sockets.append(sock)
                await trio.sleep(0.5)
                table = handshakes(victim._host.get_network())
                assert table.count <= MAX_HANDSHAKES
                assert all(len(held) <= MAX_HANDSHAKES_PER_HOST for held in table.by_host.values())
                # the tree before: every slot held for 10 s, and this dial refused
                await newcomer.connect(victim.addresses()[0])
                assert newcomer._host.get_id() in victim._host.get_network().connections
            finally:
                for sock in sockets:
                    sock.close()


def _accepted_from(monkeypatch: Any, hosts: list[str]) -> None:
    """The accepted sockets' addresses, in order, as the handshake table reads them."""
    order = iter(hosts)
    monkeypatch.setattr(_libp2p_handshakes, "socket_ip", lambda stream: next(order))


@asynccontextmanager
async def _idle_sockets(victim: Any, count: int) -> AsyncIterator[None]:
    """``count`` sockets connected to ``victim`` that send nothing, closed on the way out."""
    port = _port(victim.addresses()[0])
    sockets = []
    try:
        for _ in range(count):
            sock = trio.socket.socket()
            await sock.connect(("127.0.0.1", port))
            sockets.append(sock)
        yield
    finally:
        for sock in sockets:
            sock.close()


async def _four_keys_in_four_slots(victim: Any, stack: AsyncExitStack, first_key: int) -> Any:
    """``victim`` given 4 inbound slots, and 4 keys connected to it (its first host's)."""
    network = victim._host.get_network()
    network._inbound_limiter.total_tokens = 4
    first = [await stack.enter_async_context(node(first_key + i)) for i in range(4)]
    for peer in first:
        await peer.connect(victim.addresses()[0])
    await trio.sleep(0.3)
    return network, first


async def test_with_every_slot_held_a_newcomer_takes_one_of_the_largest_hosts(
    monkeypatch: Any,
) -> None:
    _accepted_from(
        monkeypatch, ["10.0.0.1"] * 4 + ["10.0.0.2"] * 8
    )  # the sockets' hosts, as accepted
    with trio.fail_after(60):
        async with node(98) as victim, AsyncExitStack() as stack:
            network, first = await _four_keys_in_four_slots(victim, stack, 210)
            assert network._inbound_limiter.available_tokens == 0
            newcomer = await stack.enter_async_context(node(220))
            await newcomer.connect(victim.addresses()[0])  # the tree before: refused
            await trio.sleep(0.3)
            held = set(network.connections)
            assert newcomer._host.get_id() in held
            assert sum(p._host.get_id() in held for p in first) == 3
            table = handshakes(network)
            assert sorted(len(c) for c in table.connected.values()) == [1, 3]


async def test_handshakes_cut_short_leave_the_node_free_to_connect_in_and_out() -> None:
    """Round 36, F1: a full handshake table cut the oldest by cancelling py-libp2p's upgrade,
    whose resource manager then kept the connection counted for good; five hosts' idle
    sockets (0 bytes) cut the node off, in and out, until it restarted."""
    with trio.fail_after(120):
        async with node(99) as victim, node(230) as newcomer, node(231) as other:
            port = _port(victim.addresses()[0])
            for _ in range(60):  # 80 idle sockets from 5 hosts: 16 cut short a round
                sockets = []
                for i in range(80):
                    sock = trio.socket.socket()
                    await sock.bind((f"127.0.0.{2 + i // 16}", 0))
                    await sock.connect(("127.0.0.1", port))
                    sockets.append(sock)
                await trio.sleep(0.05)
                for sock in sockets:
                    sock.close()
            await trio.sleep(0.5)
            assert handshakes(victim._host.get_network()).count == 0
            await newcomer.connect(victim.addresses()[0])  # the tree before: refused
            await victim.connect(other.addresses()[0])  # and so was this dial out


async def test_with_every_slot_held_a_socket_that_sends_nothing_takes_no_connection(
    monkeypatch: Any,
) -> None:
    """Round 37, N1: the newcomer's rule fired as a socket was accepted: 8 idle sockets
    from one address cut an honest host from 6 connections to 1. A newcomer is let in now,
    and takes a connection only once its handshake is done."""
    _accepted_from(monkeypatch, ["10.0.0.1"] * 4 + ["10.0.0.2"] * 100)
    with trio.fail_after(60):
        async with node(100) as victim, AsyncExitStack() as stack:
            network, first = await _four_keys_in_four_slots(victim, stack, 240)
            async with _idle_sockets(victim, 8):
                await trio.sleep(0.5)
                held = set(network.connections)
                assert all(p._host.get_id() in held for p in first)  # the tree before: 1 left
            await trio.sleep(0.3)
            assert network._inbound_limiter.total_tokens == 4  # the newcomers' places given back


async def test_a_node_whose_inbound_slots_are_held_still_dials_out(monkeypatch: Any) -> None:
    """Round 38, H1: py-libp2p counted inbound and outbound connections against one limit
    (300), which also sized the inbound slots: 300 inbound connections left a node unable
    to dial out. Inbound connections are now a share of a larger total."""
    monkeypatch.setattr(_libp2p_transport, "MAX_CONNECTIONS", 8)
    monkeypatch.setattr(_libp2p_transport, "MAX_INBOUND_CONNECTIONS", 4)
    with trio.fail_after(60):
        async with node(105) as victim, node(270) as other, AsyncExitStack() as stack:
            network = victim._host.get_network()
            assert network._inbound_limiter.total_tokens == 4
            for i in range(4):
                peer = await stack.enter_async_context(node(271 + i))
                await peer.connect(victim.addresses()[0])
            await trio.sleep(0.3)
            assert network._inbound_limiter.available_tokens == 0
            await victim.connect(other.addresses()[0])
            assert other._host.get_id() in network.connections


@pytest.mark.parametrize(
    "idle",
    [
        ["10.0.0.2"] * 8,  # round 38, M3: one address held all 8 places
        [h for h in ("10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5") for _ in (0, 1)],
    ],
    ids=["one-host", "four-hosts"],
)
async def test_idle_sockets_leave_a_newcomer_from_another_host_its_place(
    monkeypatch: Any, idle: list[str]
) -> None:
    """Idle sockets took all 8 newcomer places for 5 s, and a newcomer from another host
    was refused meanwhile: 8 from one address (round 38, M3), then 2 from each of 4 (round
    39, F1). Places are 2 a host, and a full table gives a newcomer the place of the oldest
    of the host holding the most, whose socket is closed."""
    _accepted_from(monkeypatch, ["10.0.0.1"] * 4 + idle + ["10.0.0.6"] * 10)
    with trio.fail_after(60):
        async with node(104) as victim, AsyncExitStack() as stack:
            network, _ = await _four_keys_in_four_slots(victim, stack, 250)
            async with _idle_sockets(victim, 8):
                await trio.sleep(0.3)
                newcomer = await stack.enter_async_context(node(260))
                await newcomer.connect(victim.addresses()[0])  # the tree before: refused
                await trio.sleep(0.3)
                assert newcomer._host.get_id() in network.connections
            await trio.sleep(0.5)
            assert network._inbound_limiter.total_tokens == 4  # every place given back
