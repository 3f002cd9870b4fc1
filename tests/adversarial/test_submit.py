"""Adversarial review of waiting submissions (274c091) and of per-peer sync state: can a
peer make a node wait, or pile up state, without bound? Virtual time (MockClock) over the
in-memory network."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

import ledger
from ledger._replica import MAX_HEADS_KEPT
from node.ledger import LedgerService
from node.ledger._service import TX_PROTOCOL
from node.net import MemoryHub, RemoteError

from ..keys import key, pub
from ..ledger.helpers import ALICE, BOB, CHAIN, COORD, genesis

INTERVAL_MS = 1000


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_forwarded_transactions_never_wait_for_an_absent_coordinator(
    clock: trio.testing.MockClock,
) -> None:
    """Mallory sends a replica many transactions (its own, valid) while the coordinator is
    away: the replica forwards them without waiting (wait=False), each is refused at once,
    so nothing of Mallory's is held while the coordinator is gone."""

    async def main() -> None:
        g = genesis()
        hub = MemoryHub(CHAIN, rng=random.Random(5))
        mallory = key("mallory")
        async with (
            hub.open(COORD) as coord_net,
            hub.open(key("replica")) as replica_net,
            hub.open(mallory) as mallory_net,
            trio.open_nursery() as nursery,
        ):
            coord = LedgerService(coord_net, g, producer_key=COORD, interval_ms=INTERVAL_MS)
            await nursery.start(coord.run)
            replica = LedgerService(replica_net, g, sources=[pub(COORD)], interval_ms=INTERVAL_MS)
            await nursery.start(replica.run)
            await replica.wait_height(2)
            hub.partition([pub(COORD)])
            started = trio.current_time()
            answers: list[str] = []

            async def send(seq: int) -> None:
                raw = ledger.tx.transfer(
                    ALICE, CHAIN, seq, to=pub(BOB), amount=1, expiry_height=100
                ).raw
                try:
                    await mallory_net.request(pub(key("replica")), TX_PROTOCOL, raw)
                    answers.append("accepted")
                except RemoteError as exc:
                    answers.append(str(exc))

            async with trio.open_nursery() as senders:
                for seq in range(40):
                    senders.start_soon(send, seq)
            assert len(answers) == 40
            assert all("no coordinator reachable" in a for a in answers), answers[:3]
            assert trio.current_time() - started < 1.0  # none waited
            nursery.cancel_scope.cancel()

    with trio.fail_after(60):
        await main()


def test_announced_heads_of_strangers_are_bounded() -> None:
    """Before the fix Replica._best_seen kept one entry for every peer that ever announced
    a head (LedgerService._announced -> Replica.on_head -> note_head), never forgotten: keys
    are free, so a stranger grew it without bound (8,193 entries here)."""
    replica = ledger.Replica(ledger.State.from_genesis(genesis()))
    replica.add_source(pub(COORD))
    replica.note_head(pub(COORD), 7)
    for i in range(MAX_HEADS_KEPT * 2):
        stranger = i.to_bytes(32, "big")
        replica.on_head(stranger, 1)
    assert len(replica._best_seen) <= MAX_HEADS_KEPT
    assert replica.best_source_head() == 7  # a source's head is never what goes
