"""A negative attestation weighs what the rated pair risked (round-5 review R5-8).

It adds ``REP_UNIT * min(1, paid / ATTEST_FULL_WEIGHT_PAYOUT)`` failure weight, rounded
down, where ``paid`` is what the job's escrow paid the pair's provider: four 1-micro-credit
jobs no longer take a trusted provider's trust, while a normally priced job's attestation
still counts a full unit.
"""

from __future__ import annotations

import hypothesis.strategies as st
import nacl.signing
from hypothesis import given, settings

import ledger
import scheduler
from ledger import tx
from ledger._rules import ATTEST_FULL_WEIGHT_PAYOUT, attest_failure_weight
from scheduler._requester_policy import trusted

from ..keys import pub
from .helpers import ALICE, BOB, CAROL, CHAIN, Chain, job_spec, settle

U = ledger.REP_UNIT


def _job(
    c: Chain,
    owner: nacl.signing.SigningKey,
    label: str,
    payouts: dict[nacl.signing.SigningKey, int],
    *,
    attest: tuple[nacl.signing.SigningKey, nacl.signing.SigningKey] | None = None,
) -> None:
    """One block: ``owner`` locks a job, settles it paying ``payouts`` (each payee's own
    Bid at that price) and, with ``attest=(author, subject)``, the author rates the subject
    negatively."""
    spec = job_spec(owner, label.encode())
    seq = c.seq(owner)
    paid = {pub(k): a for k, a in payouts.items()}
    txs = [
        tx.lock(
            owner,
            CHAIN,
            seq,
            job_id=spec.id,
            amount=sum(paid.values()),
            claim_height=c.height + 2,
            escrow_expiry=c.height + 50,
            max_per_payee=max(paid.values()),
            max_payees=len(paid),
            spec=spec.raw,
            expiry_height=c.height + 10,
        ),
        settle(owner, CHAIN, seq + 1, job_id=spec.id, payouts=paid, expiry_height=c.height + 10),
    ]
    if attest is not None:
        author, subject = attest
        n = seq + 2 if author is owner else c.seq(author)
        txs.append(
            tx.attest(
                author,
                CHAIN,
                n,
                job_id=spec.id,
                subject=pub(subject),
                positive=False,
                expiry_height=c.height + 10,
            )
        )
    c.ok(*txs)


def _trusted(c: Chain, provider: nacl.signing.SigningKey) -> bool:
    """Whether an adaptive requester runs a job on ``provider`` alone, reading the ledger
    as the daemon and the simulator do (``State.provider_record``)."""
    config = scheduler.RequesterConfig(
        key=ALICE,
        chain_id=CHAIN,
        commitment=lambda b: b,
        reputation=lambda p: scheduler.Reputation(*c.state.provider_record(p)),
        replication="adaptive",
    )
    return trusted(pub(provider), config, {})


def _failures(c: Chain, who: nacl.signing.SigningKey) -> int:
    return c.state.reputation_weights(pub(who))[1]


def test_four_one_micro_credit_jobs_attested_negatively_leave_a_trusted_provider_trusted() -> None:
    # BOB bonds a credit and is paid for 20 honest jobs at its floor: trusted.
    c = Chain.new(reputation_half_life=10_000)
    c.ok(tx.stake(BOB, CHAIN, 0, amount=1_000_000, expiry_height=10))
    for i in range(20):
        _job(c, ALICE, f"honest-{i}", {BOB: 1_000})
    assert _trusted(c, BOB)
    # CAROL pays BOB 1 micro-credit for each of four jobs it bid on, and attests against it.
    for i in range(4):
        _job(c, CAROL, f"grief-{i}", {BOB: 1}, attest=(CAROL, BOB))
    record = c.state.provider_record(pub(BOB))
    # Before the rule: 4 failures, 833 per mille, no longer trusted.
    assert record.failures == 0 and record.score_permille >= 900, record
    assert _failures(c, BOB) == 4 * (U // ATTEST_FULL_WEIGHT_PAYOUT)
    assert _trusted(c, BOB)


def test_an_attestation_about_a_normally_priced_job_adds_a_full_failure_unit() -> None:
    # The simulator's lowest provider floor (800), the daemon's default floor (1,000), and
    # a dearer job: every one a full unit, as before the rule.
    for price in (ATTEST_FULL_WEIGHT_PAYOUT, 800, 1_000, 100_000):
        c = Chain.new(reputation_half_life=10_000)
        _job(c, ALICE, f"job-{price}", {BOB: price}, attest=(ALICE, BOB))
        assert _failures(c, BOB) == U
        assert c.state.provider_record(pub(BOB)).failures == 1


def test_a_provider_rating_the_requester_weighs_what_it_was_paid_not_the_whole_job() -> None:
    # BOB underbid at 1 beside CAROL at 1,000: BOB's rating of ALICE weighs its own
    # 1-micro-credit payout, CAROL's a full unit.
    c = Chain.new(reputation_half_life=10_000)
    _job(c, ALICE, "two-providers", {BOB: 1, CAROL: 1_000}, attest=(BOB, ALICE))
    assert _failures(c, ALICE) == U // ATTEST_FULL_WEIGHT_PAYOUT
    job = job_spec(ALICE, b"two-providers").id
    c.ok(
        tx.attest(CAROL, CHAIN, 0, job_id=job, subject=pub(ALICE), positive=False, expiry_height=99)
    )
    assert _failures(c, ALICE) == U // ATTEST_FULL_WEIGHT_PAYOUT + U


def test_a_positive_attestation_still_adds_nothing() -> None:
    c = Chain.new(reputation_half_life=10_000)
    _job(c, ALICE, "liked", {BOB: 1_000})
    before = c.state.account(pub(BOB))
    job = job_spec(ALICE, b"liked").id
    c.ok(tx.attest(ALICE, CHAIN, 2, job_id=job, subject=pub(BOB), positive=True, expiry_height=99))
    after = c.state.account(pub(BOB))
    assert (after.rep_s, after.rep_f) == (before.rep_s, before.rep_f)


@given(st.integers(0, 10**9), st.integers(0, 10**9))
def test_the_weight_is_monotone_in_the_payout_and_never_above_one_unit(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert 0 <= attest_failure_weight(low) <= attest_failure_weight(high) <= U
    assert (attest_failure_weight(high) == U) == (high >= ATTEST_FULL_WEIGHT_PAYOUT)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 10**6))
def test_the_ledger_adds_the_weight_of_the_pairs_payout(price: int) -> None:
    c = Chain.new(reputation_half_life=10_000)
    _job(c, ALICE, "priced", {BOB: price}, attest=(ALICE, BOB))
    assert _failures(c, BOB) == attest_failure_weight(price)
    assert _failures(c, BOB) == U * min(price, ATTEST_FULL_WEIGHT_PAYOUT) // 800
