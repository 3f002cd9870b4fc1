"""The transaction queue against a real mempool and producer: pipelined submissions that
arrive out of order still land in request order, and a refused one leaves no gap."""

from __future__ import annotations

import trio

import ledger
from node.ledger import TxQueue, TxRequest

from ...ledger.helpers import ALICE, BOB, CHAIN, COORD, genesis, pub

#: A transfer of this amount is refused by the coordinator the tests stand in for.
REFUSED = 7


def _producer() -> ledger.Producer:
    state = ledger.State.from_genesis(genesis())
    return ledger.Producer(COORD, state, interval_ms=100, now_ms=0)


async def _drive(requests: int, refuse: set[int]) -> tuple[ledger.Producer, list[str], TxQueue]:
    producer = _producer()
    arrivals: list[int] = []

    async def submit(raw: bytes) -> bytes:
        verified = ledger.verify_tx(raw, CHAIN)
        seq = verified.tx.seq
        # Later sequence numbers tend to arrive first: the mempool must hold them.
        await trio.sleep(0.001 * ((requests - seq) % 4))
        payload = verified.payload
        if isinstance(payload, ledger.Transfer) and payload.amount == REFUSED:
            raise ledger.MempoolRejected("refused by the test's coordinator")
        vtx = producer.mempool.add(raw, producer.state)
        arrivals.append(vtx.tx.seq)
        return vtx.id

    queue = TxQueue(ALICE, lambda: producer.state, submit, chain_id=CHAIN, window=8)
    refusals: list[str] = []

    def build(i: int) -> TxRequest:
        amount = REFUSED if i in refuse else 1
        return TxRequest(ledger.Transfer(pub(BOB), amount), refusals.append)

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


async def test_a_transaction_dropped_from_the_block_is_reported_and_its_gap_filled() -> None:
    # Admitted, then refused when the block is made (an overdraft): the producer reports it,
    # the request hears why, and the transactions sent after it land once the gap is filled.
    producer = _producer()

    async def submit(raw: bytes) -> bytes:
        return producer.mempool.add(raw, producer.state).id

    queue = TxQueue(ALICE, lambda: producer.state, submit, chain_id=CHAIN, window=8)
    refusals: list[str] = []

    def build(i: int) -> TxRequest:
        amount = 10**9 if i == 3 else 1  # more than Alice has
        return TxRequest(ledger.Transfer(pub(BOB), amount), refusals.append)

    def produce() -> None:
        effects = producer.tick(producer.next_block_ms)
        for drop in (e for e in effects if isinstance(e, ledger.TxDropped)):
            if drop.sender == pub(ALICE):
                queue.dropped(drop.tx_id, drop.seq, drop.reason)
        queue.on_block()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            for i in range(10):
                queue.put(build(i))
            while queue.submitted < 10:
                await trio.sleep(0.005)
            produce()  # 0-2 in; 3 dropped; 4-9 wait in the mempool behind it
            assert producer.state.next_seq(pub(ALICE)) == 3
            assert len(refusals) == 1 and "dropped from the block" in refusals[0]
            while len(producer.mempool) < 7:  # the filler joins the six waiting
                await trio.sleep(0.005)
            produce()
            nursery.cancel_scope.cancel()
    state = producer.state
    assert state.next_seq(pub(ALICE)) == 10
    assert state.balance(pub(BOB)) == 1_000_000 + 9
    assert queue.lost == 0 and queue.dropped_reports == 1
