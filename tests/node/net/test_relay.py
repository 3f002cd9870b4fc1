"""Reaching a peer behind a NAT (node/net/relay.py): direct first, relayed addresses and our
own relays overlapping after a head start; a private peer whose address nobody knows is
reached through the relay it reserved at. Loopback only; the NAT itself is tests/netns/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import protocol
from node.net import PeerUnreachable, Reachability
from node.net.libp2p_host import Libp2pConfig, Libp2pNetwork, open_libp2p_network
from node.net.relay import DIRECT_HEAD_START, circuit_addresses, dial_direct_then_relayed

from ...keys import key
from .helpers import CHAIN
from .test_libp2p import ECHO, LOOPBACK, echo


@asynccontextmanager
async def node(
    n: int, listen: tuple[str, ...] = LOOPBACK, **kw: Any
) -> AsyncIterator[Libp2pNetwork]:
    config = Libp2pConfig(chain_id=CHAIN, listen=listen, **kw)
    async with open_libp2p_network(key(n), config) as net:
        yield net


RELAY = "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWRelay"
PEER = "12D3KooWPeer"
ME = "12D3KooWMe"


def test_circuit_addresses_known_first_then_our_relays() -> None:
    known = [f"{RELAY}/p2p-circuit", f"{RELAY}/p2p-circuit/p2p/{PEER}"]
    relays = [
        RELAY,
        "/ip4/10.0.0.2/tcp/4001/p2p/12D3KooWOther",
        f"/ip4/10.0.0.3/tcp/1/p2p/{PEER}",  # the peer itself is no relay to it
        f"/ip4/10.0.0.4/tcp/1/p2p/{ME}",  # nor are we
    ]
    assert circuit_addresses(known, relays, PEER, ME) == [
        f"{RELAY}/p2p-circuit/p2p/{PEER}",
        f"/ip4/10.0.0.2/tcp/4001/p2p/12D3KooWOther/p2p-circuit/p2p/{PEER}",
    ]


class _Dials:
    """Fake dials: each name either connects after ``delay`` or fails after it."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.cancelled: list[str] = []

    def dial(self, name: str, delay: float, ok: bool) -> object:
        async def attempt() -> None:
            self.started[name] = trio.current_time()
            try:
                await trio.sleep(delay)
            except trio.Cancelled:
                self.cancelled.append(name)
                raise
            if not ok:
                raise PeerUnreachable(f"{name} failed")

        return attempt


async def test_a_direct_dial_that_connects_in_time_needs_no_relay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    d = _Dials()
    await dial_direct_then_relayed(d.dial("direct", 0.1, True), [d.dial("relay", 0.1, True)])  # type: ignore[list-item,arg-type]
    assert list(d.started) == ["direct"]


async def test_a_hanging_direct_dial_loses_to_the_relay_after_the_head_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    d = _Dials()
    start = trio.current_time()
    await dial_direct_then_relayed(d.dial("direct", 60, True), [d.dial("relay", 0.2, True)])  # type: ignore[list-item,arg-type]
    assert d.started["relay"] - start == pytest.approx(DIRECT_HEAD_START)
    assert trio.current_time() - start == pytest.approx(DIRECT_HEAD_START + 0.2)
    assert d.cancelled == ["direct"]


async def test_a_refused_direct_dial_starts_the_relays_at_once_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    d = _Dials()
    start = trio.current_time()
    await dial_direct_then_relayed(
        d.dial("direct", 0.01, False),  # type: ignore[arg-type]
        [d.dial("relay1", 0.1, False), d.dial("relay2", 0.1, True)],  # type: ignore[list-item]
    )
    assert d.started["relay1"] - start == pytest.approx(0.01)
    assert d.started["relay2"] - start == pytest.approx(0.11)


async def test_nothing_connects_is_unreachable_with_the_last_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    d = _Dials()
    with pytest.raises(PeerUnreachable, match="relay failed"):
        await dial_direct_then_relayed(d.dial("direct", 0.1, False), [d.dial("relay", 2, False)])  # type: ignore[list-item,arg-type]
    with pytest.raises(PeerUnreachable, match="no address"):
        await dial_direct_then_relayed(None, [])


async def test_a_private_peer_nobody_knows_is_reached_through_our_relay() -> None:
    """The private node does not listen at all (as if behind a NAT): the only way to it is
    the circuit through the relay both know as their bootstrap peer. The outsider knows
    neither its address nor its relayed address, only its key."""
    with trio.fail_after(40):
        async with node(1, relay_service=True, reachability=Reachability.PUBLIC) as relay:
            bootstrap = relay.addresses()[:1]
            async with node(
                2, listen=(), bootstrap=bootstrap, reachability=Reachability.PRIVATE
            ) as private:
                assert private.relays() == (relay.local_peer,)
                private.set_handler(ECHO, echo)
                async with node(3, bootstrap=bootstrap) as outsider:
                    assert outsider.relays() == ()
                    got = await outsider.request(private.local_peer, ECHO, b"hello", timeout=15)
                    assert got == b"hello"
                    # counted by the relay it runs through (by its address, which names
                    # us, the bound of 64 a relay never held: round 38, M2)
                    assert private._relay.relayed_through(relay._host.get_id()) == 1
                    assert private._relay.relayed_through(outsider._host.get_id()) == 0
                    conns = outsider._host.get_network().get_connections(private._host.get_id())
                    assert conns and all(
                        "p2p-circuit" in str(a) for c in conns for a in c.get_transport_addresses()
                    ), protocol.peer_id(private.local_peer)


async def _relay_until(stop: trio.Event, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with node(1, relay_service=True, reachability=Reachability.PUBLIC) as relay:
        task_status.started(relay.addresses()[0])
        await stop.wait()


async def test_a_restarted_relay_gets_the_reservation_again() -> None:
    """A relay that restarts (a coordinator: same key, same address) has forgotten every
    reservation; the private node takes its reservation again once it has reconnected,
    not at the renewal an hour later, and is reachable through the relay again."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            address = await nursery.start(_relay_until, stop)
            port = address.split("/tcp/")[1].split("/")[0]
            async with node(
                2, listen=(), bootstrap=(address,), reachability=Reachability.PRIVATE
            ) as private:
                private.set_handler(ECHO, echo)
                assert private._relay.taken == 1
                stop.set()
                while private.relays() and private.connected_peers():
                    await trio.sleep(0.05)  # the first relay is gone
                async with node(
                    1,
                    listen=(f"/ip4/127.0.0.1/tcp/{port}",),
                    relay_service=True,
                    reachability=Reachability.PUBLIC,
                ):
                    while private._relay.taken == 1:
                        await trio.sleep(0.05)
                    async with node(3, bootstrap=(address,)) as outsider:
                        got = await outsider.request(private.local_peer, ECHO, b"again", timeout=15)
                        assert got == b"again"
