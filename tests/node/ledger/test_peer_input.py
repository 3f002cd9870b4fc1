"""The ledger service against a hostile peer: malformed announcements, a block source that
never answers, replays of old blocks. Each is counted against the peer, and the replica
keeps following the coordinator (issue 14, attacks 1 and 9)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

import protocol
from node.ledger import LedgerService, blocks_topic
from node.ledger._sync import ANNOUNCE_BURST
from node.ledger._wire import BLOCKS_PROTOCOL
from node.net import MemoryHub, MemoryNetwork

from ...keys import key, pub
from ...ledger.helpers import CHAIN, COORD, genesis

MALLORY = key("mallory")


@asynccontextmanager
async def _coordinator_replica_and_mallory(
    *, seed: int, sync_ms: int
) -> AsyncIterator[tuple[LedgerService, LedgerService, MemoryNetwork, trio.Nursery]]:
    """A coordinator's ledger service, a replica following it, and Mallory's network."""
    g = genesis()
    hub = MemoryHub(CHAIN, rng=random.Random(seed))
    async with (
        hub.open(COORD) as coord_net,
        hub.open(key("replica")) as net1,
        hub.open(MALLORY) as evil,
        trio.open_nursery() as nursery,
    ):
        coord = LedgerService(coord_net, g, producer_key=COORD, interval_ms=1000)
        await nursery.start(coord.run)
        replica = LedgerService(net1, g, sources=[pub(COORD)], sync_interval_ms=sync_ms)
        await nursery.start(replica.run)
        yield coord, replica, evil, nursery


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_malformed_announcements_are_counted_not_raised(
    clock: trio.testing.MockClock,
) -> None:
    async def main() -> None:
        async with _coordinator_replica_and_mallory(seed=1, sync_ms=500) as (
            coord,
            replica,
            evil,
            nursery,
        ):
            await replica.wait_height(2)
            garbage = [
                protocol.pack(7),
                protocol.pack([1, 2, 3]),
                protocol.pack([b"x", b"y"]),
                protocol.pack("ab"),
                protocol.pack([-1, b""]),
                protocol.pack([1 << 64 - 1, b""]),
                protocol.pack([3, "block"]),
                protocol.pack([3, b"\x00garbage"]),
                protocol.pack([]),
                b"\xc1",
            ]
            for data in garbage:
                await evil.publish(blocks_topic(CHAIN), data)
            # the same garbage as a block source: answers of every wrong shape (a source, a
            # coordinator gone bad: a stranger's bare head starts no fetch, round 29, F1)
            replica.add_source(pub(MALLORY))
            answers = iter(garbage * 3)

            async def serve(peer: bytes, request: bytes) -> bytes:
                return next(answers, b"")

            evil.set_handler(BLOCKS_PROTOCOL, serve)
            for _ in range(5):
                await evil.publish(blocks_topic(CHAIN), protocol.pack([10**6, b""]))
                await trio.sleep(1)
            target = coord.state.height + 3
            await replica.wait_height(target)
            await coord.wait_height(target)
            assert replica.counters.misbehaving[pub(MALLORY)] >= len(garbage)
            assert coord.counters.misbehaving[pub(MALLORY)] >= len(garbage)
            nursery.cancel_scope.cancel()

    with trio.fail_after(120):
        await main()
    assert clock.current_time() < 120


async def test_a_silent_block_source_stalls_no_one(clock: trio.testing.MockClock) -> None:
    """A source announcing heads it never serves (its fetch hangs) is counted each time, and
    the replica meanwhile stays within a few blocks of the coordinator; replays of old
    genuine blocks under a far height are dropped at once. (Mallory is a source here, a
    coordinator gone silent: a stranger's bare head starts no fetch, round 29, F1.)"""

    async def main() -> None:
        async with _coordinator_replica_and_mallory(seed=2, sync_ms=2000) as (
            coord,
            replica,
            evil,
            nursery,
        ):

            async def never(peer: bytes, request: bytes) -> bytes:
                await trio.sleep_forever()
                raise AssertionError

            evil.set_handler(BLOCKS_PROTOCOL, never)
            replica.add_source(pub(MALLORY))
            await replica.wait_height(2)
            old = replica.replica.recent[1]
            lag = 0
            for _ in range(40):
                await evil.publish(blocks_topic(CHAIN), protocol.pack([10**9, b""]))
                await evil.publish(blocks_topic(CHAIN), protocol.pack([10**9, old]))
                await trio.sleep(1)
                lag = max(lag, coord.state.height - replica.state.height)
            assert lag <= 4, lag
            assert replica.counters.misbehaving[pub(MALLORY)] >= 5
            nursery.cancel_scope.cancel()

    with trio.fail_after(300):
        await main()
    assert clock.current_time() < 300


async def test_a_burst_of_announcements_is_dropped_and_nobody_blamed(
    clock: trio.testing.MockClock,
) -> None:
    """Gossip hands over a backlog at once after a partition or a restart: past the rate
    the announcements are dropped and counted, and the sender (the coordinator, relayed)
    is not blamed; the bucket refills at the block rate."""
    g = genesis()
    hub = MemoryHub(CHAIN, rng=random.Random(3))
    async with hub.open(key("replica")) as net:
        service = LedgerService(net, g, sources=[pub(COORD)])
        peer = pub(COORD)
        taken = [service.sync.take_announcement(peer) for _ in range(3 * ANNOUNCE_BURST)]
        assert taken == [True] * ANNOUNCE_BURST + [False] * (2 * ANNOUNCE_BURST)
        assert service.counters.misbehaving == {}
        await trio.sleep(1.0)  # the bucket refills at the block rate
        assert service.sync.take_announcement(peer) is True
