"""Money rules the mutation run (scripts/mutate.py) found unpinned: each test fails when
its one check in ledger/_rules.py is switched off or its comparison moved by one, and the
transaction it sends passes every other check, so that check alone decides."""

from __future__ import annotations

from dataclasses import replace

import ledger
import ledger._state
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
    slash_bob_outvoted,
)


def test_a_settle_listing_one_provider_twice_is_refused() -> None:
    # Both payouts carry BOB's own Bid at the amount paid, and the sum, the per-payee limit
    # and the number of payees all pass: only the duplicate listing is wrong.
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))
    bobs_bid = bid(BOB, 50)
    twice = tx.make(
        ALICE,
        CHAIN,
        1,
        ledger.Settle(
            JOB,
            (ledger.Payout(pub(BOB), 50, bobs_bid), ledger.Payout(pub(BOB), 50, bobs_bid)),
        ),
        expiry_height=20,
    )
    assert "twice" in c.rejects(twice, ledger.EscrowError)
    e = c.state.escrow(JOB)
    assert e is not None and e.is_open and e.remaining == 300
    assert c.state.balance(pub(BOB)) == 1_000_000
    # the same payout listed once is fine
    c.ok(settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 50}, expiry_height=20))
    assert c.state.balance(pub(BOB)) == 1_000_050


def test_a_slash_may_take_the_whole_stake_and_unbonding_and_not_a_credit_more() -> None:
    c = Chain.new(unbonding_delay=50)
    c.ok(tx.stake(BOB, CHAIN, 0, amount=500, expiry_height=9))
    c.ok(tx.unstake(BOB, CHAIN, 1, amount=200, expiry_height=9))
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))
    evidence = [result(BOB, b"one"), result(BOB, b"two")]

    def slash(amount: int) -> protocol.Signed[protocol.Transaction]:
        return tx.slash(
            COORD,
            CHAIN,
            c.seq(COORD),
            offender=pub(BOB),
            amount=amount,
            reason="conflicting_results",
            evidence=evidence,
            expiry_height=20,
        )

    # 300 staked + 200 unbonding: a slash takes what is left up to its amount (R9-3)
    c.ok(slash(501))
    a = c.state.account(pub(BOB))
    assert (a.stake, a.unbonding) == (0, ())
    assert c.state.burned == 500


def test_attestations_go_only_between_the_requester_and_a_provider() -> None:
    # BOB and CAROL were both paid by ALICE's settled job: each is a party, yet neither may
    # attest about the other (a provider would grief its competitor), nor anyone about itself.
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))
    payouts = {pub(BOB): 100, pub(CAROL): 80}
    c.ok(settle(ALICE, CHAIN, 1, job_id=JOB, payouts=payouts, expiry_height=20))
    e = c.state.escrow(JOB)
    assert e is not None and e.status == EscrowStatus.SETTLED
    assert {pub(ALICE), pub(BOB), pub(CAROL)} <= e.parties()
    carol_before = c.state.reputation(pub(CAROL))
    grief = tx.attest(
        BOB, CHAIN, 0, job_id=JOB, subject=pub(CAROL), positive=False, expiry_height=20
    )
    c.rejects(grief, ledger.NotAuthorized)
    assert c.state.reputation(pub(CAROL)) == carol_before
    itself = tx.attest(
        ALICE, CHAIN, 2, job_id=JOB, subject=pub(ALICE), positive=True, expiry_height=20
    )
    c.rejects(itself, ledger.NotAuthorized)
    # between the requester and a provider, both ways, is allowed
    c.ok(
        tx.attest(ALICE, CHAIN, 2, job_id=JOB, subject=pub(CAROL), positive=False, expiry_height=20)
    )
    c.ok(
        tx.attest(CAROL, CHAIN, 0, job_id=JOB, subject=pub(ALICE), positive=True, expiry_height=20)
    )
    assert c.state.reputation(pub(CAROL)) < carol_before


