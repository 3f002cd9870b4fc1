"""Each transaction kind's rules, one behaviour per test."""

from __future__ import annotations

from dataclasses import replace

import nacl.signing
import pytest

import ledger
import protocol
from ledger import EscrowStatus, tx

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
    bid,
    job_spec,
    receipt,
    result,
    settle,
)


def test_transfer_moves_credits_and_charges_fee() -> None:
    c = Chain.new(min_fee=5)
    c.ok(c.transfer(ALICE, BOB, 100, fee=5))
    assert c.state.balance(pub(ALICE)) == 1_000_000 - 105
    assert c.state.balance(pub(BOB)) == 1_000_100
    assert c.state.fees == 5
    assert c.state.next_seq(pub(ALICE)) == 1


def test_transfer_rejects_overdraft_fee_below_minimum_and_replay() -> None:
    c = Chain.new(min_fee=5)
    c.rejects(c.transfer(ALICE, BOB, 1_000_000, fee=5), ledger.InsufficientFunds)
    c.rejects(c.transfer(ALICE, BOB, 1, fee=4), ledger.FeeTooLow)
    first = c.transfer(ALICE, BOB, 1, fee=5)
    c.ok(first)
    assert "replay" in c.rejects(first, ledger.SequenceError)
    ahead = tx.transfer(ALICE, CHAIN, 5, to=pub(BOB), amount=1, fee=5, expiry_height=99)
    c.rejects(ahead, ledger.SequenceError)


def test_the_whole_balance_after_the_fee_can_be_spent_and_not_a_credit_more() -> None:
    c = Chain.new(min_fee=5)
    c.rejects(c.transfer(ALICE, BOB, 1_000_000 - 4, fee=5), ledger.InsufficientFunds)
    c.ok(c.transfer(ALICE, BOB, 1_000_000 - 5, fee=5))
    assert c.state.balance(pub(ALICE)) == 0


def test_a_fee_above_the_balance_is_refused_whatever_the_transaction() -> None:
    # a refund spends nothing but its fee: the fee check alone must refuse it
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=3, expire_at=5, per_payee=100))
    c.until(5)
    c.ok(c.transfer(ALICE, BOB, 1_000_000 - 300))
    assert c.state.balance(pub(ALICE)) == 0
    broke = tx.refund(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, fee=1, expiry_height=c.height + 5)
    c.rejects(broke, ledger.InsufficientFunds)
    assert c.state.escrow(JOB) is not None and c.state.escrow(JOB).is_open  # type: ignore[union-attr]


def test_minting_reaches_the_maximum_supply_and_not_a_credit_past_it() -> None:
    c = Chain.new()
    room = ledger.MAX_SUPPLY - c.state.minted
    over = tx.mint(COORD, CHAIN, 0, to=pub(BOB), amount=room + 1, expiry_height=9)
    c.rejects(over, ledger.NotAuthorized)
    c.ok(tx.mint(COORD, CHAIN, 0, to=pub(BOB), amount=room, expiry_height=9))
    assert c.state.minted == ledger.MAX_SUPPLY


def test_an_escrow_must_expire_after_the_block_that_locks_it() -> None:
    c = Chain.new()
    c.until(3)
    # applied in block 4: an expiry of 4 is already past, 5 is the first allowed
    c.rejects(c.lock(ALICE, 300, claim_at=1, expire_at=4, per_payee=100), ledger.EscrowError)
    c.ok(c.lock(ALICE, 300, claim_at=1, expire_at=6, per_payee=100))


def test_expired_and_other_chain_transactions_are_rejected() -> None:
    c = Chain.new()
    c.until(3)
    old = tx.transfer(ALICE, CHAIN, 0, to=pub(BOB), amount=1, expiry_height=3)
    c.rejects(old, ledger.ExpiredTransaction)
    other = tx.transfer(ALICE, "other-chain", 0, to=pub(BOB), amount=1, expiry_height=99)
    with pytest.raises(ledger.MalformedTransaction, match="chain"):
        ledger.verify_tx(other.raw, CHAIN)


