"""The transaction queue against a real mempool and producer: pipelined submissions that
arrive out of order still land in request order, and a refused one leaves no gap."""

from __future__ import annotations

import trio

import ledger
import protocol
from ledger import tx
from node.daemon._txs import TxQueue, TxRequest

from ...ledger.helpers import ALICE, BOB, CHAIN, COORD, genesis, pub


def _producer() -> ledger.Producer:
    state = ledger.State.from_genesis(genesis())
    return ledger.Producer(COORD, state, interval_ms=100, now_ms=0)


async def _drive(requests: int, refuse: set[int]) -> tuple[ledger.Producer, list[str], TxQueue]:
    producer = _producer()
    arrivals: list[int] = []

    async def submit(raw: bytes) -> bytes:
        seq = ledger.verify_tx(raw, CHAIN).tx.seq if b"other-chain" not in raw else -1
        # Later sequence numbers tend to arrive first: the mempool must hold them.
        await trio.sleep(0.001 * ((requests - seq) % 4))
        vtx = producer.mempool.add(raw, producer.state)
        arrivals.append(vtx.tx.seq)
        return vtx.id

    queue = TxQueue(ALICE, lambda: producer.state, submit, chain_id=CHAIN, window=8)
    refusals: list[str] = []

    def build(i: int) -> TxRequest:
        def make(seq: int, expiry: int) -> protocol.Signed[protocol.Transaction]:
            chain = "other-chain" if i in refuse else CHAIN
            return tx.transfer(ALICE, chain, seq, to=pub(BOB), amount=1, expiry_height=expiry)

        return TxRequest(f"transfer {i}", make, refusals.append)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            for i in range(requests):
                queue.put(build(i))
            while queue.submitted + queue.rejected < requests or len(producer.mempool) < requests:
                await trio.sleep(0.005)
            nursery.cancel_scope.cancel()
    assert sorted(arrivals) != arrivals  # they did arrive out of order
    return producer, refusals, queue


async def test_pipelined_submissions_land_in_order() -> None:
    producer, refusals, _ = await _drive(20, set())
    producer.produce()
    state = producer.state
    assert refusals == []
    assert state.next_seq(pub(ALICE)) == 20
    assert state.balance(pub(BOB)) == 1_000_000 + 20


async def test_a_refused_transaction_leaves_no_gap() -> None:
    producer, refusals, queue = await _drive(20, {5})
    assert len(refusals) == 1 and queue.rejected == 1
    producer.produce()
    state = producer.state
    # The refused one's sequence number was filled (a transfer of 1 to ourselves), so the
    # 19 after it were not held back.
    assert state.next_seq(pub(ALICE)) == 20
    assert state.balance(pub(BOB)) == 1_000_000 + 19
