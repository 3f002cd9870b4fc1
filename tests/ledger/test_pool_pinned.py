"""Mempool rules the mutation run of this session's tree (scripts/mutate.py) found unpinned,
after claims became unsequenced and slash evidence was tightened: each transaction passes
every other check, so the one pinned decides."""

from __future__ import annotations

import pytest

import ledger
from ledger import tx

from ..keys import key, pub
from .helpers import (
    ALICE,
    BOB,
    CAROL,
    CHAIN,
    COORD,
    JOB,
    RECEIPT_KEY,
    Chain,
    award,
    job_spec,
    receipt,
    result,
)

DAVE = key("dave")


def _claim(
    c: Chain,
    who: object,
    *,
    job: bytes = JOB,
    price: int = 100,
    sealed_until: int | None = None,
    fee: int = 0,
    numbered: bool = False,
) -> bytes:
    """``who``'s claim with ALICE's Award and Receipt: unsequenced, or (``numbered``) with
    sequence number 0, as an unfunded sender's first transaction."""
    assert isinstance(who, type(ALICE))
    return tx.claim(
        who,
        CHAIN,
        0 if numbered else ledger.UNSEQUENCED,
        job_id=job,
        award=award(ALICE, who, price, job=job),
        receipt=receipt(
            ALICE,
            who,
            job=job,
            at_once=sealed_until is not None,
            claim_by=sealed_until or 1_000,
        ),
        unseal_key=RECEIPT_KEY,
        expiry_height=c.height + 5,
        fee=fee,
    ).raw


def test_an_unfunded_claim_priced_0_is_refused_before_its_signatures() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=1, expire_at=20, per_payee=100, payees=2))
    fresh = key("fresh-zero-price")
    # an Award priced 0 is malformed as a message (round 29, K1)
    with pytest.raises(ledger.MempoolRejected, match="signed Award and Receipt") as refused:
        ledger.Mempool(CHAIN).add(_claim(c, fresh, price=0, numbered=True), c.state)
    assert not isinstance(refused.value, ledger.MalformedTransaction)  # the pool's refusal


def test_an_unfunded_sealed_claim_is_admitted_up_to_its_claim_by_block() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=15, expire_at=20, per_payee=100, payees=2))
    pool = ledger.Mempool(CHAIN)
    nxt = c.height + 1
    pool.add(_claim(c, key("fresh-on-time"), sealed_until=nxt, numbered=True), c.state)
    with pytest.raises(ledger.MempoolRejected, match="claim_by"):
        pool.add(_claim(c, key("fresh-late"), sealed_until=nxt - 1, numbered=True), c.state)


def test_an_unfunded_claim_is_refused_from_the_block_at_the_escrows_expiry() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=1, expire_at=c.height + 3, per_payee=100, payees=2))
    pool = ledger.Mempool(CHAIN)
    pool.add(_claim(c, key("fresh-before"), numbered=True), c.state)  # next block: before it
    c.ok()  # the next block is the expiry's
    with pytest.raises(ledger.MempoolRejected, match="escrow expired"):
        pool.add(_claim(c, key("fresh-at-expiry"), numbered=True), c.state)


def test_a_sender_has_at_most_max_ahead_unsequenced_claims_pending() -> None:
    c = Chain.new()
    jobs = [job_spec(ALICE, b"claims-%d" % i) for i in range(3)]
    c.ok(
        *[
            c.lock(ALICE, 300, claim_at=1, expire_at=20, per_payee=100, job=s.id, spec=s.raw)
            for s in jobs[:1]
        ]
    )
    for s in jobs[1:]:
        c.ok(c.lock(ALICE, 300, claim_at=1, expire_at=20, per_payee=100, job=s.id, spec=s.raw))
    pool = ledger.Mempool(CHAIN, max_ahead=2)
    for s in jobs[:2]:
        pool.add(_claim(c, BOB, job=s.id), c.state)
    with pytest.raises(ledger.MempoolRejected, match="2 claims pending"):
        pool.add(_claim(c, BOB, job=jobs[2].id), c.state)


def test_removing_a_replaced_claim_leaves_its_replacement_pending() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=1, expire_at=20, per_payee=100, payees=2))
    pool = ledger.Mempool(CHAIN)
    first = ledger.verify_tx(_claim(c, BOB, fee=0), CHAIN)
    pool.add_verified(first, c.state)
    bumped = pool.add(_claim(c, BOB, fee=1), c.state)
    pool.remove(first)  # e.g. a block that refused the first bytes
    assert bumped.id in pool and len(pool) == 1
    assert [v.id for v in pool.select(c.state, 10)] == [bumped.id]


def test_removing_a_replaced_numbered_transaction_leaves_its_replacement_pending() -> None:
    c = Chain.new()
    pool = ledger.Mempool(CHAIN)
    first = ledger.verify_tx(c.transfer(ALICE, CAROL, 5).raw, CHAIN)
    pool.add_verified(first, c.state)
    bumped = pool.add(c.transfer(ALICE, CAROL, 5, fee=1).raw, c.state)
    pool.remove(first)
    assert bumped.id in pool and len(pool) == 1
    assert [v.id for v in pool.select(c.state, 10)] == [bumped.id]


def test_the_same_transaction_admitted_twice_through_add_verified_is_refused() -> None:
    c = Chain.new()
    pool = ledger.Mempool(CHAIN)
    vtx = ledger.verify_tx(c.transfer(ALICE, CAROL, 5).raw, CHAIN)
    pool.add_verified(vtx, c.state)
    with pytest.raises(ledger.MempoolRejected, match="already in the mempool"):
        pool.add_verified(vtx, c.state)
    assert len(pool) == 1