def test_attestations_need_both_sides_to_be_parties_of_the_job() -> None:
    # DAVE was never paid by the job: the requester cannot attest about it, nor it about
    # the requester (the attestation would otherwise pass every other check).
    dave = key("dave")
    c = Chain.new()
    c.ok(tx.transfer(ALICE, CHAIN, 0, to=pub(dave), amount=10, expiry_height=9))
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))
    c.ok(settle(ALICE, CHAIN, 2, job_id=JOB, payouts={pub(BOB): 100}, expiry_height=20))
    dave_before = c.state.reputation(pub(dave))
    about_outsider = tx.attest(
        ALICE, CHAIN, 3, job_id=JOB, subject=pub(dave), positive=False, expiry_height=20
    )
    c.rejects(about_outsider, ledger.NotAuthorized)
    assert c.state.reputation(pub(dave)) == dave_before
    by_outsider = tx.attest(
        dave, CHAIN, 0, job_id=JOB, subject=pub(ALICE), positive=False, expiry_height=20
    )
    c.rejects(by_outsider, ledger.NotAuthorized)


def test_no_attestation_while_the_escrow_is_open_even_after_a_claim() -> None:
    # BOB's claim makes it a paid party while the escrow stays open: the requester still
    # cannot attest about it until the job is settled or refunded.
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=2, expire_at=9, per_payee=100))
    c.until(2)
    claim = tx.claim(
        BOB,
        CHAIN,
        0,
        job_id=JOB,
        award=award(ALICE, BOB, 100),
        receipt=receipt(ALICE, BOB),
        unseal_key=RECEIPT_KEY,
        expiry_height=20,
    )
    c.ok(claim)
    e = c.state.escrow(JOB)
    assert e is not None and e.is_open and pub(BOB) in e.parties()
    early = tx.attest(
        ALICE, CHAIN, 1, job_id=JOB, subject=pub(BOB), positive=False, expiry_height=20
    )
    c.rejects(early, ledger.EscrowError)
    c.until(9)
    c.ok(tx.refund(ALICE, CHAIN, 1, job_id=JOB, expiry_height=20))
    c.ok(tx.attest(ALICE, CHAIN, 2, job_id=JOB, subject=pub(BOB), positive=False, expiry_height=20))


def _spec_expiring_at(height: int, label: bytes) -> protocol.Signed[protocol.JobSpec]:
    """ALICE's JobSpec whose escrow expiry height is ``height``."""
    spec = replace(job_spec(ALICE, label).message, escrow_expiry_height=height)
    return protocol.sign(spec, ALICE, CHAIN)


def test_a_job_is_locked_before_its_specs_escrow_expiry_and_not_in_that_block() -> None:
    c = Chain.new()
    c.until(3)
    on_time = _spec_expiring_at(5, b"on-time")
    c.ok(
        c.lock(ALICE, 100, claim_at=5, expire_at=6, per_payee=100, job=on_time.id, spec=on_time.raw)
    )
    assert c.height == 4
    late = _spec_expiring_at(5, b"late")
    lock = c.lock(ALICE, 100, claim_at=5, expire_at=6, per_payee=100, job=late.id, spec=late.raw)
    assert "has passed" in c.rejects(lock, ledger.EscrowError)  # applied in block 5
    assert c.state.escrow(late.id) is None


def test_a_locks_expiry_is_at_most_the_retention_below_its_specs() -> None:
    retention = ledger._state.ESCROW_RETENTION
    c = Chain.new()
    spec = _spec_expiring_at(retention + 10, b"retained")
    too_early = c.lock(
        ALICE, 100, claim_at=5, expire_at=9, per_payee=100, job=spec.id, spec=spec.raw
    )
    assert "blocks below" in c.rejects(too_early, ledger.EscrowError)
    assert c.state.escrow(spec.id) is None
    c.ok(c.lock(ALICE, 100, claim_at=5, expire_at=10, per_payee=100, job=spec.id, spec=spec.raw))
    e = c.state.escrow(spec.id)
    assert e is not None and e.expiry_height == 10


