"""Reserved places (``reserve``): an awarded provider reserves its place in the job's
escrow at its award's price, with the requester's signed Award, as it starts the run. The
reserved price is then its own: no payout to anyone else takes it, a settle that leaves
the provider out leaves the price in the escrow for its claim, and the owner takes it
back only from the escrow's expiry. So the provider can hand over its output's key on the
Receipt alone (specs/ledger.md, "reserve"). Each rule's test is one no earlier rule
refuses."""

from __future__ import annotations

import pytest
from nacl.signing import SigningKey

import ledger
from ledger import tx
from ledger._state import ESCROW_RETENTION
from protocol import Signed, Transaction, unpack

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
    receipt,
    settle,
)

DAVE = key("dave")


def _reserve(c: Chain, provider: SigningKey, award_bytes: bytes) -> Signed[Transaction]:
    return tx.reserve(
        provider, CHAIN, c.seq(provider), job_id=JOB, award=award_bytes, expiry_height=c.height + 10
    )


def _claim(c: Chain, provider: SigningKey, price: int = 100) -> Signed[Transaction]:
    return tx.claim(
        provider,
        CHAIN,
        c.seq(provider),
        job_id=JOB,
        award=award(ALICE, provider, price),
        receipt=receipt(ALICE, provider, at_once=True, claim_by=1_000),
        expiry_height=c.height + 10,
        unseal_key=RECEIPT_KEY,
    )


def _locked(amount: int = 300, payees: int = 3, expire_at: int = 40) -> Chain:
    c = Chain.new()
    c.ok(c.lock(ALICE, amount, claim_at=expire_at - 5, expire_at=expire_at, per_payee=100,
                payees=payees))  # fmt: skip
    return c


def _escrow(c: Chain) -> ledger.Escrow:
    e = c.state.escrow(JOB)
    assert e is not None
    return e


def test_an_awarded_provider_reserves_its_place_at_its_award_price() -> None:
    c = _locked()
    c.ok(_reserve(c, BOB, award(ALICE, BOB, 90)))
    e = _escrow(c)
    assert e.reserved_for(pub(BOB)) == 90 and e.held == 90 and e.is_open
    assert e.remaining == 300 and c.state.balance(pub(BOB)) == 1_000_000  # nothing moved


@pytest.mark.parametrize(
    ("why", "make", "error"),
    [
        ("no escrow", lambda c: tx.reserve(BOB, CHAIN, c.seq(BOB), job_id=bytes(32),
                                           award=award(ALICE, BOB, 90, job=bytes(32)),
                                           expiry_height=c.height + 10), ledger.EscrowError),
        ("not an award", lambda c: _reserve(c, BOB, b"\x93junk"), ledger.BadEvidence),
        ("award not the owner's", lambda c: _reserve(c, BOB, award(CAROL, BOB, 90)),
         ledger.BadEvidence),
        ("award of another job", lambda c: _reserve(c, BOB, award(ALICE, BOB, 90, job=bytes(32))),
         ledger.BadEvidence),
        ("award to another provider", lambda c: _reserve(c, CAROL, award(ALICE, BOB, 90)),
         ledger.BadEvidence),
        ("over the per-payee limit", lambda c: _reserve(c, BOB, award(ALICE, BOB, 101)),
         ledger.EscrowError),
    ],
)  # fmt: skip
def test_a_reserve_is_refused(why: str, make: object, error: type[Exception]) -> None:
    c = _locked()
    assert callable(make)
    c.rejects(make(c), error)
    assert _escrow(c).reserved == (), why


def test_a_place_is_reserved_once_and_not_for_a_provider_paid_already() -> None:
    c = _locked()
    c.ok(_reserve(c, BOB, award(ALICE, BOB, 90)))
    c.rejects(_reserve(c, BOB, award(ALICE, BOB, 80, replica=1)), ledger.EscrowError)
    c.ok(_claim(c, CAROL))
    c.rejects(_reserve(c, CAROL, award(ALICE, CAROL, 100)), ledger.EscrowError)
    assert _escrow(c).reserved == ((pub(BOB), 90),)


