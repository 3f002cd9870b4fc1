"""Review round 29, F1: fresh keys held all 8 block-fetch slots of a replica (each
announced a head of 2**40 and answered ``[0, []]`` just under the fetch timeout, never
counted), and the replica's fetches from its coordinator were dropped for want of a slot:
a replica with a gap stalled. Now a source's fetch never waits for a slot, a bare head
from a non-source starts no fetch, and an answer below the head a peer claimed is counted."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import pytest
import trio
import trio.testing

import ledger
import protocol
from node.ledger import LedgerService, blocks_topic
from node.ledger._sync import MAX_FETCHES_IN_FLIGHT, answer_fault, fetch_admitted
from node.ledger._wire import BLOCKS_PROTOCOL
from node.net import MemoryHub, MemoryNetwork

from ...keys import key, pub
from ...ledger.helpers import CHAIN, COORD, genesis

HUGE = 1 << 40
STRANGERS = [pub(key(f"stranger-{i}")) for i in range(MAX_FETCHES_IN_FLIGHT + 2)]


def _blocks(n: int) -> list[bytes]:
    """The first ``n`` blocks of the test chain (empty ones), signed by the coordinator."""
    producer = ledger.Producer(COORD, ledger.State.from_genesis(genesis()), interval_ms=1, now_ms=0)
    return [producer.produce().block.raw for _ in range(n)]


def _replica() -> ledger.Replica:
    replica = ledger.Replica(ledger.State.from_genesis(genesis()))
    replica.add_source(pub(COORD))
    return replica


# --- the machine and the rules, no I/O -------------------------------------------------------


def test_a_bare_head_from_a_stranger_starts_no_fetch() -> None:
    """Before: ``on_head(stranger, 2**40)`` gave ``FetchBlocks(stranger)``: a fetch slot
    for free, per fresh key."""
    replica = _replica()
    assert replica.on_head(STRANGERS[0], HUGE) == []
    assert replica.head_of(STRANGERS[0]) == 0  # not noted either
    assert replica.on_head(pub(COORD), 5) == [ledger.FetchBlocks(pub(COORD), 1, replica.batch)]
    assert replica.head_of(pub(COORD)) == 5


def test_a_signed_block_above_ours_still_starts_a_fetch_from_anyone() -> None:
    """Honest sync from a non-source is kept: a peer that shows a validly signed block
    above ours is asked for the gap, and the block's height is noted as its head."""
    replica = _replica()
    blocks = _blocks(3)
    assert replica.on_blocks(STRANGERS[0], [blocks[2]]) == [
        ledger.FetchBlocks(STRANGERS[0], 1, replica.batch)
    ]
    assert replica.head_of(STRANGERS[0]) == 3
    effects = replica.on_blocks(STRANGERS[0], blocks)
    assert [type(e) for e in effects] == [ledger.Commit] * 3
    assert replica.state.height == 3


def test_a_source_fetch_is_admitted_whatever_other_peers_hold() -> None:
    """Before: a ninth fetch was dropped whoever it was from, the coordinator's included."""
    sources = [pub(COORD)]
    held = set(STRANGERS[:MAX_FETCHES_IN_FLIGHT])
    assert fetch_admitted(pub(COORD), held, sources)
    assert not fetch_admitted(STRANGERS[-1], held, sources)  # strangers share the cap
    assert not fetch_admitted(pub(COORD), held | {pub(COORD)}, sources)  # one per peer
    # a source's fetch takes no other peer's slot
    fewer = set(STRANGERS[: MAX_FETCHES_IN_FLIGHT - 1]) | {pub(COORD)}
    assert fetch_admitted(STRANGERS[-1], fewer, sources)


def test_an_answer_below_the_claimed_head_is_a_lie() -> None:
    assert answer_fault(0, [], 5, HUGE) == f"answers head 0 below the head {HUGE} it claimed"
    assert answer_fault(9, [], 5, 0) == "claims head 9 but sends no block"
    assert answer_fault(5, [], 5, 5) is None  # nothing new: honest
    assert answer_fault(7, [b"x"], 5, 6) is None


