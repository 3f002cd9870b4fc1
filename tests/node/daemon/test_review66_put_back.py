"""Review round 66's lead, proven: a money transaction the queue puts back to be signed
again (dropped behind another, or above a gap being renumbered) still read, in the
intent book, as signed under its old number. A gap filler that took that number first
made the book decide on the stale number: a lock was failed (its job with it) while the
lock put back still landed, and a settle or refund was handed to the queue a second time.

The real :class:`MoneyIntents` (its book and store) over a real :class:`TxQueue`
submitting to an in-process :class:`ledger.Producer`; the queue's window is one
submission, held by a transfer whose answer is slow (a loaded coordinator), so the
fillers, which do not wait for the window, land before the lock is signed again.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import trio
import trio.testing

import ledger
from node.daemon._recovery import MoneyIntents
from node.ledger import TxQueue, TxRequest

from ...keys import key, pub
from ...ledger.helpers import CHAIN, COORD, job_spec

REQUESTER = key("r66 put back requester")
OTHER = key("r66 put back other")


def _feed(producer: ledger.Producer, queue: TxQueue, money: MoneyIntents) -> None:
    """A block, as the daemon takes it: the coordinator's drop reports of ours, the
    queue's and the intents' block."""
    producer.produce()
    for drop in producer.take_dropped():
        if drop.sender == pub(REQUESTER):
            queue.dropped(drop.tx_id, drop.seq, drop.reason)
    queue.on_block()
    money.on_block(producer.state)


async def test_a_lock_put_back_behind_a_refused_transaction_is_signed_once_and_lands(
    autojump_clock: trio.testing.MockClock,
) -> None:
    genesis = ledger.make_genesis(
        CHAIN, [pub(COORD)], {pub(REQUESTER): 1_000}, unbonding_delay=3, reputation_half_life=10
    )
    producer = ledger.Producer(COORD, ledger.State.from_genesis(genesis), interval_ms=100, now_ms=0)
    overdraft = ledger.Transfer(pub(OTHER), 2_000)  # admitted; refused in the block
    lost = ledger.Transfer(pub(OTHER), 3)  # its answer is lost: its outcome unknown
    slow = ledger.Transfer(pub(OTHER), 4)  # holds the queue's one slot for 3 s
    answered: set[ledger.Payload] = set()
    lock_ids: set[bytes] = set()  # the lock's signed transactions

    async def submit(raw: bytes) -> bytes:
        vtx = ledger.verify_tx(raw, CHAIN)
        if isinstance(vtx.payload, ledger.Lock):
            lock_ids.add(vtx.id)
        if vtx.payload == slow and slow not in answered:
            answered.add(slow)
            await trio.sleep(3)
        await trio.sleep(0.01)
        try:
            tx_id = producer.submit(raw).id
        except ledger.LedgerError as exc:
            raise ledger.TransactionRejected(f"transaction rejected: {exc}") from None
        if vtx.payload == lost and lost not in answered:
            answered.add(lost)
            raise trio.TooSlowError  # it arrived; its answer did not
        return tx_id

    queue = TxQueue(
        REQUESTER, lambda: producer.state, submit, chain_id=CHAIN, window=1, retry_s=(0.05, 0.2)
    )
    lock_requests: list[TxRequest] = []

    def put_tx(request: TxRequest) -> None:
        if isinstance(request.payload, ledger.Lock):
            lock_requests.append(request)
        queue.put(request)

    node: Any = SimpleNamespace(
        me=pub(REQUESTER), ledger=SimpleNamespace(state=producer.state), txq=queue, put_tx=put_tx
    )
    node.requester = None
    money = MoneyIntents(node, None)
    failed: list[str] = []
    spec = job_spec(REQUESTER, b"r66 put back")
    lock = ledger.Lock(spec.id, 100, 80, 100, 100, 1, spec.raw)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            queue.put(TxRequest(overdraft, failed.append))  # seq 0
            money.add(lock, expiry_cap=100)  # seq 1
            queue.put(TxRequest(lost))  # seq 2
            while len(producer.mempool) < 3 or not queue.unknown:
                await trio.sleep(0.01)
            queue.put(TxRequest(slow))  # takes the slot before the drops come
            await trio.sleep(0.5)
            for _ in range(8):
                _feed(producer, queue, money)
                node.ledger.state = producer.state
                await trio.sleep(1)
            nursery.cancel_scope.cancel()
    escrow = producer.state.escrow(spec.id)
    assert escrow is not None and escrow.owner == pub(REQUESTER)  # the lock landed
    assert money.failed == 0, "the lock was failed while its transaction was put back"
    assert money.applied == 1 and not money.book.intents
    assert len(failed) == 1 and "balance" in failed[0]  # only the overdraft was refused
    assert len(lock_ids) == 2  # signed at 1, then again once, after the gap
    assert len(lock_requests) == 1  # handed to the queue once; the queue signs it again