def test_only_coordinators_mint() -> None:
    c = Chain.new()
    c.ok(tx.mint(COORD, CHAIN, 0, to=pub(CAROL), amount=7, expiry_height=9))
    assert c.state.minted == 3_000_007
    c.rejects(
        tx.mint(ALICE, CHAIN, 0, to=pub(ALICE), amount=7, expiry_height=9), ledger.NotAuthorized
    )
    big = tx.mint(COORD, CHAIN, 1, to=pub(CAROL), amount=ledger.MAX_SUPPLY, expiry_height=9)
    c.rejects(big, ledger.NotAuthorized)


def test_settle_pays_providers_refunds_rest_and_closes() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))
    c.ok(
        settle(
            ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 100, pub(CAROL): 80}, expiry_height=20
        )
    )
    e = c.state.escrow(JOB)
    assert e is not None and e.status == EscrowStatus.SETTLED and e.remaining == 0
    assert c.state.balance(pub(ALICE)) == 1_000_000 - 180
    assert c.state.balance(pub(BOB)) == 1_000_100
    again = settle(ALICE, CHAIN, 2, job_id=JOB, payouts={}, expiry_height=20)
    c.rejects(again, ledger.EscrowError)
    c.until(9)
    c.rejects(tx.refund(ALICE, CHAIN, 2, job_id=JOB, expiry_height=20), ledger.EscrowError)


def test_settle_limits() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100, payees=1))
    over = settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 101}, expiry_height=20)
    c.rejects(over, ledger.EscrowError)
    two = settle(
        ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 1, pub(CAROL): 1}, expiry_height=20
    )
    c.rejects(two, ledger.EscrowError)
    selfpay = settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(ALICE): 1}, expiry_height=20)
    c.rejects(selfpay, ledger.NotAuthorized)
    c.rejects(settle(BOB, CHAIN, 0, job_id=JOB, payouts={}, expiry_height=20), ledger.NotAuthorized)


def test_lock_rules() -> None:
    c = Chain.new()
    c.rejects(c.lock(ALICE, 300, claim_at=5, expire_at=1, per_payee=100), ledger.EscrowError)
    c.rejects(c.lock(ALICE, 300, claim_at=5, expire_at=5, per_payee=100), ledger.EscrowError)
    c.rejects(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=301), ledger.EscrowError)
    c.rejects(
        c.lock(ALICE, 2_000_000, claim_at=5, expire_at=9, per_payee=1), ledger.InsufficientFunds
    )
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))
    c.rejects(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100), ledger.EscrowError)


def test_lock_front_running_another_requesters_job_is_refused() -> None:
    # Attack 7: BOB sees ALICE's JobSpec on a job topic and locks 1 micro-credit under its
    # id first. The lock must carry the job's signed JobSpec, whose signer is the sender.
    c = Chain.new()
    alices = job_spec(ALICE).raw
    stolen = c.lock(BOB, 1, claim_at=5, expire_at=9, per_payee=1, spec=alices)
    c.rejects(stolen, ledger.NotAuthorized)
    # A JobSpec of BOB's own with ALICE's job id named: the id is the spec's, not the payload's.
    bobs = job_spec(BOB).raw
    c.rejects(c.lock(BOB, 1, claim_at=5, expire_at=9, per_payee=1, spec=bobs), ledger.BadEvidence)
    c.rejects(
        c.lock(BOB, 1, claim_at=5, expire_at=9, per_payee=1, spec=b"junk"), ledger.BadEvidence
    )
    assert c.state.escrow(JOB) is None
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))
    escrow = c.state.escrow(JOB)
    assert escrow is not None and escrow.owner == pub(ALICE) and escrow.locked == 300
    # BOB's own job locks fine under its own id.
    c.ok(c.lock(BOB, 1, claim_at=5, expire_at=9, per_payee=1, job=job_spec(BOB).id, spec=bobs))


def test_refund_only_after_expiry_and_only_once() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=3, expire_at=6, per_payee=100))
    c.rejects(tx.refund(ALICE, CHAIN, 1, job_id=JOB, expiry_height=20), ledger.EscrowError)
    c.until(5)
    c.rejects(tx.refund(BOB, CHAIN, 0, job_id=JOB, expiry_height=20), ledger.NotAuthorized)
    c.ok(tx.refund(ALICE, CHAIN, 1, job_id=JOB, expiry_height=20))  # block 6
    assert c.state.balance(pub(ALICE)) == 1_000_000
    c.rejects(tx.refund(ALICE, CHAIN, 2, job_id=JOB, expiry_height=20), ledger.EscrowError)