def test_a_slash_with_no_evidence_is_refused_as_such() -> None:
    # The next check (one job) would refuse it too, but with a reason about jobs: the
    # coordinator that sent it is told what is missing.
    c = Chain.new()
    c.ok(tx.stake(BOB, CHAIN, 0, amount=500, expiry_height=9))
    empty = tx.slash(
        COORD,
        CHAIN,
        0,
        offender=pub(BOB),
        amount=100,
        reason="failed_verification",
        evidence=[],
        expiry_height=20,
    )
    assert "at least one signed Result" in c.rejects(empty, ledger.BadEvidence)
    assert c.state.account(pub(BOB)).stake == 500


def test_a_paid_majority_alone_slashes_no_one_without_the_offenders_result() -> None:
    # The escrow is closed and paid CAROL and DAVE, whose Results agree: everything a
    # failed_verification slash needs, except a Result of BOB's that the majority outvoted.
    c = Chain.new()
    dave = key("dave")
    c.ok(
        tx.stake(BOB, CHAIN, 0, amount=500, expiry_height=9),
        tx.transfer(ALICE, CHAIN, 0, to=pub(dave), amount=10, expiry_height=9),
    )
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100, payees=3))
    paid = {pub(CAROL): 100, pub(dave): 100}
    c.ok(settle(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, payouts=paid, expiry_height=20))
    right = b"\x05" * 32
    majority = [
        result(CAROL, b"good", commitment=right, replica=1),
        result(dave, b"good", commitment=right, replica=2),
    ]
    no_result_of_bobs = tx.slash(
        COORD,
        CHAIN,
        0,
        offender=pub(BOB),
        amount=100,
        reason="failed_verification",
        evidence=majority,
        expiry_height=20,
    )
    assert "signed by the offender" in c.rejects(no_result_of_bobs, ledger.BadEvidence)
    assert c.state.account(pub(BOB)).stake == 500


def test_conflicting_results_means_exactly_two_results_of_the_offender() -> None:
    # Each evidence list holds Results for one replica of one escrowed job with different
    # outputs, one at least of BOB's: only "exactly two, both BOB's" is an equivocation.
    c = Chain.new()
    c.ok(tx.stake(BOB, CHAIN, 0, amount=500, expiry_height=9))
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))

    def slash(evidence: list[bytes]) -> protocol.Signed[protocol.Transaction]:
        return tx.slash(
            COORD,
            CHAIN,
            c.seq(COORD),
            offender=pub(BOB),
            amount=100,
            reason="conflicting_results",
            evidence=evidence,
            expiry_height=20,
        )

    one_of_carols = [result(BOB, b"one"), result(CAROL, b"two")]
    assert "exactly two" in c.rejects(slash(one_of_carols), ledger.BadEvidence)
    three_of_bobs = [result(BOB, b"one"), result(BOB, b"two"), result(BOB, b"three")]
    assert "exactly two" in c.rejects(slash(three_of_bobs), ledger.BadEvidence)
    assert c.state.account(pub(BOB)).stake == 500
    c.ok(slash([result(BOB, b"one"), result(BOB, b"two")]))
    assert c.state.account(pub(BOB)).stake == 400


RIGHT, WRONG = b"\x05" * 32, b"\x06" * 32


def _failed_verification_chain(paid: list[bytes]) -> Chain:
    """BOB staked 500, the witnesses CAROL and DAVE 200 each (a majority takes no more than
    each of its providers has bonded); ALICE's job locked for 3 payees and settled paying
    ``paid``."""
    c = Chain.new()
    dave = key("dave")
    c.ok(
        tx.stake(BOB, CHAIN, 0, amount=500, expiry_height=9),
        tx.stake(CAROL, CHAIN, 0, amount=200, expiry_height=9),
        tx.transfer(ALICE, CHAIN, 0, to=pub(dave), amount=210, expiry_height=9),
    )
    c.ok(tx.stake(dave, CHAIN, 0, amount=200, expiry_height=9))
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100, payees=3))
    payouts = dict.fromkeys(paid, 100)
    c.ok(settle(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, payouts=payouts, expiry_height=20))
    return c


