"""The transaction queue's claims, unsequenced (``ledger.UNSEQUENCED``): each is signed and
submitted on its own, a timeout is no refusal (the same bytes are sent again until the
chain or the coordinator decides), a drop reported from a block goes to its request alone,
at most ``ledger.MAX_AHEAD`` are unresolved at once, and a coordinator that lost its
mempool gets them again. Against a real mempool and producer."""

from __future__ import annotations

import trio
import trio.testing

import ledger
from ledger import tx
from node.ledger import TxQueue, TxRequest

from ...keys import key, pub
from ...ledger.helpers import CHAIN, COORD, bid, job_spec
from .drag import feed_block, lock_job, queue_on, sealed_claim

REQUESTER = key("claims requester")
PROVIDER = key("claims provider")
SYBIL = key("claims requester's own key")
PRICE = 100


def _setup(jobs: int) -> tuple[ledger.Producer, list[bytes]]:
    funds = {pub(REQUESTER): 10**6, pub(PROVIDER): 1_000}
    genesis = ledger.make_genesis(CHAIN, [pub(COORD)], funds)
    producer = ledger.Producer(COORD, ledger.State.from_genesis(genesis), interval_ms=100, now_ms=0)
    specs = [job_spec(REQUESTER, b"claims %d" % i) for i in range(jobs)]
    ids = []
    for i, spec in enumerate(specs):
        ids.append(lock_job(producer, REQUESTER, i, spec, price=PRICE))
        if i % ledger.MAX_AHEAD == ledger.MAX_AHEAD - 1:  # the mempool's bound per sender
            producer.produce()
    producer.produce()
    return producer, ids


def _request(job_id: bytes, refusals: list[str], seqs: list[int] | None = None) -> TxRequest:
    claim = sealed_claim(REQUESTER, PROVIDER, job_id, job_id, claim_by=50, price=PRICE)
    signed = (lambda seq, _id, _exp, _raw: seqs.append(seq)) if seqs is not None else None
    return TxRequest(claim, refusals.append, on_signed=signed)


def _claimed(producer: ledger.Producer, ids: list[bytes]) -> int:
    return sum(
        1 for j in ids if (e := producer.state.escrow(j)) is not None and pub(PROVIDER) in e.claimed
    )


async def test_a_claim_whose_submission_timed_out_is_sent_again_and_lands_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    producer, ids = _setup(2)
    answered = 0

    async def submit(raw: bytes) -> bytes:
        nonlocal answered
        await trio.sleep(0.01)
        tx_id = producer.submit(raw).id  # it arrives ...
        answered += 1
        if answered == 1:
            raise trio.TooSlowError  # ... but the answer is lost
        return tx_id

    queue = TxQueue(PROVIDER, lambda: producer.state, submit, chain_id=CHAIN, retry_s=(0.05, 0.2))
    refusals: list[str] = []
    seqs: list[int] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            for job in ids:
                queue.put(_request(job, refusals, seqs))
            queue.put(TxRequest(ledger.Transfer(pub(REQUESTER), 1), refusals.append))
            while queue.submitted < 3:
                await trio.sleep(0.05)
            feed_block(producer, queue, pub(PROVIDER))
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    assert refusals == [] and queue.unknown == 1
    assert seqs == [ledger.UNSEQUENCED, ledger.UNSEQUENCED]  # signed once each
    assert _claimed(producer, ids) == 2
    assert producer.state.next_seq(pub(PROVIDER)) == 1  # the transfer alone took a number
    assert producer.state.balance(pub(PROVIDER)) == 1_000 + 2 * PRICE - 1


async def test_a_claim_dropped_from_its_block_is_reported_to_it_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    producer, ids = _setup(2)
    queue = queue_on(producer, PROVIDER)
    voided: list[str] = []
    kept: list[str] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            queue.put(_request(ids[0], voided))
            queue.put(_request(ids[1], kept))
            queue.put(TxRequest(ledger.Transfer(pub(REQUESTER), 1), kept.append))
            while len(producer.mempool) < 3:
                await trio.sleep(0.01)
            # the requester closes the first escrow ahead of the claim, in its block
            settle = tx.settle(
                REQUESTER,
                CHAIN,
                producer.state.next_seq(pub(REQUESTER)),
                job_id=ids[0],
                payouts={pub(SYBIL): PRICE},
                bids={pub(SYBIL): bid(SYBIL, PRICE, job=ids[0])},
                expiry_height=producer.state.height + 5,
                fee=1,
            )
            producer.submit(settle.raw)
            feed_block(producer, queue, pub(PROVIDER))
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    assert len(voided) == 1 and "already closed" in voided[0]
    assert kept == [] and queue.dropped_reports == 1
    assert _claimed(producer, ids) == 1
    assert producer.state.next_seq(pub(PROVIDER)) == 1  # the transfer, in the same block


async def test_at_most_64_claims_are_unresolved_and_the_rest_wait_for_a_block(
    autojump_clock: trio.testing.MockClock,
) -> None:
    producer, ids = _setup(ledger.MAX_AHEAD + 6)

    async def submit(raw: bytes) -> bytes:
        await trio.sleep(0.01)
        return producer.submit(raw).id

    queue = TxQueue(PROVIDER, lambda: producer.state, submit, chain_id=CHAIN)
    refusals: list[str] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            for job in ids:
                queue.put(_request(job, refusals))
            await trio.sleep(2)
            assert len(producer.mempool) == ledger.MAX_AHEAD and queue.held_back >= 6
            feed_block(producer, queue, pub(PROVIDER))
            await trio.sleep(2)
            feed_block(producer, queue, pub(PROVIDER))
            nursery.cancel_scope.cancel()
    assert refusals == []  # none refused by the mempool's bound
    assert _claimed(producer, ids) == len(ids)