def claim_tx(c: Chain, provider=BOB, requester=ALICE, price=100, **kw):  # type: ignore[no-untyped-def]
    return tx.claim(
        provider,
        CHAIN,
        c.seq(provider),
        job_id=kw.get("job", JOB),
        award=kw.get("award_raw") or award(requester, provider, price),
        receipt=kw.get("receipt_raw") or receipt(requester, provider),
        unseal_key=RECEIPT_KEY,
        expiry_height=c.height + 10,
    )


def test_settle_never_pays_a_provider_that_claimed_again() -> None:
    # Attack 13: BOB claims its 100 with the receipt; ALICE, lagging, settles paying BOB
    # (and CAROL) too. BOB is paid once, CAROL once, the rest goes back to ALICE.
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=2, expire_at=9, per_payee=150, payees=3))
    c.ok(claim_tx(c, price=100))  # block 2
    assert c.state.balance(pub(BOB)) == 1_000_100
    c.ok(
        settle(
            ALICE,
            CHAIN,
            c.seq(ALICE),
            job_id=JOB,
            payouts={pub(BOB): 150, pub(CAROL): 100},
            expiry_height=20,
        )
    )
    s = c.state
    assert s.balance(pub(BOB)) == 1_000_100
    assert s.balance(pub(CAROL)) == 1_000_100
    assert s.balance(pub(ALICE)) == 1_000_000 - 200
    escrow = s.escrow(JOB)
    assert escrow is not None and dict(escrow.paid) == {pub(BOB): 100, pub(CAROL): 100}
    # And a claim after the settle is refused: the escrow is closed.
    c.rejects(claim_tx(c, provider=CAROL, price=100), ledger.EscrowError)
    assert c.state.balance(pub(CAROL)) == 1_000_100


def test_no_short_settle_while_an_awarded_providers_claim_is_possible() -> None:
    # Attack 10: the owner, holding the output, settles paying nobody before the claim
    # window opens. A settle before expiry must pay the job's redundancy (its JobSpec's).
    c = Chain.new()
    spec = job_spec(ALICE, b"redundant-2")
    two = replace(spec.message, redundancy=2)
    signed = protocol.sign(two, ALICE, CHAIN)
    job = signed.id
    c.ok(c.lock(ALICE, 300, claim_at=4, expire_at=8, per_payee=100, job=job, spec=signed.raw))
    empty = settle(ALICE, CHAIN, c.seq(ALICE), job_id=job, payouts={}, expiry_height=20)
    c.rejects(empty, ledger.EscrowError)
    one = {pub(CAROL): 100}
    short = settle(ALICE, CHAIN, c.seq(ALICE), job_id=job, payouts=one, expiry_height=20)
    c.rejects(short, ledger.EscrowError)
    c.until(4)
    c.ok(
        claim_tx(
            c,
            price=100,
            job=job,
            award_raw=award(ALICE, BOB, 100, job=job),
            receipt_raw=receipt(ALICE, BOB, job=job),
        )
    )  # block 5
    assert c.state.balance(pub(BOB)) == 1_000_100
    # BOB's claim counts: a settle paying CAROL now covers both replicas.
    full = settle(ALICE, CHAIN, c.seq(ALICE), job_id=job, payouts=one, expiry_height=20)
    c.ok(full)
    assert c.state.balance(pub(CAROL)) == 1_000_100
    assert c.state.balance(pub(ALICE)) == 1_000_000 - 200


def test_short_settle_is_allowed_from_expiry_on() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=2, expire_at=4, per_payee=100))
    c.rejects(settle(ALICE, CHAIN, 1, job_id=JOB, payouts={}, expiry_height=20), ledger.EscrowError)
    c.until(3)
    c.ok(settle(ALICE, CHAIN, 1, job_id=JOB, payouts={}, expiry_height=20))  # block 4
    assert c.state.balance(pub(ALICE)) == 1_000_000


