"""Block space and the pool are shared fairly at equal fee (specs/ledger.md, "Mempool"):
round robin by sender, then by bytes (tests/ledger/test_review5_pool.py: the round-5 case).

The attack (review round 4, R4-2): a block holds about 84 of the largest transactions (a
lock carrying a 64-input JobSpec, 11.6 KB). Forty funded accounts submitting 64 such
locks each at fee 0 (one micro-credit locked per lock, refunded at the escrow's expiry)
held every later transaction for 31 blocks when blocks were filled in arrival order: a
sealed claim, which must land within a few blocks of its receipt, was lost, and the
daemon's transactions (30 blocks of validity) expired in the pool again and again.
"""

from __future__ import annotations

import nacl.signing
import pytest

import ledger
from ledger import tx

from ..keys import key, pub
from .helpers import CHAIN, COORD, RECEIPT_KEY, award, receipt
from .test_block_budget import INTERVAL_MS, accounts, max_spec, small_spec

FLOODERS = 40
PRICE = 100


def flood_lock(owner: nacl.signing.SigningKey, seq: int, n: int, fee: int = 0) -> bytes:
    spec = max_spec(owner, n)
    return tx.lock(
        owner,
        CHAIN,
        seq,
        job_id=spec.id,
        amount=1,
        claim_height=1,
        escrow_expiry=120,
        max_per_payee=1,
        max_payees=1,
        spec=spec.raw,
        expiry_height=999,
        fee=fee,
    ).raw


def transfer(k: nacl.signing.SigningKey, seq: int, fee: int = 0) -> bytes:
    return tx.transfer(k, CHAIN, seq, to=pub(COORD), amount=1, fee=fee, expiry_height=999).raw


def commit_of(effects: list[ledger.Effect]) -> ledger.Commit:
    return next(e for e in effects if isinstance(e, ledger.Commit))


def test_a_fee_0_flood_of_maximal_locks_does_not_keep_a_sealed_claim_out_of_the_next_block() -> (
    None
):
    flooders = accounts("flood", FLOODERS)
    requester, provider = key("requester"), key("provider")
    funds = {pub(k): 64 for k in flooders} | {pub(requester): 10_000, pub(provider): 10}
    g = ledger.make_genesis(CHAIN, [pub(COORD)], funds)
    producer = ledger.Producer(
        COORD, ledger.State.from_genesis(g), interval_ms=INTERVAL_MS, now_ms=0
    )
    spec = small_spec(requester, 10_000)
    producer.submit(
        tx.lock(
            requester,
            CHAIN,
            0,
            job_id=spec.id,
            amount=PRICE,
            claim_height=500,  # plain receipts are claimable only late: the sealed one now
            escrow_expiry=600,
            max_per_payee=PRICE,
            max_payees=1,
            spec=spec.raw,
            expiry_height=999,
        ).raw
    )
    now = INTERVAL_MS
    assert commit_of(producer.tick(now)).state.escrow(spec.id) is not None

    n = 0
    for k in flooders:
        for seq in range(64):
            producer.submit(flood_lock(k, seq, n))
            n += 1
    height = producer.state.height
    claim_by = height + 4  # a sealed receipt's window (the requester's KEY_DUE_BLOCKS)
    sealed = receipt(requester, provider, spec.id, at_once=True, claim_by=claim_by)
    producer.submit(
        tx.claim(
            provider,
            CHAIN,
            0,
            job_id=spec.id,
            award=award(requester, provider, PRICE, spec.id),
            receipt=sealed,
            unseal_key=RECEIPT_KEY,
            expiry_height=claim_by,
        ).raw
    )
    now += INTERVAL_MS
    block = commit_of(producer.tick(now))
    assert producer.state.account(pub(provider)).balance == 10 + PRICE  # paid in this block
    assert len(block.block.message.txs) > 1  # beside flood locks, not instead of them

    # The flood itself drains at the byte budget's pace, all of it included.
    blocks = 1
    while len(producer.mempool):
        now += INTERVAL_MS
        producer.tick(now)
        blocks += 1
        assert blocks < 60, "the flood does not drain"
    assert all(producer.state.next_seq(pub(k)) == 64 for k in flooders)


