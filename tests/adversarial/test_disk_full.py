"""Adversarial review of the disk-full fault (67d2c64): the fault state is entered only
when a block write fails. A stranger's forged, replayed and out-of-order blocks (announced,
and served in answer to the fetch its announcement causes) must never reach the store as a
failed write: the fault stays clear and the replica keeps following the coordinator.
Real time (the store's thread does real I/O) over the in-memory network, blocks every
0.1 s."""

from __future__ import annotations

import random
from pathlib import Path

import trio

import ledger
import protocol
from node.ledger import LedgerService, StoreThread
from node.ledger._service import BLOCKS_PROTOCOL, blocks_topic
from node.net import MemoryHub

from ..keys import key, pub
from ..ledger.helpers import CHAIN, COORD, genesis, signed_block

MALLORY = key("mallory")


async def test_a_strangers_blocks_never_put_a_replica_in_the_fault_state(tmp_path: Path) -> None:
    g = genesis()
    hub = MemoryHub(CHAIN, rng=random.Random(11))
    store = StoreThread(lambda: ledger.LedgerStore.open(tmp_path / "ledger.sqlite3", g))
    faults: list[str | None] = []
    store.on_fault.append(faults.append)
    try:
        async with (
            hub.open(COORD) as coord_net,
            hub.open(key("replica")) as replica_net,
            hub.open(MALLORY) as mallory_net,
            trio.open_nursery() as nursery,
        ):
            coord = LedgerService(coord_net, g, producer_key=COORD, interval_ms=100)
            await nursery.start(coord.run)
            replica = LedgerService(
                replica_net,
                g,
                store=store,
                sources=[pub(COORD)],
                interval_ms=100,
                sync_interval_ms=200,
            )
            await nursery.start(replica.run)
            await replica.wait_height(3)
            genuine = await store.call(lambda s: s.blocks_from(1, 3))
            served: list[int] = []

            async def lying_blocks(peer: bytes, request: bytes) -> bytes:
                served.append(1)
                h = replica.state.height
                forged = signed_block(h + 1, replica.state.last_block_hash, signer=MALLORY)
                # a forged next block, a far-future head and an old genuine block
                return protocol.pack([h + 10**6, [genuine[0], forged, genuine[2]]])

            mallory_net.set_handler(BLOCKS_PROTOCOL, lying_blocks)
            # a source gone bad: a stranger's bare head starts no fetch (round 29, F1), and
            # its answers are what is tried here
            replica.add_source(pub(MALLORY))
            await mallory_net.connect(replica_net.addresses()[0])
            topic = blocks_topic(CHAIN)
            for i in range(30):
                h = replica.state.height
                forged = signed_block(h + 1, replica.state.last_block_hash, signer=MALLORY)
                announcements = [
                    protocol.pack([h + 1, forged]),
                    protocol.pack([h + 5, b""]),  # a head: the replica fetches from Mallory
                    protocol.pack([1, genuine[0]]),  # a replay
                    protocol.pack([h + 2, genuine[1]]),  # an old block claimed higher
                ]
                await mallory_net.publish(topic, announcements[i % len(announcements)])
                await trio.sleep(0.03)
            target = coord.state.height
            with trio.fail_after(20):
                await replica.wait_height(target)
            assert store.fault is None and faults == []
            h = replica.state.height
            assert h >= target
            theirs = ledger.decode_block(coord.replica.recent[h], g)
            assert replica.state.last_block_hash == theirs.id  # the coordinator's chain
            assert replica.state.root == theirs.message.state_root
            assert replica.counters.bad_blocks > 0  # Mallory was seen and counted
            assert served  # its answers to fetches were tried too
            nursery.cancel_scope.cancel()
    finally:
        store.close()
