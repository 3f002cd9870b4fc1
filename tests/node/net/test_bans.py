"""Bans and per-peer bounds, as every implementation's base does them (specs/network.md,
"Peer input and misbehaviour"), on the in-memory network with virtual time."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from node.net import MAX_INBOUND_PER_PEER, MemoryHub, PeerBanned, RemoteError, job_topic

from ...keys import key
from .helpers import CHAIN

ECHO = "/aimx/test/echo/1"


async def echo(peer: bytes, data: bytes) -> bytes:
    return data


async def test_a_ban_refuses_requests_and_messages_and_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = MemoryHub(CHAIN, rng=random.Random(1))
    topic = job_topic(CHAIN, "onnx.cpu.m4")
    async with hub.open(key(1)) as a, hub.open(key(2)) as b:
        a.set_handler(ECHO, echo)
        b.set_handler(ECHO, echo)
        inbox = a.subscribe(topic)
        assert await b.request(a.local_peer, ECHO, b"x") == b"x"
        a.ban(b.local_peer, 60)
        a.ban(a.local_peer, 60)  # never itself
        assert a.is_banned(b.local_peer) and not a.is_banned(a.local_peer)
        assert b.local_peer not in a.connected_peers()
        with pytest.raises(RemoteError, match="banned"):
            await b.request(a.local_peer, ECHO, b"x")
        with pytest.raises(PeerBanned):
            await a.request(b.local_peer, ECHO, b"x")
        await b.publish(topic, b"dropped")
        await trio.sleep(1)
        assert a.counters.refused_banned == 2 and a.counters.bans == 1
        await trio.sleep(60)
        assert not a.is_banned(b.local_peer)
        assert await b.request(a.local_peer, ECHO, b"y") == b"y"
        await b.publish(topic, b"delivered")
        with trio.fail_after(1):
            msg = await inbox.receive()
        assert msg.data == b"delivered"


async def test_requests_in_flight_from_one_peer_are_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = MemoryHub(CHAIN, rng=random.Random(2))
    release = trio.Event()

    async def slow(peer: bytes, data: bytes) -> bytes:
        await release.wait()
        return data

    async with hub.open(key(1)) as a, hub.open(key(2)) as b, hub.open(key(3)) as c:
        a.set_handler(ECHO, slow)
        outcomes: list[bool] = []

        async def one(net: object) -> None:
            try:
                await b.request(a.local_peer, ECHO, b"x")
                outcomes.append(True)
            except RemoteError:
                outcomes.append(False)

        async with trio.open_nursery() as nursery:
            for _ in range(MAX_INBOUND_PER_PEER + 5):
                nursery.start_soon(one, b)
            await trio.sleep(1)
            # another peer is not held back by b's requests
            nursery.start_soon(c.request, a.local_peer, ECHO, b"c")
            await trio.sleep(1)
            release.set()
        assert outcomes.count(True) == MAX_INBOUND_PER_PEER
        assert outcomes.count(False) == 5