def test_settle_pays_only_providers_that_bid_at_their_price() -> None:
    # Attack 11: settle paid (and gave reputation to) any account, unasked; the payer could
    # then attest about it. A payout carries the payee's own signed Bid for the job and pays
    # exactly its price.
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))
    rep = c.state.reputation(pub(BOB))

    def pay(bid_raw: bytes, amount: int = 100) -> protocol.Signed[protocol.Transaction]:
        return tx.settle(
            ALICE,
            CHAIN,
            c.seq(ALICE),
            job_id=JOB,
            payouts={pub(BOB): amount},
            bids={pub(BOB): bid_raw},
            expiry_height=20,
        )

    c.rejects(pay(b""), ledger.BadEvidence)  # no bid: BOB never offered
    c.rejects(pay(bid(CAROL, 100)), ledger.BadEvidence)  # someone else's bid
    c.rejects(pay(bid(BOB, 100, job=b"\x07" * 32)), ledger.BadEvidence)  # another job's
    c.rejects(pay(bid(BOB, 100), amount=1), ledger.BadEvidence)  # not its price
    assert c.state.reputation(pub(BOB)) == rep and c.state.balance(pub(BOB)) == 1_000_000
    c.ok(pay(bid(BOB, 100)))
    assert c.state.balance(pub(BOB)) == 1_000_100
    assert c.state.reputation(pub(BOB)) > rep


def test_claim_pays_awarded_price_once_in_window() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=4, expire_at=8, per_payee=100))
    c.rejects(claim_tx(c), ledger.EscrowError)  # block 2: before claim height
    c.until(3)
    c.ok(claim_tx(c, price=90))  # block 4
    assert c.state.balance(pub(BOB)) == 1_000_090
    e = c.state.escrow(JOB)
    assert e is not None and e.remaining == 210 and e.status == EscrowStatus.OPEN
    assert "already claimed" in c.rejects(claim_tx(c, price=10), ledger.EscrowError)
    # the owner settles the rest later; the claimed provider can still be paid up to the cap
    c.ok(settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(CAROL): 50}, expiry_height=20))
    assert c.state.balance(pub(ALICE)) == 1_000_000 - 140


def test_claim_abuse_is_refused() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=1, expire_at=6, per_payee=100))
    # the award names Bob: Carol cannot use it
    stolen = tx.claim(
        CAROL,
        CHAIN,
        0,
        job_id=JOB,
        award=award(ALICE, BOB, 100),
        receipt=receipt(ALICE, BOB),
        unseal_key=RECEIPT_KEY,
        expiry_height=20,
    )
    c.rejects(stolen, ledger.BadEvidence)
    # an award Bob signed himself is not the requester's
    c.rejects(claim_tx(c, award_raw=award(BOB, BOB, 100)), ledger.BadEvidence)
    # above the escrow's per-payee limit
    c.rejects(claim_tx(c, price=101), ledger.EscrowError)
    # receipt for another replica
    c.rejects(claim_tx(c, receipt_raw=receipt(ALICE, BOB, replica=1)), ledger.BadEvidence)
    # the owner's award and receipt, but one of them for another job of the owner's
    other_job = b"\x07" * 32
    for evidence in (
        {"receipt_raw": receipt(ALICE, BOB, job=other_job)},
        {"award_raw": award(ALICE, BOB, 100, job=other_job)},
    ):
        assert "for the claimed job" in c.rejects(claim_tx(c, **evidence), ledger.BadEvidence)
    # evidence from another chain
    other = award(ALICE, BOB, 100, chain="other-chain")
    c.rejects(claim_tx(c, award_raw=other), ledger.BadEvidence)
    # garbage evidence
    c.rejects(claim_tx(c, receipt_raw=b"\x90"), ledger.BadEvidence)
    c.until(6)
    c.rejects(claim_tx(c), ledger.EscrowError)  # expired: no more claims


def test_claim_after_refund_is_refused() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=1, expire_at=3, per_payee=100))
    c.until(2)
    c.ok(tx.refund(ALICE, CHAIN, 1, job_id=JOB, expiry_height=20))
    c.rejects(claim_tx(c), ledger.EscrowError)


