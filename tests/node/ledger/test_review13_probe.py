"""Review round 13, R13-4: the coordinator's drop reports are best effort (64 on their way
at once, 5 s each, a silent sender skipped for 60 s), and about 800 rotating silent keys
with a refused transaction each held every place: honest senders heard of no drop, and a
transaction of theirs refused in a block, with everything behind it, waited for its expiry
(30 blocks). Now the queue sends its pending transactions again once one has waited
``PROBE_BLOCKS`` blocks: one the coordinator refused at a block is answered so, and taken
as its drop report. Here no report reaches the queue at all.

The real :class:`TxQueue` against an in-process :class:`ledger.Producer`."""

from __future__ import annotations

import trio
import trio.testing

import ledger
from ledger import tx
from node.ledger import TxRequest
from node.ledger._txqueue import PROBE_BLOCKS

from ...keys import key, pub
from ...ledger.helpers import CHAIN, COORD, bid, job_spec
from .drag import lock_job, queue_on, sealed_claim

SENDER = key("r13-4 sender")
OTHER = key("r13-4 requester")
SYBIL = key("r13-4 requester's own key")
PRICE = 100


async def test_a_refusal_whose_report_never_arrives_is_learnt_within_a_few_blocks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    funds = {pub(SENDER): 10, pub(OTHER): 10_000}
    genesis = ledger.make_genesis(CHAIN, [pub(COORD)], funds)
    producer = ledger.Producer(COORD, ledger.State.from_genesis(genesis), interval_ms=100, now_ms=0)
    job = lock_job(producer, OTHER, 0, job_spec(OTHER, b"r13-4"), price=PRICE)
    producer.produce()
    queue = queue_on(producer, SENDER)
    refused: dict[str, int] = {}
    landed_at: int | None = None

    def told(name: str) -> TxRequest:
        payload: ledger.Payload = {
            "overdraft": ledger.Transfer(pub(OTHER), 11),  # refused in the block
            "claim": sealed_claim(OTHER, SENDER, job, b"k" * 32, claim_by=40, price=PRICE),
        }[name]

        def on_reject(_reason: str) -> None:
            refused.setdefault(name, producer.state.height)

        return TxRequest(payload, on_reject)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            for name in ("overdraft", "claim"):
                queue.put(told(name))
            queue.put(TxRequest(ledger.Transfer(pub(OTHER), 3)))  # behind the overdraft
            while len(producer.mempool) < 3:
                await trio.sleep(0.01)
            # the requester closes its escrow ahead of the claim, in the same block
            producer.submit(
                tx.settle(
                    OTHER,
                    CHAIN,
                    1,
                    job_id=job,
                    payouts={pub(SYBIL): PRICE},
                    bids={pub(SYBIL): bid(SYBIL, PRICE, job=job)},
                    expiry_height=40,
                    fee=1,
                ).raw
            )
            start = producer.state.height
            for _ in range(12):
                producer.produce()
                producer.take_dropped()  # never told: every notice place is held
                queue.on_block()
                if landed_at is None and producer.state.next_seq(pub(SENDER)) >= 1:
                    landed_at = producer.state.height
                await trio.sleep(1)
            nursery.cancel_scope.cancel()
    assert set(refused) == {"overdraft", "claim"}
    assert max(refused.values()) <= start + PROBE_BLOCKS + 1  # before: at the expiry, 30
    assert landed_at is not None and landed_at <= start + PROBE_BLOCKS + 3  # renumbered
    assert producer.state.balance(pub(OTHER)) == 10_000 - PRICE - 1 + 3  # lock, fee, B
    assert queue.probes >= 1
