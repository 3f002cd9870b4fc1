"""Review round 19, R19-3: inbound slots were shared by key alone, so one host's fresh keys
(each holding none, as a newcomer does) opening 50-200 DHT streams a second took most
slots that came free and filled the waiting line: an honest newcomer got 0-50 % of its
streams in. Slots are now shared by host first (the address of a direct connection), then
by key within a host (node/net/_fair_slots.py)."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
import trio

from node.net._fair_slots import MAX_WAITING, MAX_WAITING_PER_PEER, FairSlots
from node.net._libp2p_inbound import host_of

from .helpers import node

ECHO = "/aimx/test/echo/1"

A, B = ("ip", "10.0.0.1"), ("ip", "10.0.0.2")


def _hold(slots: FairSlots, peer: bytes, host: object) -> None:
    held = slots.enter(peer, host)
    assert held is not None
    held.exchanging = True  # a DHT stream: its age decides


async def test_a_newcomer_takes_from_the_host_holding_more_never_from_a_smaller_one() -> None:
    slots = FairSlots(4, 4, stall_s=0.0, wait_s=0.0)
    for i in range(4):
        _hold(slots, b"a-%d" % i, A)  # one host, four keys, every slot
    assert slots.enter(b"b", B) is not None  # B holds none: it takes one of A's
    assert slots.held_by_group(A) == 3
    for i in range(4):  # A's fresh keys take from A's own keys: B's host holds fewer
        assert slots.enter(b"a-fresh-%d" % i, A) is not None
    assert (slots.held_by_group(A), slots.held_by(b"b")) == (3, 1)
    # keys counted alone (each its own host, as before), the fourth fresh key took b's
    alone = FairSlots(4, 4, stall_s=0.0, wait_s=0.0)
    for peer in (b"a-0", b"a-1", b"a-2", b"b"):
        _hold(alone, peer, None)
    for i in range(4):
        assert alone.enter(b"a-fresh-%d" % i) is not None
    assert alone.held_by(b"b") == 0


async def test_keys_of_one_host_share_by_key_as_before() -> None:
    slots = FairSlots(2, 2, stall_s=0.0, wait_s=0.0)
    _hold(slots, b"x", A)
    _hold(slots, b"y", A)
    assert slots.enter(b"x", A) is None  # y holds no more than x
    _hold(slots, b"z", B)  # z's host holds none, A's two: it took x's, stalled longest
    assert (slots.held_by(b"x"), slots.held_by(b"y")) == (0, 1)
    assert slots.enter(b"w", A) is not None  # from y (B's host holds no more than A's)
    assert (slots.held_by(b"y"), slots.held_by(b"z")) == (0, 1)


async def test_a_full_line_gives_a_newcomers_place_to_a_waiter_of_a_host_holding_more(
    autojump_clock: object,
) -> None:
    slots = FairSlots(2, 16, stall_s=2.0, wait_s=2.5)
    _hold(slots, b"a-0", A)
    _hold(slots, b"a-1", A)
    waiters = MAX_WAITING // MAX_WAITING_PER_PEER
    got: list[bytes] = []

    async def arrive(peer: bytes, host: object, at: float) -> None:
        await trio.sleep(at)
        slot = await slots.acquire(peer, host)
        if slot is not None:
            got.append(peer)
            slot.exchanging = True

    async with trio.open_nursery() as nursery:
        for i in range(waiters):  # A's fresh keys fill the line
            for _ in range(MAX_WAITING_PER_PEER):
                nursery.start_soon(arrive, b"a-fresh-%d" % i, A, 0.1)
        nursery.start_soon(arrive, b"b", B, 0.5)  # the line is full: B takes a place
    assert got[0] == b"b"  # the first slot to come of age (2 s) went to B


async def test_fresh_keys_of_one_host_do_not_shut_out_another_hosts_newcomers(
    autojump_clock: object,
) -> None:
    """The review's measure, on the DHT's slots: 64 held by one host, which opens fresh
    keys at 100 a second (each its own key) for 10 s; a newcomer of another host arrives
    every 0.5 s. Counted by key alone, 27.5 % of the newcomers got in."""
    slots = FairSlots(64, 16, stall_s=2.0, wait_s=2.5)
    for i in range(64):
        _hold(slots, b"a-%d" % i, A)
    honest = {"in": 0, "out": 0}

    async def stream(peer: bytes, host: object, tally: dict[str, int] | None) -> None:
        slot = await slots.acquire(peer, host)
        if tally is not None:
            tally["in" if slot is not None else "out"] += 1
        if slot is not None:
            slot.exchanging = True
            with slot.scope:
                await trio.sleep(30 if tally is None else 1.0)  # a flood slot is held
            slots.leave(slot)

    async with trio.open_nursery() as nursery:
        for tick in range(1000):  # 10 s at 100 opens a second
            nursery.start_soon(stream, b"a-fresh-%d" % tick, A, None)
            if tick % 50 == 0:
                nursery.start_soon(stream, b"b-%d" % tick, B, honest)
            await trio.sleep(0.01)
        nursery.cancel_scope.deadline = trio.current_time() + 5
    assert honest == {"in": 20, "out": 0}


# --- which host a connection is (round 22, R22-1) -------------------------------------


class _Socket:
    def __init__(self, address: tuple[object, ...]) -> None:
        self.address = address

    def getpeername(self) -> tuple[object, ...]:
        return self.address


class _Conn:
    """py-libp2p's chain as the node sees it: muxer, secure session, raw connection,
    trio stream, socket (each holding the next)."""

    def __init__(self, address: tuple[object, ...] | None, kind: str = "DIRECT") -> None:
        from libp2p.connection_types import ConnectionType

        self.kind = ConnectionType[kind]
        raw = SimpleNamespace(stream=SimpleNamespace(socket=_Socket(address) if address else None))
        self.secured_conn = SimpleNamespace(conn=SimpleNamespace(conn=raw))

    def get_connection_type(self) -> object:
        return self.kind


def _stream(address: tuple[object, ...] | None, kind: str = "DIRECT") -> object:
    return SimpleNamespace(muxed_conn=_Conn(address, kind))


def test_a_host_is_its_ipv4_address_or_its_ipv6_prefix() -> None:
    key = b"k" * 32
    assert host_of(_stream(("10.1.2.3", 4001)), key) == ("ip", "10.1.2.3")
    # IPv6 sockets give 4-tuples (py-libp2p 0.8.1 reads none: every IPv6 peer was its key)
    a = host_of(_stream(("2001:db8:1:2::5", 4001, 0, 0)), key)
    b = host_of(_stream(("2001:db8:1:ff:ffff::9", 4001, 0, 0)), b"j" * 32)
    assert a == b != key  # one /56, one host
    assert host_of(_stream(("2001:db8:1:100::5", 4001, 0, 0)), key) != a
    # IPv6 standing for IPv4: a client of a dual-stack listener, NAT64, 6to4
    for v6 in ("::ffff:10.1.2.3", "64:ff9b::a01:203", "2002:a01:203::1"):
        assert host_of(_stream((v6, 4001, 0, 0)), key) == ("ip", "10.1.2.3"), v6
    # an address that cannot be read: one host for all such, never the key
    assert host_of(_stream(None), key) == host_of(_stream(None), b"j" * 32) != key
    # relayed: the address is the relay's; the key alone
    assert host_of(_stream(("10.9.9.9", 4001), "RELAYED"), key) == key


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_two_keys_of_one_machine_over_ipv6_are_one_host() -> None:
    seen: list[object] = []

    async def record(peer: bytes, data: bytes) -> bytes:
        return data

    with trio.fail_after(30):
        async with (
            node(431, listen=("/ip6/::1/tcp/0",)) as server,
            node(432) as a,
            node(433) as b,
        ):
            server.set_handler(ECHO, record)
            streams = server._streams
            original = streams._slots.acquire

            async def acquire(peer: bytes, group: object = None) -> object:
                seen.append(group)
                return await original(peer, group)

            streams._slots.acquire = acquire  # type: ignore[method-assign]
            for client in (a, b):
                await client.connect(server.addresses()[0])
                assert await client.request(server.local_peer, ECHO, b"x") == b"x"
    assert len(seen) == 2 and seen[0] == seen[1] and seen[0][0] == "ip6"
