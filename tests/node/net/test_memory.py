"""The in-memory network's own knobs: latency, loss, partitions, expiry, renewal (MockClock)."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from node.net import (
    MemoryHub,
    NetworkTimeout,
    PeerEvent,
    PeerUnreachable,
    Reachability,
)

from ...keys import key
from .helpers import CHAIN, advert

ECHO = "/aimx/test/echo/1"


async def echo(peer: bytes, data: bytes) -> bytes:
    return data


async def test_latency_is_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    hub = MemoryHub(CHAIN, rng=random.Random(1), latency=(0.05, 0.05))
    async with hub.open(key(1)) as a, hub.open(key(2)) as b:
        a.set_handler(ECHO, echo)
        start = trio.current_time()
        assert await b.request(a.local_peer, ECHO, b"x") == b"x"
        assert trio.current_time() - start == pytest.approx(0.1)


async def _loss_run(seed: int) -> list[bool]:
    hub = MemoryHub(CHAIN, rng=random.Random(seed), latency=(0.001, 0.01), loss=0.3)
    outcomes = []
    async with hub.open(key(1)) as a, hub.open(key(2)) as b:
        a.set_handler(ECHO, echo)
        for i in range(60):
            try:
                await b.request(a.local_peer, ECHO, b"%d" % i, timeout=1)
                outcomes.append(True)
            except NetworkTimeout:
                outcomes.append(False)
    return outcomes


async def test_loss_is_seeded_and_repeatable(autojump_clock: trio.testing.MockClock) -> None:
    first = await _loss_run(7)
    assert first == await _loss_run(7)
    # a request survives when neither it nor its answer is lost: about 0.7 * 0.7
    assert 15 < sum(first) < 45


async def test_partition_and_heal(autojump_clock: trio.testing.MockClock) -> None:
    hub = MemoryHub(CHAIN, rng=random.Random(2))
    async with hub.open(key(1)) as a, hub.open(key(2)) as b:
        a.set_handler(ECHO, echo)
        await b.connect(a.addresses()[0])
        events = a.peer_events()
        inbox = a.subscribe("aimx/t")
        hub.partition([a.local_peer], [b.local_peer])
        assert await events.receive() == PeerEvent(b.local_peer, False)
        with pytest.raises(PeerUnreachable):
            await b.request(a.local_peer, ECHO, b"x")
        await b.publish("aimx/t", b"lost")
        await trio.sleep(1)
        hub.heal()
        assert await b.request(a.local_peer, ECHO, b"y") == b"y"
        assert await events.receive() == PeerEvent(b.local_peer, True)
        await b.publish("aimx/t", b"after")
        message = await inbox.receive()
        assert message.data == b"after"


async def test_private_node_needs_its_own_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = MemoryHub(CHAIN, rng=random.Random(3))
    async with (
        hub.open(key(1), reachability=Reachability.PRIVATE) as private,
        hub.open(key(2)) as public,
    ):
        private.set_handler(ECHO, echo)
        with pytest.raises(PeerUnreachable):
            await public.request(private.local_peer, ECHO, b"x")
        await private.connect(public.addresses()[0])
        assert await public.request(private.local_peer, ECHO, b"x") == b"x"


async def test_records_expire_and_renew(autojump_clock: trio.testing.MockClock) -> None:
    hub = MemoryHub(CHAIN, rng=random.Random(4))
    seq = 0

    def renew() -> object:
        nonlocal seq
        seq += 1
        return advert(key(1), ("onnx.cpu.m1",), now_ms=hub.now_ms(), ttl_ms=120_000, seq=seq)

    async with hub.open(key(1)) as a, hub.open(key(2)) as b, hub.open(key(3)) as c:
        await a.advertise(renew(), renew=renew)  # type: ignore[arg-type]
        await b.advertise(advert(key(2), ("onnx.cpu.m1",), now_ms=hub.now_ms(), ttl_ms=120_000))
        await trio.sleep(600)  # ten virtual minutes
        found = await c.find_providers("onnx.cpu.m1")
        assert [r.signer for r in found] == [a.local_peer]  # b's expired, a's renewed
        assert found[0].message.seq > 5
        assert a.counters.records_refreshed == found[0].message.seq - 1
    # a node that left keeps its record until it expires
    async with hub.open(key(4)) as d:
        assert [r.signer for r in await d.find_providers("onnx.cpu.m1")] == [a.local_peer]
        await trio.sleep(121)
        assert await d.find_providers("onnx.cpu.m1") == []


async def test_subscriber_queue_overflow_drops_and_counts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = MemoryHub(CHAIN, rng=random.Random(5))
    async with hub.open(key(1)) as a, hub.open(key(2)) as b:
        inbox = a.subscribe("aimx/t", queue_size=3)
        for i in range(10):
            await b.publish("aimx/t", b"%d" % i)
        await trio.sleep(1)
        assert inbox.dropped == 7
        assert a.counters.pubsub_dropped == 7
        kept = {(await inbox.receive()).data for _ in range(3)}
        assert len(kept) == 3 and kept <= {b"%d" % i for i in range(10)}