def test_stake_unstake_after_delay() -> None:
    c = Chain.new(unbonding_delay=3)
    c.ok(tx.stake(BOB, CHAIN, 0, amount=500, expiry_height=9))
    c.rejects(tx.unstake(BOB, CHAIN, 1, amount=501, expiry_height=9), ledger.InsufficientFunds)
    c.ok(tx.unstake(BOB, CHAIN, 1, amount=200, expiry_height=9))  # block 3, release at 6
    a = c.state.account(pub(BOB))
    assert (a.stake, a.unbonding, a.balance) == (300, ((6, 200),), 999_500)
    c.until(5)
    assert c.state.balance(pub(BOB)) == 999_500
    c.ok()
    a = c.state.account(pub(BOB))
    assert (a.unbonding, a.balance) == ((), 999_700)


def test_slash_needs_coordinator_and_evidence() -> None:
    c = Chain.new()
    c.ok(tx.stake(BOB, CHAIN, 0, amount=500, expiry_height=9))
    r1, r2 = result(BOB, b"one"), result(BOB, b"two")
    c.rejects(  # no escrow for the evidence's job
        tx.slash(
            COORD,
            CHAIN,
            0,
            offender=pub(BOB),
            amount=100,
            reason="conflicting_results",
            evidence=[r1, r2],
            expiry_height=9,
        ),
        ledger.BadEvidence,
    )
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))

    def slash_bob(
        signer: nacl.signing.SigningKey, seq: int, amount: int, reason: str, evidence: list[bytes]
    ) -> protocol.Signed[protocol.Transaction]:
        return tx.slash(
            signer,
            CHAIN,
            seq,
            offender=pub(BOB),
            amount=amount,
            reason=reason,
            evidence=evidence,
            expiry_height=9,
        )

    c.rejects(slash_bob(ALICE, 1, 100, "conflicting_results", [r1, r2]), ledger.NotAuthorized)
    c.rejects(slash_bob(COORD, 0, 100, "conflicting_results", [r1, r1]), ledger.BadEvidence)
    carols = [result(CAROL, b"x")]
    c.rejects(slash_bob(COORD, 0, 100, "failed_verification", carols), ledger.BadEvidence)
    # (a slash over what BOB holds takes what is left: test_rules_pinned, R9-3)
    before = c.state.reputation(pub(BOB))
    c.ok(slash_bob(COORD, 0, 100, "conflicting_results", [r1, r2]))
    assert c.state.account(pub(BOB)).stake == 400
    assert c.state.burned == 100
    assert c.state.reputation(pub(BOB)) < before
    again = slash_bob(COORD, 1, 100, "conflicting_results", [r2, r1])
    c.rejects(again, ledger.EscrowError)  # the job's evidence already slashed BOB