def test_an_outvoting_majority_must_be_exactly_whom_the_escrow_paid() -> None:
    dave = pub(key("dave"))
    c = _failed_verification_chain([pub(CAROL)])  # DAVE's Result was never paid
    assert "escrow paid" in c.rejects(slash_bob_outvoted(c), ledger.BadEvidence)
    c = _failed_verification_chain([pub(CAROL), dave, pub(BOB)])  # BOB was paid too
    assert "escrow paid" in c.rejects(slash_bob_outvoted(c), ledger.BadEvidence)
    assert c.state.account(pub(BOB)).stake == 500
    c = _failed_verification_chain([pub(CAROL), dave])
    c.ok(slash_bob_outvoted(c))
    assert c.state.account(pub(BOB)).stake == 400


def test_no_failed_verification_slash_while_the_escrow_is_open_even_if_claims_paid() -> None:
    # CAROL and DAVE were paid by claims (their receipts), so the majority is paid; but the
    # escrow is still open: no verdict has closed the job.
    dave = key("dave")
    c = Chain.new()
    c.ok(
        tx.stake(BOB, CHAIN, 0, amount=500, expiry_height=9),
        tx.transfer(ALICE, CHAIN, 0, to=pub(dave), amount=10, expiry_height=9),
    )
    c.ok(c.lock(ALICE, 300, claim_at=2, expire_at=9, per_payee=100, payees=3))
    c.until(2)
    claims = [
        tx.claim(
            who,
            CHAIN,
            c.seq(who),
            job_id=JOB,
            award=award(ALICE, who, 100, replica=replica),
            receipt=receipt(ALICE, who, replica=replica),
            unseal_key=RECEIPT_KEY,
            expiry_height=20,
        )
        for who, replica in ((CAROL, 1), (dave, 2))
    ]
    c.ok(*claims)
    e = c.state.escrow(JOB)
    assert e is not None and e.is_open and e.paid_to(pub(CAROL)) == e.paid_to(pub(dave)) == 100
    assert "still open" in c.rejects(slash_bob_outvoted(c), ledger.BadEvidence)
    assert c.state.account(pub(BOB)).stake == 500


def test_a_transaction_applies_in_the_block_at_its_expiry_height_and_not_after() -> None:
    # (mutation run, round 16: `expiry_height < h` as `<=` went unnoticed)
    c = Chain.new()
    at = c.height + 1
    c.ok(tx.transfer(ALICE, CHAIN, 0, to=pub(BOB), amount=1, expiry_height=at))
    late = tx.transfer(ALICE, CHAIN, 1, to=pub(BOB), amount=1, expiry_height=c.height)
    c.rejects(late, ledger.ExpiredTransaction)


def test_a_claims_fee_may_take_the_whole_payout_and_balance_and_not_a_credit_more() -> None:
    # (mutation run, round 16: `fee > balance + payout` as `>=` went unnoticed). A fresh
    # provider holding nothing claims 100 at a fee of 100, then one at 101 is refused.
    c = Chain.new()
    fresh, other = key("fresh-claimant"), key("fresh-claimant-2")
    c.ok(c.lock(ALICE, 300, claim_at=1, expire_at=20, per_payee=100, payees=3))

    def claim(who: object, fee: int) -> protocol.Signed[protocol.Transaction]:
        assert isinstance(who, type(ALICE))
        return tx.claim(
            who,
            CHAIN,
            ledger.UNSEQUENCED,
            job_id=JOB,
            award=award(ALICE, who, 100),
            receipt=receipt(ALICE, who),
            unseal_key=RECEIPT_KEY,
            expiry_height=c.height + 5,
            fee=fee,
        )

    c.rejects(claim(other, 101), ledger.InsufficientFunds)
    c.ok(claim(fresh, 100))
    assert c.state.balance(pub(fresh)) == 0