# --- the service -----------------------------------------------------------------------------


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_a_source_fetch_starts_while_strangers_hold_every_slot() -> None:
    hub = MemoryHub(CHAIN, rng=random.Random(1))
    async with hub.open(key("replica")) as net, trio.open_nursery() as nursery:
        service = LedgerService(net, genesis(), sources=[pub(COORD)])
        service.nursery = nursery
        started: list[bytes] = []

        async def hang(effect: ledger.FetchBlocks) -> None:
            started.append(effect.peer)
            await trio.sleep_forever()

        service.sync._fetch_rounds = hang  # type: ignore[method-assign]
        for peer in STRANGERS:
            service.sync.start_fetch(ledger.FetchBlocks(peer, 1, 64))
        service.sync.start_fetch(ledger.FetchBlocks(pub(COORD), 1, 64))
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(started) == sorted([*STRANGERS[:MAX_FETCHES_IN_FLIGHT], pub(COORD)])
        nursery.cancel_scope.cancel()


async def test_an_answer_below_the_head_a_peer_claimed_is_counted() -> None:
    """Before: ``[0, []]`` after a claimed head of 2**40 (or after showing a block above
    ours) was taken as 'nothing new', and the peer could hold a slot that way forever."""
    hub = MemoryHub(CHAIN, rng=random.Random(2))
    async with (
        hub.open(key("replica")) as net,
        hub.open(COORD) as coord_net,
        hub.open(key("stranger-0")) as stranger_net,
    ):

        async def empty(peer: bytes, request: bytes) -> bytes:
            return protocol.pack([0, []])

        coord_net.set_handler(BLOCKS_PROTOCOL, empty)
        stranger_net.set_handler(BLOCKS_PROTOCOL, empty)
        service = LedgerService(net, genesis(), sources=[pub(COORD)])
        service.replica.on_head(pub(COORD), HUGE)  # a source gone bad
        service.replica.on_blocks(STRANGERS[0], [_blocks(3)[2]])  # a stranger showed block 3
        for peer in (pub(COORD), STRANGERS[0]):
            assert await service.sync.fetch(ledger.FetchBlocks(peer, 1, 64)) is None
            assert service.counters.misbehaving[peer] == 1
        # a peer that claimed nothing above its answer is not blamed
        assert await service.sync.fetch(ledger.FetchBlocks(pub(key("other")), 1, 64)) is None
        assert service.replica.head_of(pub(COORD)) == HUGE


async def test_a_head_claimed_while_the_answer_is_on_its_way_does_not_blame_it() -> None:
    """The answer is checked against the head the peer claimed before we asked: a source
    that produced (and announced) its next block while its answer was on the way was
    counted as lying (seen on a loaded bench: "answers head 111 below the head 113")."""
    hub = MemoryHub(CHAIN, rng=random.Random(3))
    async with hub.open(key("replica")) as net, hub.open(COORD) as coord_net:
        service = LedgerService(net, genesis(), sources=[pub(COORD)])

        async def answer_then_announce(peer: bytes, request: bytes) -> bytes:
            service.replica.on_head(pub(COORD), 2)  # block 2 announced meanwhile
            return protocol.pack([0, []])

        coord_net.set_handler(BLOCKS_PROTOCOL, answer_then_announce)
        assert await service.sync.fetch(ledger.FetchBlocks(pub(COORD), 1, 64)) == []
        assert pub(COORD) not in service.counters.misbehaving
        # claimed before the request: still a lie
        assert await service.sync.fetch(ledger.FetchBlocks(pub(COORD), 1, 64)) is None
        assert service.counters.misbehaving[pub(COORD)] == 1


Attack = Callable[[MemoryNetwork, LedgerService], Awaitable[None]]