def test_no_place_is_reserved_past_the_payees_or_the_funds_or_the_expiry_or_once_closed() -> None:
    c = _locked(payees=2)
    c.ok(_reserve(c, BOB, award(ALICE, BOB, 100)), _claim(c, CAROL))
    c.rejects(_reserve(c, DAVE, award(ALICE, DAVE, 100)), ledger.EscrowError)  # 2 places
    c = _locked(amount=150, payees=3)
    c.ok(_reserve(c, BOB, award(ALICE, BOB, 100)))
    c.rejects(_reserve(c, CAROL, award(ALICE, CAROL, 100)), ledger.InsufficientFunds)
    c.ok(_reserve(c, CAROL, award(ALICE, CAROL, 50)))  # what is left fits
    c = _locked(expire_at=6)
    c.until(4)
    c.ok(_reserve(c, BOB, award(ALICE, BOB, 100)))  # block 5: the last before the expiry
    c.rejects(_reserve(c, CAROL, award(ALICE, CAROL, 100)), ledger.EscrowError)  # block 6
    c = _locked()
    c.ok(settle(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, payouts={pub(CAROL): 100},
                expiry_height=c.height + 10))  # fmt: skip
    c.rejects(_reserve(c, BOB, award(ALICE, BOB, 100)), ledger.EscrowError)


def test_a_settle_leaving_a_reserved_provider_out_leaves_its_price_for_its_claim() -> None:
    """The attack the reservation answers: the owner, holding BOB's output (its key came
    on the Receipt), settles paying a bidder of its own instead. BOB's price stays in the
    escrow and its claim takes it."""
    c = _locked()
    c.ok(_reserve(c, BOB, award(ALICE, BOB, 100)))
    before = c.state.balance(pub(ALICE))
    c.ok(settle(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, payouts={pub(CAROL): 100},
                expiry_height=c.height + 10))  # fmt: skip
    e = _escrow(c)
    assert not e.is_open and e.remaining == 100 and not e.is_done
    assert c.state.balance(pub(ALICE)) == before + 100  # 300 − CAROL's 100 − BOB's 100
    assert e.claimable_by(pub(BOB)) and not e.claimable_by(pub(DAVE))
    c.rejects(_claim(c, DAVE), ledger.EscrowError)  # closed to anyone else
    c.ok(_claim(c, BOB))
    e = _escrow(c)
    assert e.paid_to(pub(BOB)) == 100 and e.remaining == 0 and e.is_done
    assert c.state.balance(pub(BOB)) == 1_000_100
    c.rejects(_claim(c, BOB), ledger.EscrowError)  # once


def test_no_payout_to_another_takes_a_reserved_price() -> None:
    # 250 locked for three payees at 100 (an owner short of its budget): BOB's reserved
    # 100 stays his whatever the others claim.
    c = _locked(amount=250)
    c.ok(_reserve(c, BOB, award(ALICE, BOB, 100)), _claim(c, CAROL))
    c.rejects(_claim(c, DAVE), ledger.InsufficientFunds)  # 100 + BOB's 100 > 150 left
    c.rejects(
        settle(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, payouts={pub(DAVE): 100},
               expiry_height=c.height + 10),
        ledger.InsufficientFunds,
    )  # fmt: skip
    c.ok(_claim(c, BOB))


def test_a_reserved_provider_is_paid_its_reserved_price_only() -> None:
    c = _locked()
    c.ok(_reserve(c, BOB, award(ALICE, BOB, 90)))
    msg = c.rejects(
        settle(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, payouts={pub(BOB): 100},
               expiry_height=c.height + 10),
        ledger.EscrowError,
    )  # fmt: skip
    assert "reserved at 90" in msg
    c.ok(_claim(c, BOB, price=100))  # an award of another price: the reserved one is paid
    assert _escrow(c).paid_to(pub(BOB)) == 90


def test_a_reserved_provider_paid_by_the_settle_cannot_claim_again() -> None:
    c = _locked()
    c.ok(_reserve(c, BOB, award(ALICE, BOB, 100)))
    c.ok(settle(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, payouts={pub(BOB): 100},
                expiry_height=c.height + 10))  # fmt: skip
    e = _escrow(c)
    assert e.is_done and not e.claimable_by(pub(BOB))
    c.rejects(_claim(c, BOB), ledger.EscrowError)
    assert c.state.balance(pub(BOB)) == 1_000_100


