"""Review round 10, R10-2: a requester settled each of its escrows (paying a key of its own)
in the very block the provider's sealed claim of it landed in, ahead of it. The claim was
refused in the block and every later transaction of the provider's dropped with it, block
after block: 0 of 17 honest claims and 0 of 17 of its own transfers landed in 60 blocks.
Claims now take no sequence number (``ledger.UNSEQUENCED``): one refused in a block takes
nothing else of ours with it. (Rounds 10 to 12 signed a claim of a requester that never
paid us last instead, which fresh sybil requesters got past: R12-1.)

The real :class:`TxQueue` against an in-process :class:`ledger.Producer`.
"""

from __future__ import annotations

import contextlib
import hashlib

import nacl.signing
import trio
import trio.testing

import ledger
from node.ledger import TxRequest

from ...keys import key, pub
from ...ledger.helpers import CHAIN, COORD, bid, job_spec
from .drag import feed_block, lock_job, queue_on, sealed_claim

ATTACKER = key("r10-2 requester")
SELF = key("r10-2 requester's own key")
PROVIDER = key("r10-2 provider")
HONEST = [key(f"r10-2 honest {i}") for i in range(8)]
PRICE = 100
BLOCKS = 30
AHEAD = 8


def _claim(requester: nacl.signing.SigningKey, job_id: bytes, claim_by: int) -> ledger.Claim:
    return sealed_claim(requester, PROVIDER, job_id, hashlib.sha256(job_id).digest(), claim_by)


async def test_a_requester_closing_escrows_under_our_claims_drops_nothing_else_of_ours(
    autojump_clock: trio.testing.MockClock,
) -> None:
    funds = {pub(ATTACKER): 10**6, pub(PROVIDER): 1_000} | {pub(h): 10**6 for h in HONEST}
    producer = ledger.Producer(
        COORD,
        ledger.State.from_genesis(ledger.make_genesis(CHAIN, [pub(COORD)], funds)),
        interval_ms=100,
        now_ms=0,
    )

    def lock(owner: nacl.signing.SigningKey, seq: int, label: bytes) -> bytes:
        return lock_job(producer, owner, seq, job_spec(owner, label), price=PRICE)

    theirs = [lock(ATTACKER, i, b"r10-2 %d" % i) for i in range(AHEAD + BLOCKS)]
    honest = [lock(h, 0, b"r10-2 honest") for h in HONEST]
    producer.produce()
    queue = queue_on(producer, PROVIDER)
    claim_by: dict[bytes, int] = {}
    asked_honest: list[bytes] = []
    transfers = 0

    def receipt_of_theirs(by: int) -> None:
        # the attacker's sealed receipt
        job = theirs[len(claim_by)]
        claim_by[job] = by
        queue.put(TxRequest(_claim(ATTACKER, job, by)))

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            for ahead in range(1, AHEAD + 1):  # claim_by chosen to put them first
                receipt_of_theirs(producer.state.height + ahead)
            for block in range(BLOCKS):
                h = producer.state.height
                # before each block, the attacker settles (to its own key) the escrow of
                # the claim due first: the settle goes ahead of the claim in the block
                live = [j for j, by in claim_by.items() if by > h]
                job = min(live, key=claim_by.__getitem__)
                payout = ledger.Payout(pub(SELF), PRICE, bid(SELF, PRICE, job=job))
                seq = producer.state.next_seq(pub(ATTACKER))  # its last may have failed
                settle = ledger.tx.make(
                    ATTACKER, CHAIN, seq, ledger.Settle(job, (payout,)), expiry_height=h + 1
                )
                with contextlib.suppress(ledger.LedgerError):
                    producer.submit(settle.raw)
                await trio.sleep(0.3)
                feed_block(producer, queue, pub(PROVIDER))
                receipt_of_theirs(producer.state.height + AHEAD)
                if block % 4 == 1 and len(asked_honest) < len(HONEST):
                    job_h = honest[len(asked_honest)]
                    requester = HONEST[len(asked_honest)]
                    asked_honest.append(job_h)
                    queue.put(TxRequest(_claim(requester, job_h, producer.state.height + 4)))
                if block % 4 == 3:
                    transfers += 1
                    queue.put(TxRequest(ledger.Transfer(pub(SELF), 1)))
                await trio.sleep(0.7)
            for _ in range(5):  # the last ones land
                feed_block(producer, queue, pub(PROVIDER))
                await trio.sleep(1)
            nursery.cancel_scope.cancel()
    state = producer.state
    landed = [
        j for j in asked_honest if (e := state.escrow(j)) is not None and pub(PROVIDER) in e.claimed
    ]
    assert landed == asked_honest  # before: none of them
    # and every transfer of its own landed (paid, besides: the attacker's escrows claimed
    # once it stopped settling them)
    theirs_paid = sum(e.paid_to(pub(PROVIDER)) for j in theirs if (e := state.escrow(j)))
    expected = 1_000 + PRICE * len(asked_honest) + theirs_paid - transfers
    assert state.balance(pub(PROVIDER)) == expected