async def _bare_heads(net: MemoryNetwork, coord: LedgerService) -> None:
    """The review's attack: a head of 2**40, over and over."""
    while True:
        await net.publish(blocks_topic(CHAIN), protocol.pack([HUGE, b""]))
        await trio.sleep(0.2)


async def _relayed_blocks(net: MemoryNetwork, coord: LedgerService) -> None:
    """The coordinator's latest genuine block, relayed by a stranger (it hears gossip): a
    replica that is behind asks that stranger for the gap."""
    while True:
        height = coord.state.height
        raw = coord.replica.recent.get(height)
        if raw is not None:
            await net.publish(blocks_topic(CHAIN), protocol.pack([height, raw]))
        await trio.sleep(0.2)


async def _hold(peer: bytes, request: bytes) -> bytes:
    """A stranger's answer: as late as it may be (the timeout is 5 s), and nothing."""
    await trio.sleep(4.5)
    return protocol.pack([0, []])


async def _attacked(
    hub: MemoryHub, coord_net: MemoryNetwork, replica_net: MemoryNetwork, attack: Attack
) -> tuple[LedgerService, int, int]:
    """Ten strangers attack a replica cut off from its coordinator for 3 s; returns the
    replica, the height it was behind at the heal, and the most it lagged 2 to 20 s after."""
    async with AsyncExitStack() as stack:
        nets = [
            await stack.enter_async_context(hub.open(key(f"stranger-{i}")))
            for i in range(len(STRANGERS))
        ]
        async with trio.open_nursery() as nursery:
            coord = LedgerService(coord_net, genesis(), producer_key=COORD, interval_ms=100)
            await nursery.start(coord.run)
            replica = LedgerService(
                replica_net, genesis(), sources=[pub(COORD)], sync_interval_ms=1000
            )
            await nursery.start(replica.run)
            await replica.wait_height(3)
            for net in nets:
                net.set_handler(BLOCKS_PROTOCOL, _hold)
                nursery.start_soon(attack, net, coord)
            hub.partition([pub(COORD)])  # the replica misses 3 s of blocks
            await trio.sleep(3)
            hub.heal()
            behind = coord.state.height
            assert behind - replica.state.height >= 20, (behind, replica.state.height)
            await trio.sleep(2)
            caught_up = replica.state.height >= behind
            lag = 0
            for _ in range(18):
                await trio.sleep(1)
                lag = max(lag, coord.state.height - replica.state.height)
            nursery.cancel_scope.cancel()
    return replica, (0 if caught_up else behind), lag


@pytest.mark.parametrize("attack", [_bare_heads, _relayed_blocks])
async def test_a_replica_with_a_gap_catches_up_while_strangers_hold_the_slots(
    clock: trio.testing.MockClock, attack: Attack
) -> None:
    """Ten fresh keys each hold a fetch as long as they may (an answer just under the 5 s
    timeout, ``[0, []]``) while a replica misses 3 s of blocks (cut off from the
    coordinator). Before: the replica's fetches from the coordinator were dropped, and it
    stayed behind the whole 20 s watched."""
    hub = MemoryHub(CHAIN, rng=random.Random(3))
    with trio.fail_after(120):
        async with hub.open(COORD) as coord_net, hub.open(key("replica")) as replica_net:
            replica, missed, lag = await _attacked(hub, coord_net, replica_net, attack)
    assert missed == 0  # caught up within 2 s of the heal
    assert lag <= 12, lag  # and kept up (a block every 0.1 s)
    lied = [p for p in STRANGERS if replica.counters.misbehaving.get(p, 0)]
    if attack is _bare_heads:
        assert lied == []  # a stranger's bare head starts no fetch: never asked
    else:
        # strangers were asked for the gap, and each answer below the block it showed counted
        assert len(lied) >= MAX_FETCHES_IN_FLIGHT // 2, lied