def test_the_owner_takes_back_an_unclaimed_reserved_price_from_the_expiry() -> None:
    c = _locked(expire_at=12)
    c.ok(_reserve(c, BOB, award(ALICE, BOB, 100)))
    c.ok(settle(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, payouts={pub(CAROL): 100},
                expiry_height=c.height + 10))  # fmt: skip
    refund = tx.refund(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, expiry_height=c.height + 20)
    c.rejects(refund, ledger.EscrowError)  # before the expiry: BOB may still claim
    c.until(12)
    c.rejects(_claim(c, BOB), ledger.EscrowError)  # claims end at the expiry
    before = c.state.balance(pub(ALICE))
    c.ok(tx.refund(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, expiry_height=c.height + 10))
    e = _escrow(c)
    assert c.state.balance(pub(ALICE)) == before + 100
    assert e.remaining == 0 and e.is_done and e.status == ledger.EscrowStatus.SETTLED
    c.rejects(
        tx.refund(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, expiry_height=c.height + 10),
        ledger.EscrowError,
    )


def test_a_settled_escrow_holding_a_reserved_price_is_not_pruned_until_it_is_empty() -> None:
    c = _locked(expire_at=6)
    c.ok(_reserve(c, BOB, award(ALICE, BOB, 100)))
    c.ok(settle(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, payouts={pub(CAROL): 100},
                expiry_height=c.height + 10))  # fmt: skip
    closed = c.height
    c.until(closed + ESCROW_RETENTION + 2)
    assert _escrow(c).remaining == 100  # its credits never vanish with it
    c.ok(tx.refund(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, expiry_height=c.height + 10))
    refunded = c.height
    c.until(refunded + ESCROW_RETENTION)
    assert c.state.escrow(JOB) is None


def test_an_escrow_without_a_reservation_encodes_as_before() -> None:
    e = ledger.Escrow(bytes(32), 10, 10, 1, 2, 5, 2)

    assert len(unpack(e.encode())) == 15
    with_place = ledger.Escrow(bytes(32), 10, 10, 1, 2, 5, 2, reserved=((b"\x01" * 32, 5),))
    assert ledger.Escrow.decode(with_place.encode()) == with_place
    assert ledger.Escrow.decode(e.encode()) == e


def test_a_reserve_whose_award_no_state_can_make_valid_is_refused_on_entry() -> None:
    # The mempool and forwarding nodes refuse it as malformed, before any state: the Award
    # of another job, naming another provider, or the sender's own.
    c = _locked()
    good = _reserve(c, BOB, award(ALICE, BOB, 90))
    ledger.check_embedded(ledger.verify_tx(good.raw, CHAIN), CHAIN)
    for bad in (
        _reserve(c, BOB, award(ALICE, BOB, 90, job=bytes(32))),
        _reserve(c, CAROL, award(ALICE, BOB, 90)),
        _reserve(c, ALICE, award(ALICE, ALICE, 90)),
        _reserve(c, BOB, b"\x93junk"),
    ):
        with pytest.raises(ledger.MalformedTransaction):
            ledger.check_embedded(ledger.verify_tx(bad.raw, CHAIN), CHAIN)


def test_claims_of_the_owners_keys_filling_the_pool_do_not_keep_a_reserved_claim_out() -> None:
    # Review round 82, F1: the pool capped the claims pending on an escrow by count and
    # payout, not allowing for reserved prices: the owner's own keys' claims, each valid
    # alone, filled both caps and kept a reserved provider's claim out a block of its window.
    c = _locked(amount=300, payees=3)
    c.ok(_reserve(c, BOB, award(ALICE, BOB, 100)))
    pool = ledger.Producer(COORD, c.state, interval_ms=1_000, now_ms=0)
    for i in range(3):
        sybil = key(f"r82 sybil {i}")
        claim = tx.claim(
            sybil,
            CHAIN,
            ledger.UNSEQUENCED,
            job_id=JOB,
            award=award(ALICE, sybil, 100, replica=i + 1),
            receipt=receipt(ALICE, sybil, replica=i + 1, at_once=True, claim_by=1_000),
            expiry_height=c.height + 10,
            unseal_key=RECEIPT_KEY,
        )
        pool.submit(claim.raw)
    ours = tx.claim(
        BOB,
        CHAIN,
        ledger.UNSEQUENCED,
        job_id=JOB,
        award=award(ALICE, BOB, 100),
        receipt=receipt(ALICE, BOB, at_once=True, claim_by=1_000),
        expiry_height=c.height + 10,
        unseal_key=RECEIPT_KEY,
    )
    pool.submit(ours.raw)  # before: "this escrow already has as many claims pending as payees"
    pool.produce()
    e = pool.state.escrow(JOB)
    assert e is not None and e.paid_to(pub(BOB)) == 100 and pub(BOB) in e.claimed
