"""Replication over the in-memory network: a coordinator and replicas run LedgerService.

Blocks every virtual second, replicas fetch and re-validate; an offline replica catches
up; forged and equivocating blocks leave replicas' state unchanged, and the equivocation
proof is kept (in memory and in the store).

The clock is a trio MockClock running ten times faster than real time. An autojump clock
is wrong here: the SQLite store works on its own thread, which trio does not see, so
virtual time would race ahead of the store and the chain would grow faster than a replica
can fetch it.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
import trio.testing

import ledger
import protocol
from ledger import tx
from node.ledger import LedgerService, StoreThread, blocks_topic
from node.net import MemoryHub

from ..keys import key, pub
from .helpers import ALICE, BOB, CAROL, CHAIN, COORD, genesis, signed_block


def open_store(path: Path, g: ledger.Genesis) -> StoreThread:
    return StoreThread(lambda: ledger.LedgerStore.open(path, g))


def block_at(svc: LedgerService, height: int) -> protocol.Signed[ledger.Block]:
    return ledger.decode_block(svc.replica.recent[height], svc.genesis)


@pytest.fixture
def fast_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(rate=10)


async def test_coordinator_and_replicas(tmp_path: Path, fast_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(300):  # virtual seconds: a failure, never a hang
        await _coordinator_and_replicas(tmp_path)


async def _coordinator_and_replicas(tmp_path: Path) -> None:
    g = genesis()
    hub = MemoryHub(CHAIN, rng=random.Random(3))
    stores = [open_store(tmp_path / f"n{i}.sqlite3", g) for i in range(3)]
    try:
        async with (
            hub.open(COORD) as coord_net,
            hub.open(key("replica-1")) as net1,
            hub.open(key("replica-2")) as net2,
            trio.open_nursery() as nursery,
        ):
            coord = LedgerService(
                coord_net, g, store=stores[0], producer_key=COORD, interval_ms=1000
            )
            await nursery.start(coord.run)
            r1 = LedgerService(net1, g, sources=[pub(COORD)], sync_interval_ms=500)
            r2 = LedgerService(net2, g, store=stores[1], sources=[pub(COORD)])
            await nursery.start(r1.run)
            await nursery.start(r2.run)

            # transactions through a replica (forwarded) and straight to the coordinator
            await r1.submit(
                tx.transfer(ALICE, CHAIN, 0, to=pub(BOB), amount=100, expiry_height=50).raw
            )
            await coord.submit(
                tx.transfer(BOB, CHAIN, 0, to=pub(CAROL), amount=7, expiry_height=50).raw
            )
            # the same (sender, seq) again: refused as pending or, once in a block, as a replay
            try:
                await r1.submit(
                    tx.transfer(ALICE, CHAIN, 0, to=pub(BOB), amount=1, expiry_height=50).raw
                )
            except ledger.TransactionRejected as exc:
                assert "sequence number 0" in str(exc)
            else:
                raise AssertionError("a duplicate sequence number must be refused")

            await r1.wait_height(5)
            await r2.wait_height(5)
            for r in (r1, r2):
                assert block_at(coord, 5).message.state_root == block_at(r, 5).message.state_root
                assert r.state.balance(pub(BOB)) == 1_000_093
            # a replica that was offline joins late and catches up from height 1
            async with hub.open(key("replica-3")) as net3:
                r3 = LedgerService(net3, g, store=stores[2], sources=[pub(COORD)])
                nursery.start_soon(r3.run)
                target = coord.state.height + 2
                await r3.wait_height(target)
                assert r3.state.balance(pub(CAROL)) == 1_000_007
                assert block_at(coord, target).id == block_at(r3, target).id

                # mallory publishes a forged block and an equivocating one
                async with hub.open(key("mallory")) as evil:
                    h = r1.state.height
                    forged = signed_block(h + 1, r1.state.last_block_hash, signer=key("mallory"))
                    await evil.publish(blocks_topic(CHAIN), protocol.pack([h + 1, forged]))
                    prev = block_at(coord, 1)
                    twin = signed_block(2, prev.id, state_root=b"\x07" * 32)
                    await evil.publish(blocks_topic(CHAIN), protocol.pack([2, twin]))
                    proof = await r3.wait_proof()
                    assert proof.height == 2 and proof.second == twin
                    assert proof.producers == (pub(COORD), pub(COORD))
                    await r1.wait_proof()
                # state kept: replicas still follow the real chain (and, two blocks of virtual
                # time later, the forged block delivered within milliseconds was refused)
                await r1.wait_height(h + 3)
                assert r1.counters.bad_blocks >= 1
                assert block_at(r1, h + 1).signer == pub(COORD)
                assert (
                    block_at(coord, h + 3).message.state_root
                    == block_at(r1, h + 3).message.state_root
                )
                nursery.cancel_scope.cancel()
    finally:
        for s in stores:
            s.close()
    # the stores hold a consistent chain and the proof
    with ledger.LedgerStore.open(tmp_path / "n2.sqlite3") as store:
        report = ledger.verify_chain(store)
        assert report.height >= 5
        assert [p.height for p in store.proofs()] == [2]
    with ledger.LedgerStore.open(tmp_path / "n0.sqlite3") as store:
        assert ledger.verify_chain(store).height >= report.height


async def test_a_sender_hears_of_its_dropped_transaction(
    fast_clock: trio.testing.MockClock,
) -> None:
    from node.ledger import DROPPED_PROTOCOL
    from node.net import RemoteError

    g = genesis()
    hub = MemoryHub(CHAIN, rng=random.Random(4))
    with trio.fail_after(60):
        async with (
            hub.open(COORD) as coord_net,
            hub.open(ALICE) as alice_net,
            hub.open(key("mallory")) as evil,
            trio.open_nursery() as nursery,
        ):
            coord = LedgerService(coord_net, g, producer_key=COORD, interval_ms=1000)
            await nursery.start(coord.run)
            alice = LedgerService(alice_net, g, sources=[pub(COORD)])
            await nursery.start(alice.run)
            heard: list[tuple[bytes, int, str]] = []
            done = trio.Event()

            def on_dropped(tx_id: bytes, seq: int, reason: str) -> None:
                heard.append((tx_id, seq, reason))
                done.set()

            alice.on_dropped.append(on_dropped)
            # only a coordinator may report a drop, and only in the notice's form
            notice = protocol.pack([[b"x" * 32, 0, "no"]])
            with pytest.raises(RemoteError, match="only a coordinator"):
                await evil.request(pub(ALICE), DROPPED_PROTOCOL, notice)
            with pytest.raises(RemoteError, match="bad dropped-transaction notice"):
                await coord_net.request(pub(ALICE), DROPPED_PROTOCOL, protocol.pack([b"x", 0]))
            assert heard == []
            overdraft = tx.transfer(ALICE, CHAIN, 0, to=pub(BOB), amount=10**9, expiry_height=50)
            await alice.submit(overdraft.raw)  # admitted: balances are checked in the block
            await done.wait()
            assert heard[0][:2] == (overdraft.id, 0) and "balance" in heard[0][2], heard
            assert coord.state.next_seq(pub(ALICE)) == 0
            nursery.cancel_scope.cancel()


def test_a_replica_keeps_one_equivocation_proof_a_height_and_a_bounded_number() -> None:
    # Review round 74, R74-C: a coordinator signing many versions of a block gave any peer
    # replaying them a new proof each (up to 2 MB, in memory and on disk).
    g = genesis()
    producer = ledger.Producer(COORD, ledger.State.from_genesis(g), interval_ms=1, now_ms=0)
    first = producer.produce().block.raw
    replica = ledger.Replica(ledger.State.from_genesis(g))
    replica.add_source(pub(COORD))
    assert [type(e).__name__ for e in replica.on_blocks(pub(COORD), [first])] == ["Commit"]
    found = []
    for n in range(1, 10):  # nine more versions of block 1, signed, replayed by a stranger
        other = signed_block(1, g.hash(), state_root=bytes([n]) * 32)
        found += replica.on_blocks(pub(ALICE), [other])
    assert [type(e).__name__ for e in found] == ["ProofFound"]
    assert [p.height for p in replica.proofs] == [1]