def _settled() -> tuple[Chain, list[bytes]]:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100, payees=3))
    right = b"\x05" * 32
    return c, [
        result(CAROL, b"good", commitment=right, replica=1),
        result(DAVE, b"good", commitment=right, replica=2),
    ]


def _slash(
    c: Chain, reason: str, evidence: list[bytes], fee: int = 0, seq: int | None = None
) -> bytes:
    return tx.slash(
        COORD,
        CHAIN,
        c.seq(COORD) if seq is None else seq,
        offender=pub(BOB),
        amount=100,
        reason=reason,
        evidence=evidence,
        expiry_height=c.height + 5,
        fee=fee,
    ).raw


@pytest.mark.parametrize(
    "case",
    ["three Results", "two replicas", "one commitment"],
)
def test_conflicting_results_must_be_two_outputs_of_one_replica(case: str) -> None:
    c, _ = _settled()
    x = b"\x01" * 32
    evidence = {
        "three Results": [result(BOB, b"a"), result(BOB, b"b"), result(BOB, b"c")],
        "two replicas": [result(BOB, b"a"), result(BOB, b"b", replica=1)],
        "one commitment": [result(BOB, b"a", commitment=x), result(BOB, b"b", commitment=x)],
    }[case]
    with pytest.raises(ledger.MalformedTransaction, match="conflicting_results needs two"):
        ledger.Mempool(CHAIN).add(_slash(c, "conflicting_results", evidence), c.state)
    fine = [result(BOB, b"a"), result(BOB, b"b")]
    ledger.Mempool(CHAIN).add(_slash(c, "conflicting_results", fine), c.state)


def test_failed_verification_needs_two_agreeing_others_at_admission() -> None:
    c, majority = _settled()
    bobs = result(BOB, b"bad")
    with pytest.raises(ledger.MalformedTransaction):
        ledger.Mempool(CHAIN).add(_slash(c, "failed_verification", [bobs, majority[0]]), c.state)


def test_a_fee_bump_of_a_pending_slash_replaces_it() -> None:
    c, _ = _settled()
    evidence = [result(BOB, b"a"), result(BOB, b"b")]
    pool = ledger.Mempool(CHAIN)
    seq = c.seq(COORD)
    pool.add(_slash(c, "conflicting_results", evidence, seq=seq), c.state)
    bumped = pool.add(_slash(c, "conflicting_results", evidence, fee=1, seq=seq), c.state)
    assert bumped.id in pool and len(pool) == 1


def test_a_full_pool_makes_room_from_the_largest_share_it_holds_now() -> None:
    """The share holding the most bytes is the one that holds them now: a sender that held
    more and whose transactions left the pool is no candidate (`biggest_sender` drops
    its stale heap items; taking one crashed the admission: mutation run)."""
    c = Chain.new()
    pool = ledger.Mempool(CHAIN, max_size=4)

    def transfer(frm: object, seq: int) -> bytes:
        assert isinstance(frm, type(ALICE))
        return tx.transfer(
            frm, CHAIN, seq, to=pub(DAVE), amount=1, fee=0, expiry_height=c.height + 10
        ).raw

    carols = [pool.add(transfer(CAROL, s), c.state) for s in range(4)]
    assert pool.remove(carols[0]) == carols[1:]  # CAROL held the most; now nothing
    bobs = [pool.add(transfer(BOB, s), c.state) for s in range(3)]
    pool.add(transfer(ALICE, 0), c.state)
    assert len(pool) == 4  # full
    alices = pool.add(transfer(ALICE, 1), c.state)  # same fee: room from the largest share
    assert alices.id in pool
    assert pool.take_evicted() == [bobs[-1]]


def test_a_full_pool_whose_largest_share_is_the_senders_own_claims_refuses_it() -> None:
    """BOB's claims on ALICE's escrows are ALICE's share; a full pool never evicts BOB's
    own transactions for BOB's next one: refused as full (it crashed the admission with
    the check `if not lasts` off: mutation run)."""
    c = Chain.new()
    jobs = [job_spec(ALICE, b"own-claims-%d" % i) for i in range(3)]
    for s in jobs:
        c.ok(c.lock(ALICE, 300, claim_at=1, expire_at=20, per_payee=100, job=s.id, spec=s.raw))
    pool = ledger.Mempool(CHAIN, max_size=3, max_ahead=3)
    for s in jobs:
        pool.add(_claim(c, BOB, job=s.id), c.state)
    with pytest.raises(ledger.MempoolRejected, match="the mempool is full"):
        pool.add(c.transfer(BOB, CAROL, 5).raw, c.state)
    assert len(pool) == 3 and pool.take_evicted() == []


def test_a_coordinators_claim_is_funded_as_any_providers() -> None:
    """A genesis coordinator is funded for its own transactions, not for a claim whose fee
    its balance (0 here) and the payout cannot pay: the block would refuse it."""
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=15, expire_at=20, per_payee=100, payees=2))
    pool = ledger.Mempool(CHAIN)
    nxt = c.height + 1
    with pytest.raises(ledger.MempoolRejected, match="cannot pay the fee 150"):
        pool.add(_claim(c, COORD, sealed_until=nxt, fee=150), c.state)
    pool.add(_claim(c, COORD, sealed_until=nxt, fee=100), c.state)
    assert len(pool) == 1
