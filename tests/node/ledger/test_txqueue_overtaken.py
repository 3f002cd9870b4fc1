"""Review round 2 (M1): the mempool refuses a sequence number with a gap before it, so a
pipelined transaction that overtakes the one before it on the way is refused. The queue
sends it again as soon as one of its own is admitted (not after a backoff), and a
transaction dropped only behind another one's gap is signed again, not reported refused."""

from __future__ import annotations

import trio

import ledger
from node.ledger import TxQueue, TxRequest

from ...keys import pub
from ...ledger.helpers import ALICE, BOB, CHAIN, COORD, genesis

#: Far longer than the tests may take: a transaction sent again only after this failed.
BACKOFF_S = (30.0, 30.0)


def _producer() -> ledger.Producer:
    return ledger.Producer(COORD, ledger.State.from_genesis(genesis()), interval_ms=100, now_ms=0)


def _over_the_wire(producer: ledger.Producer, raw: bytes) -> bytes:
    """The coordinator's answer as a forwarding replica hands it on: a refusal comes back
    as text only (``TransactionRejected``, its prefix twice)."""
    try:
        return producer.mempool.add(raw, producer.state).id
    except ledger.TransactionRejected as exc:
        text = f"transaction rejected: transaction rejected: {exc}"
        raise ledger.TransactionRejected(text) from None


async def test_an_overtaken_transaction_is_sent_again_once_the_one_before_is_in() -> None:
    # Seq 0 takes 50 ms on its way, seq 1 none: 1 is refused for the gap, then admitted
    # right after 0 is, well before any backoff.
    producer = _producer()
    tries: list[int] = []

    async def submit(raw: bytes) -> bytes:
        seq = ledger.verify_tx(raw, CHAIN).tx.seq
        tries.append(seq)
        await trio.sleep(0.05 if seq == 0 else 0)
        return _over_the_wire(producer, raw)

    queue = TxQueue(ALICE, lambda: producer.state, submit, chain_id=CHAIN, retry_s=BACKOFF_S)
    refusals: list[str] = []
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            started = trio.current_time()
            for _ in range(2):
                queue.put(TxRequest(ledger.Transfer(pub(BOB), 1), refusals.append))
            while len(producer.mempool) < 2:
                await trio.sleep(0.001)
            took = trio.current_time() - started
            nursery.cancel_scope.cancel()
    assert tries in ([0, 1, 1], [1, 0, 1])  # 1 was refused once, then admitted
    assert queue.overtaken == 1 and queue.unknown == 0 and refusals == []
    assert took < 0.5, took
    producer.produce()
    assert producer.state.next_seq(pub(ALICE)) == 2


async def test_an_overtaken_transaction_whose_refusal_comes_back_late_is_sent_at_once() -> None:
    # Seq 1 is refused for the gap, but the refusal reaches us after seq 0 was admitted:
    # waiting for another admission would wait for ever (none comes): sent again at once.
    producer = _producer()
    first_in = trio.Event()

    async def submit(raw: bytes) -> bytes:
        seq = ledger.verify_tx(raw, CHAIN).tx.seq
        if seq == 0:
            await trio.sleep(0.01)
            tx_id = _over_the_wire(producer, raw)
            first_in.set()
            return tx_id
        try:
            return _over_the_wire(producer, raw)
        finally:
            await first_in.wait()  # the answer travels back slowly

    queue = TxQueue(ALICE, lambda: producer.state, submit, chain_id=CHAIN, retry_s=BACKOFF_S)
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            for _ in range(2):
                queue.put(TxRequest(ledger.Transfer(pub(BOB), 1)))
            # Wait on the queue's own count: the mempool holds the second transaction a
            # checkpoint before its slow answer reaches the queue.
            while queue.submitted < 2 and queue.rejected == 0:
                await trio.sleep(0.001)
            nursery.cancel_scope.cancel()
    assert queue.submitted == 2 and queue.rejected == 0
    assert len(producer.mempool) == 2


async def test_transactions_dropped_behind_a_refused_one_are_signed_again() -> None:
    # Seq 1 overdraws (refused when the block is made); 2 and 3 are dropped with it. Only
    # 1's request hears of a refusal; the other two are signed again from 1 on (no filler:
    # round 15, R15-7) and land.
    producer = _producer()

    async def submit(raw: bytes) -> bytes:
        return _over_the_wire(producer, raw)

    queue = TxQueue(ALICE, lambda: producer.state, submit, chain_id=CHAIN, retry_s=BACKOFF_S)
    refusals: list[str] = []
    amounts = [1, 10**9, 2, 3]  # the second is more than Alice has
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            for amount in amounts:
                queue.put(TxRequest(ledger.Transfer(pub(BOB), amount), refusals.append))
            while len(producer.mempool) < 4:
                await trio.sleep(0.001)
            for effect in producer.tick(producer.next_block_ms):
                if isinstance(effect, ledger.TxDropped):
                    queue.dropped(effect.tx_id, effect.seq, effect.reason)
            queue.on_block()
            assert producer.state.next_seq(pub(ALICE)) == 1
            assert len(refusals) == 1 and "dropped from the block" in refusals[0]
            while len(producer.mempool) < 2:  # the two again at 1 and 2
                await trio.sleep(0.001)
            producer.tick(producer.next_block_ms)
            nursery.cancel_scope.cancel()
    state = producer.state
    assert state.next_seq(pub(ALICE)) == 3 and len(refusals) == 1
    assert queue.renumberings == 1
    assert state.balance(pub(BOB)) == 1_000_000 + 1 + 2 + 3