def test_each_senders_first_transaction_comes_before_any_senders_second_at_equal_fee() -> None:
    big, small = key("big"), key("small")
    late = key("late")
    s = ledger.State.from_genesis(
        ledger.make_genesis(CHAIN, [pub(COORD)], {pub(k): 100 for k in (big, small, late)})
    )
    pool = ledger.Mempool(CHAIN)
    for seq in range(3):
        pool.add(flood_lock(big, seq, seq), s)
    for seq in range(3):
        pool.add(transfer(small, seq), s)
    pool.add(transfer(late, 0), s)
    order = [(v.sender, v.tx.seq) for v in pool.select(s, 10)]
    # round robin (round 5, R5-1): every sender's first, the smallest first (big's lock
    # last, though it came first), before any sender's second; ties by arrival
    assert order[:3] == [(pub(small), 0), (pub(late), 0), (pub(big), 0)]
    assert order[3:] == [(pub(small), 1), (pub(big), 1), (pub(small), 2), (pub(big), 2)]
    # a fee still comes first: a maximal lock paying 1 before a small transfer paying 0
    pool2 = ledger.Mempool(CHAIN)
    pool2.add(transfer(small, 0), s)
    pool2.add(flood_lock(big, 0, 0, fee=1), s)
    assert [(v.sender, v.tx.seq) for v in pool2.select(s, 10)] == [(pub(big), 0), (pub(small), 0)]


def test_a_block_passes_over_what_does_not_fit_and_takes_smaller_ones_behind_it() -> None:
    senders = accounts("fill", 100)
    x, y = key("x"), key("y")
    s = ledger.State.from_genesis(
        ledger.make_genesis(CHAIN, [pub(COORD)], {pub(k): 100 for k in [*senders, x, y]})
    )
    bigs = [flood_lock(k, 0, i) for i, k in enumerate(senders)]
    candidates = [
        ledger.verify_tx(raw, CHAIN)
        for raw in [*bigs, flood_lock(x, 0, 500), transfer(x, 1), transfer(y, 0)]
    ]
    produced = ledger.produce_block(s, COORD, candidates)
    included = {(v.sender, v.tx.seq) for v in produced.included}
    assert len(included) < 100  # the byte budget bit
    assert (pub(y), 0) in included  # taken past the locks that did not fit
    assert (pub(x), 0) not in included and (pub(x), 1) not in included  # x's order kept
    assert not produced.rejected
    ledger.apply_block(s, produced.block.raw)  # a replica takes it


def test_a_full_pool_at_equal_fee_evicts_the_biggest_holder_not_a_newcomer() -> None:
    hog, honest, second = key("hog"), key("honest"), key("second")
    s = ledger.State.from_genesis(
        ledger.make_genesis(CHAIN, [pub(COORD)], {pub(k): 100 for k in (hog, honest, second)})
    )
    pool = ledger.Mempool(CHAIN, max_size=8)
    for seq in range(8):
        pool.add(transfer(hog, seq), s)
    pool.add(transfer(honest, 0), s)  # evicts the hog's last, not refused
    assert [(v.sender, v.tx.seq) for v in pool.take_evicted()] == [(pub(hog), 7)]
    for seq in (1, 2):
        pool.add(transfer(honest, seq), s)  # each evicts the hog's last again
    pool.add(transfer(second, 0), s)
    assert len(pool) == 8 and len(pool.take_evicted()) == 3
    # hog 4, honest 3, second 1: no sender evicts to hold more than the one it would evict
    with pytest.raises(ledger.MempoolRejected, match="full"):
        pool.add(transfer(hog, 4), s)  # (nor its own last one)
    with pytest.raises(ledger.MempoolRejected, match="full"):
        pool.add(transfer(honest, 3), s)  # it would hold 4, as much as the hog
    # a higher fee evicts the lowest fee, whoever holds it
    pool.add(transfer(second, 1, fee=1), s)
    assert len(pool) == 8 and len(pool.take_evicted()) == 1


def test_the_pool_is_bounded_in_bytes_and_a_small_sender_still_gets_in() -> None:
    hog, honest = key("hog"), key("honest")
    s = ledger.State.from_genesis(
        ledger.make_genesis(CHAIN, [pub(COORD)], {pub(k): 100 for k in (hog, honest)})
    )
    one = len(flood_lock(hog, 0, 0))
    pool = ledger.Mempool(CHAIN, max_bytes=5 * one)
    for seq in range(5):
        pool.add(flood_lock(hog, seq, seq), s)
    with pytest.raises(ledger.MempoolRejected, match="full"):
        pool.add(flood_lock(hog, 5, 5), s)  # its own last is never evicted for its next
    pool.add(transfer(honest, 0), s)
    assert [(v.sender, v.tx.seq) for v in pool.take_evicted()] == [(pub(hog), 4)]
    assert sum(len(v.raw) for v in pool.select(s, 100)) <= 5 * one