async def test_a_coordinator_that_lost_its_mempool_gets_our_claims_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    producer, ids = _setup(3)
    coordinator = [producer]

    async def submit(raw: bytes) -> bytes:
        await trio.sleep(0.01)
        return coordinator[0].submit(raw).id

    queue = TxQueue(
        PROVIDER, lambda: coordinator[0].state, submit, chain_id=CHAIN, retry_s=(0.05, 0.2)
    )
    refusals: list[str] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            for job in ids:
                queue.put(_request(job, refusals))
            while len(producer.mempool) < 3:
                await trio.sleep(0.01)
            # a restart: the same chain, an empty mempool
            coordinator[0] = ledger.Producer(COORD, producer.state, interval_ms=100, now_ms=0)
            queue.resend_pending()
            await trio.sleep(1)
            assert len(coordinator[0].mempool) == 3 and queue.resent == 3
            feed_block(coordinator[0], queue, pub(PROVIDER))
            nursery.cancel_scope.cancel()
    assert refusals == []
    assert _claimed(coordinator[0], ids) == 3


async def test_claims_whose_outcome_is_unknown_hold_no_place_in_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Review round 14, R14-1: each claim whose first submission timed out kept its place
    in the window (8) while its retries asked for another: eight at once (a requester
    chooses when its receipts come) held every place for good, and no lock, settle or
    transfer of ours was sent again until a restart."""
    producer, ids = _setup(12)
    down = True

    async def submit(raw: bytes) -> bytes:
        await trio.sleep(0.01)
        if down:
            raise trio.TooSlowError  # the coordinator does not answer (a restart)
        return producer.submit(raw).id

    queue = TxQueue(PROVIDER, lambda: producer.state, submit, chain_id=CHAIN, retry_s=(0.05, 0.2))
    refusals: list[str] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            for job in ids:
                queue.put(_request(job, refusals))
            await trio.sleep(0.5)
            assert queue.unknown == len(ids)
            down = False
            queue.put(TxRequest(ledger.Transfer(pub(REQUESTER), 1), refusals.append))
            for _ in range(3):
                await trio.sleep(1)
                feed_block(producer, queue, pub(PROVIDER))
            nursery.cancel_scope.cancel()
    assert refusals == []
    assert _claimed(producer, ids) == len(ids)
    assert producer.state.next_seq(pub(PROVIDER)) == 1  # the transfer went through


async def test_a_request_s_fee_is_the_least_it_pays(
    autojump_clock: trio.testing.MockClock,
) -> None:
    producer, ids = _setup(1)
    fees: list[int] = []

    async def submit(raw: bytes) -> bytes:
        fees.append(ledger.verify_tx(raw, CHAIN).tx.fee)
        return producer.submit(raw).id

    queue = TxQueue(PROVIDER, lambda: producer.state, submit, chain_id=CHAIN, fee=2)
    claim = sealed_claim(REQUESTER, PROVIDER, ids[0], ids[0], claim_by=50, price=PRICE)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            queue.put(TxRequest(claim, fee=9))  # raised: the claim's payout pays it
            queue.put(TxRequest(ledger.Transfer(pub(REQUESTER), 1), fee=1))  # the queue's 2
            while len(fees) < 2:
                await trio.sleep(0.01)
            feed_block(producer, queue, pub(PROVIDER))
            nursery.cancel_scope.cancel()
    assert sorted(fees) == [2, 9]
    assert producer.state.balance(pub(PROVIDER)) == 1_000 + PRICE - 9 - 1 - 2


async def test_a_claim_pays_the_node_s_fee_for_each_of_its_signature_checks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Blocks take transactions by fee per share of their budget (review round 70, F1): at
    # one flat fee any sender's transfers (1 check) came before our claims (3), which must
    # land by their receipt's claim_by.
    producer, ids = _setup(1)
    queue = TxQueue(PROVIDER, lambda: producer.state, producer.submit, chain_id=CHAIN, fee=2)
    claim = sealed_claim(REQUESTER, PROVIDER, ids[0], ids[0], claim_by=50, price=PRICE)
    transfer = ledger.Transfer(pub(REQUESTER), 1)
    assert queue.fee(claim) == 2 * ledger.signature_checks(claim) == 6
    assert queue.fee(transfer) == 2
    # up to a tenth of the payout (which pays it), unless the flat fee is more (round 72)
    cheap = sealed_claim(REQUESTER, PROVIDER, ids[0], ids[0], claim_by=50, price=40)
    assert queue.fee(cheap) == 4
    assert queue.fee(sealed_claim(REQUESTER, PROVIDER, ids[0], ids[0], claim_by=50, price=9)) == 2
    transfer_tx = tx.transfer(
        PROVIDER, CHAIN, 5, to=pub(REQUESTER), amount=1, expiry_height=40, fee=2
    )
    claim_tx = tx.make(PROVIDER, CHAIN, ledger.UNSEQUENCED, claim, expiry_height=40, fee=6)
    assert ledger.fee_density(6, claim_tx.raw, claim) >= ledger.fee_density(
        2, transfer_tx.raw, transfer
    )