def test_slash_for_failed_verification_needs_a_paid_majority_and_is_used_once() -> None:
    # Attack 3: a correct Result reported (four times, by anyone) must not take the stake.
    # Evidence: the offender's Result, outvoted by the agreeing Results of two providers the
    # job's escrow paid; each job's evidence slashes a provider once.
    c = Chain.new()
    dave = key("dave")
    c.ok(
        tx.stake(BOB, CHAIN, 0, amount=500, expiry_height=9),
        tx.stake(CAROL, CHAIN, 0, amount=200, expiry_height=9),  # witnesses bond what
        tx.transfer(ALICE, CHAIN, 0, to=pub(dave), amount=210, expiry_height=9),  # they take
    )
    c.ok(tx.stake(dave, CHAIN, 0, amount=200, expiry_height=9))
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100, payees=3))
    right, wrong = b"\x05" * 32, b"\x06" * 32
    bobs = result(BOB, b"bad", commitment=wrong, replica=0)
    carols = result(CAROL, b"good", commitment=right, replica=1)
    daves = result(dave, b"good", commitment=right, replica=2)

    def slash(
        evidence: list[bytes], offender: bytes = pub(BOB)
    ) -> protocol.Signed[protocol.Transaction]:
        return tx.slash(
            COORD,
            CHAIN,
            c.seq(COORD),
            offender=offender,
            amount=100,
            reason="failed_verification",
            evidence=evidence,
            expiry_height=20,
        )

    c.rejects(slash([bobs, carols, daves]), ledger.BadEvidence)  # escrow still open
    c.ok(
        settle(
            ALICE,
            CHAIN,
            c.seq(ALICE),
            job_id=JOB,
            payouts={pub(CAROL): 100, pub(dave): 100},
            expiry_height=20,
        )
    )
    c.rejects(slash([bobs]), ledger.BadEvidence)  # the accused's Result alone proves nothing
    c.rejects(slash([bobs, carols]), ledger.BadEvidence)  # one other provider: no majority
    right_bob = result(BOB, b"good", commitment=right)
    c.rejects(slash([right_bob, carols, daves]), ledger.BadEvidence)  # BOB was right
    c.rejects(slash([daves, carols], offender=pub(CAROL)), ledger.BadEvidence)  # agree, paid
    other_job = result(CAROL, b"good", job=b"\x09" * 32, commitment=right)
    c.rejects(slash([bobs, other_job, daves]), ledger.BadEvidence)  # two jobs
    # a coordinator's check before it signs agrees with the ledger, refusal for refusal
    check = ledger.check_slash_evidence
    with pytest.raises(ledger.BadEvidence):
        check(c.state, ledger.Slash(pub(BOB), 100, "failed_verification", (bobs, carols)))
    check(c.state, ledger.Slash(pub(BOB), 100, "failed_verification", (bobs, carols, daves)))
    c.ok(slash([bobs, carols, daves]))
    assert c.state.account(pub(BOB)).stake == 400
    for _ in range(3):  # the same evidence again, in any order: used once
        c.rejects(slash([bobs, daves, carols]), ledger.EscrowError)
    with pytest.raises(ledger.EscrowError):
        check(c.state, ledger.Slash(pub(BOB), 100, "failed_verification", (bobs, carols, daves)))
    assert c.state.account(pub(BOB)).stake == 400


def test_attest_only_by_parties_of_settled_job_once() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))
    early = tx.attest(
        ALICE, CHAIN, 1, job_id=JOB, subject=pub(BOB), positive=True, expiry_height=20
    )
    c.rejects(early, ledger.EscrowError)
    c.ok(settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 100}, expiry_height=20))
    outsider = tx.attest(
        CAROL, CHAIN, 0, job_id=JOB, subject=pub(BOB), positive=False, expiry_height=20
    )
    c.rejects(outsider, ledger.NotAuthorized)
    rep = c.state.reputation(pub(BOB))
    c.ok(tx.attest(ALICE, CHAIN, 2, job_id=JOB, subject=pub(BOB), positive=True, expiry_height=20))
    # Recorded, but a positive attestation adds nothing: the payout already counted the job
    # (attack 11: farming reputation, and the settled-jobs count, by attesting).
    assert c.state.reputation(pub(BOB)) == rep
    assert c.state.account(pub(BOB)).rep_s == ledger.REP_UNIT
    twice = tx.attest(
        ALICE, CHAIN, 3, job_id=JOB, subject=pub(BOB), positive=True, expiry_height=20
    )
    c.rejects(twice, ledger.EscrowError)
    c.ok(tx.attest(BOB, CHAIN, 0, job_id=JOB, subject=pub(ALICE), positive=False, expiry_height=20))
    assert c.state.reputation(pub(ALICE)) < c.state.reputation(pub(CAROL))


def test_reputation_is_exact_and_decays() -> None:
    c = Chain.new(reputation_half_life=4)
    assert c.state.reputation(pub(BOB)) == ledger.State.from_genesis(c.state.genesis).reputation(
        pub(BOB)
    )
    assert c.state.reputation_float(pub(BOB)) == 0.5
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))
    c.ok(settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 100}, expiry_height=20))
    fresh = c.state.reputation(pub(BOB))
    assert fresh > 0.5
    c.until(20)
    decayed = c.state.reputation(pub(BOB))
    assert 0.5 < decayed < fresh


def test_bad_payload_and_unknown_kind_are_malformed() -> None:
    raw = protocol_tx("mint", b"\x91\x01")
    with pytest.raises(ledger.MalformedTransaction, match="payload"):
        ledger.verify_tx(raw, CHAIN)
    with pytest.raises(ledger.MalformedTransaction, match="unknown"):
        ledger.verify_tx(protocol_tx("steal", b"\x90"), CHAIN)
    with pytest.raises(ledger.MalformedTransaction):
        ledger.verify_tx(b"\xc1garbage", CHAIN)


