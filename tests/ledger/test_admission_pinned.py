"""Admission checks of the signed messages a transaction carries that the mutation run
(scripts/mutate.py, round 16's tree) found unpinned: each transaction passes every other
check, so the one pinned decides, and the block would refuse it too late (after its
sender's sequence number was spent and its later transactions dropped behind it)."""

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
    bid,
    receipt,
    result,
    settle,
)

DAVE = key("dave")


def _locked() -> Chain:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=2, expire_at=20, per_payee=100, payees=3))
    return c


def test_a_settle_listing_a_provider_twice_is_malformed() -> None:
    c = _locked()
    twice = ledger.Payout(pub(BOB), 100, bid(BOB, 100))
    raw = tx.make(
        ALICE,
        CHAIN,
        c.seq(ALICE),
        ledger.Settle(JOB, (twice, twice)),
        expiry_height=c.height + 5,
    ).raw
    with pytest.raises(ledger.MalformedTransaction, match="lists a provider twice"):
        ledger.Mempool(CHAIN).add(raw, c.state)
    once = settle(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, payouts={pub(BOB): 100}, expiry_height=30)
    ledger.Mempool(CHAIN).add(once.raw, c.state)


@pytest.mark.parametrize(
    "case",
    ["award of another job", "award of another requester", "award priced 0", "another replica"],
)
def test_a_claim_whose_award_and_receipt_do_not_match_is_malformed(case: str) -> None:
    c = _locked()
    other = b"\x09" * 32
    awards = {
        "award of another job": award(ALICE, BOB, 100, job=other),
        "award of another requester": award(CAROL, BOB, 100),
        "award priced 0": award(ALICE, BOB, 0),
        "another replica": award(ALICE, BOB, 100, replica=1),
    }
    claim = tx.claim(
        BOB,
        CHAIN,
        c.seq(BOB),
        job_id=JOB,
        award=awards[case],
        receipt=receipt(ALICE, BOB),
        unseal_key=RECEIPT_KEY,
        expiry_height=c.height + 5,
    )
    # (an Award priced 0 is malformed as a message: round 29, K1)
    why = "price: 0 is outside" if case == "award priced 0" else "Award and Receipt"
    with pytest.raises(ledger.MalformedTransaction, match=why):
        ledger.Mempool(CHAIN).add(claim.raw, c.state)
    good = tx.claim(
        BOB,
        CHAIN,
        c.seq(BOB),
        job_id=JOB,
        award=award(ALICE, BOB, 100),
        receipt=receipt(ALICE, BOB),
        unseal_key=RECEIPT_KEY,
        expiry_height=c.height + 5,
    )
    ledger.Mempool(CHAIN).add(good.raw, c.state)


def test_slash_evidence_without_the_offenders_result_or_of_two_jobs_is_malformed() -> None:
    c = _locked()
    right = b"\x05" * 32
    carols = result(CAROL, b"good", commitment=right, replica=1)
    daves = result(DAVE, b"good", commitment=right, replica=2)
    elsewhere = result(BOB, b"bad", job=b"\x09" * 32)
    for evidence in ([carols, daves], [elsewhere, carols, daves]):
        raw = tx.slash(
            COORD,
            CHAIN,
            c.seq(COORD),
            offender=pub(BOB),
            amount=100,
            reason="failed_verification",
            evidence=evidence,
            expiry_height=c.height + 5,
        ).raw
        with pytest.raises(ledger.MalformedTransaction, match="one of them the offender's"):
            ledger.Mempool(CHAIN).add(raw, c.state)


def test_a_long_refusal_reason_is_cut_with_an_ellipsis_and_a_short_one_kept() -> None:
    from ledger._admission import MAX_FAILED_REASON, short_reason

    exact = "x" * MAX_FAILED_REASON
    assert short_reason(exact) == exact
    cut = short_reason(exact + "y")
    assert len(cut) == MAX_FAILED_REASON and cut.endswith("\u2026") and cut[:-1] == exact[:-1]
