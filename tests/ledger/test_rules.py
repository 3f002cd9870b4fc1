"""Each transaction kind's rules, one behaviour per test."""

from __future__ import annotations

import nacl.signing
import pytest

import ledger
import protocol
from ledger import EscrowStatus, tx

from ..keys import pub
from .helpers import ALICE, BOB, CAROL, CHAIN, COORD, JOB, Chain, award, receipt, result


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
        tx.settle(
            ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 100, pub(CAROL): 80}, expiry_height=20
        )
    )
    e = c.state.escrow(JOB)
    assert e is not None and e.status == EscrowStatus.SETTLED and e.remaining == 0
    assert c.state.balance(pub(ALICE)) == 1_000_000 - 180
    assert c.state.balance(pub(BOB)) == 1_000_100
    again = tx.settle(ALICE, CHAIN, 2, job_id=JOB, payouts={}, expiry_height=20)
    c.rejects(again, ledger.EscrowError)
    c.until(9)
    c.rejects(tx.refund(ALICE, CHAIN, 2, job_id=JOB, expiry_height=20), ledger.EscrowError)


def test_settle_limits() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100, payees=1))
    over = tx.settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 101}, expiry_height=20)
    c.rejects(over, ledger.EscrowError)
    two = tx.settle(
        ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 1, pub(CAROL): 1}, expiry_height=20
    )
    c.rejects(two, ledger.EscrowError)
    selfpay = tx.settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(ALICE): 1}, expiry_height=20)
    c.rejects(selfpay, ledger.NotAuthorized)
    c.rejects(
        tx.settle(BOB, CHAIN, 0, job_id=JOB, payouts={}, expiry_height=20), ledger.NotAuthorized
    )


def test_lock_rules() -> None:
    c = Chain.new()
    c.rejects(c.lock(ALICE, 300, claim_at=5, expire_at=1, per_payee=100), ledger.EscrowError)
    c.rejects(c.lock(ALICE, 300, claim_at=5, expire_at=5, per_payee=100), ledger.EscrowError)
    c.rejects(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=301), ledger.EscrowError)
    c.rejects(
        c.lock(ALICE, 2_000_000, claim_at=5, expire_at=9, per_payee=1), ledger.InsufficientFunds
    )
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))
    c.rejects(c.lock(BOB, 300, claim_at=5, expire_at=9, per_payee=100), ledger.EscrowError)


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
        expiry_height=c.height + 10,
    )


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
    c.ok(tx.settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(CAROL): 50}, expiry_height=20))
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
        expiry_height=20,
    )
    c.rejects(stolen, ledger.BadEvidence)
    # an award Bob signed himself is not the requester's
    c.rejects(claim_tx(c, award_raw=award(BOB, BOB, 100)), ledger.BadEvidence)
    # above the escrow's per-payee limit
    c.rejects(claim_tx(c, price=101), ledger.EscrowError)
    # receipt for another replica
    c.rejects(claim_tx(c, receipt_raw=receipt(ALICE, BOB, replica=1)), ledger.BadEvidence)
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

    c.rejects(slash_bob(ALICE, 0, 100, "conflicting_results", [r1, r2]), ledger.NotAuthorized)
    c.rejects(slash_bob(COORD, 0, 100, "conflicting_results", [r1, r1]), ledger.BadEvidence)
    carols = [result(CAROL, b"x")]
    c.rejects(slash_bob(COORD, 0, 100, "failed_verification", carols), ledger.BadEvidence)
    before = c.state.reputation(pub(BOB))
    c.ok(slash_bob(COORD, 0, 100, "conflicting_results", [r1, r2]))
    assert c.state.account(pub(BOB)).stake == 400
    assert c.state.burned == 100
    assert c.state.reputation(pub(BOB)) < before
    too_much = slash_bob(COORD, 1, 401, "conflicting_results", [r1, r2])
    c.rejects(too_much, ledger.InsufficientFunds)


def test_attest_only_by_parties_of_settled_job_once() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))
    early = tx.attest(
        ALICE, CHAIN, 1, job_id=JOB, subject=pub(BOB), positive=True, expiry_height=20
    )
    c.rejects(early, ledger.EscrowError)
    c.ok(tx.settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 100}, expiry_height=20))
    outsider = tx.attest(
        CAROL, CHAIN, 0, job_id=JOB, subject=pub(BOB), positive=False, expiry_height=20
    )
    c.rejects(outsider, ledger.NotAuthorized)
    rep = c.state.reputation(pub(BOB))
    c.ok(tx.attest(ALICE, CHAIN, 2, job_id=JOB, subject=pub(BOB), positive=True, expiry_height=20))
    assert c.state.reputation(pub(BOB)) > rep
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
    c.ok(tx.settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 100}, expiry_height=20))
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