def protocol_tx(kind: str, payload: bytes) -> bytes:
    msg = protocol.Transaction(
        sender=pub(ALICE), seq=0, expiry_height=9, fee=0, kind=kind, payload=payload
    )
    return protocol.sign(msg, ALICE, CHAIN).raw


def test_genesis_round_trip_and_errors() -> None:
    g = Chain.new().state.genesis
    assert ledger.Genesis.decode(g.encode()) == g
    with pytest.raises(ledger.GenesisError):
        ledger.Genesis.decode(b"\x90")
    with pytest.raises(ledger.GenesisError):
        ledger.make_genesis(CHAIN, [], {})
    with pytest.raises(ledger.GenesisError):
        ledger.make_genesis(CHAIN, [pub(COORD)], {pub(ALICE): ledger.MAX_SUPPLY + 1})


# --- limits the mutation run (scripts/mutate.py) found unpinned -----------------------


def test_a_settle_may_pay_out_exactly_what_is_left_and_not_more() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 150, claim_at=5, expire_at=9, per_payee=100))
    over = settle(
        ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 100, pub(CAROL): 100}, expiry_height=20
    )
    c.rejects(over, ledger.InsufficientFunds)
    c.ok(
        settle(
            ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 100, pub(CAROL): 50}, expiry_height=20
        )
    )
    e = c.state.escrow(JOB)
    assert e is not None and e.remaining == 0 and e.total_paid == 150


def test_a_claim_needs_a_priced_award_and_closes_at_the_expiry() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=2, expire_at=5, per_payee=100))
    c.until(2)
    free = tx.claim(
        BOB,
        CHAIN,
        0,
        job_id=JOB,
        award=award(ALICE, BOB, 0),
        receipt=receipt(ALICE, BOB),
        unseal_key=RECEIPT_KEY,
        expiry_height=20,
    )
    c.rejects(free, ledger.BadEvidence)
    c.until(4)
    late = tx.claim(
        BOB,
        CHAIN,
        0,
        job_id=JOB,
        award=award(ALICE, BOB, 100),
        receipt=receipt(ALICE, BOB),
        unseal_key=RECEIPT_KEY,
        expiry_height=20,
    )
    c.rejects(late, ledger.EscrowError)  # applied in block 5, the expiry
    assert c.state.balance(pub(BOB)) == 1_000_000


def test_the_whole_stake_can_be_unstaked_in_at_most_max_unbonding_entries() -> None:
    c = Chain.new(unbonding_delay=50)
    c.ok(tx.stake(BOB, CHAIN, 0, amount=1000, expiry_height=9))
    entries = ledger._rules.MAX_UNBONDING
    c.ok(*(tx.unstake(BOB, CHAIN, 1 + i, amount=1, expiry_height=99) for i in range(entries)))
    c.rejects(tx.unstake(BOB, CHAIN, 1 + entries, amount=1, expiry_height=99), ledger.EscrowError)
    c2 = Chain.new(unbonding_delay=50)
    c2.ok(tx.stake(BOB, CHAIN, 0, amount=1000, expiry_height=9))
    c2.ok(tx.unstake(BOB, CHAIN, 1, amount=1000, expiry_height=9))  # all of it
    assert c2.state.account(pub(BOB)).stake == 0


def test_slash_evidence_must_exist_and_hold_the_offenders_result() -> None:
    c = Chain.new()
    c.ok(tx.stake(BOB, CHAIN, 0, amount=500, expiry_height=9))
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))

    def slash(evidence: list[bytes], reason: str) -> protocol.Signed[protocol.Transaction]:
        return tx.slash(
            COORD,
            CHAIN,
            c.seq(COORD),
            offender=pub(BOB),
            amount=100,
            reason=reason,
            evidence=evidence,
            expiry_height=20,
        )

    c.rejects(slash([], "conflicting_results"), ledger.BadEvidence)
    # two agreeing providers, and no Result of BOB's at all
    theirs = [result(CAROL, b"x"), result(key("dave"), b"x")]
    c.rejects(slash(theirs, "failed_verification"), ledger.BadEvidence)
    assert c.state.account(pub(BOB)).stake == 500
