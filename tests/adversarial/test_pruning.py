"""Adversarial review of closed-escrow pruning (d6b577a): a stranger or a dishonest party
against the ledger rules around an escrow's prune height. Each test is one attack; one
the code does not withstand yet is marked ``xfail(strict=True)`` with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

import ledger
import ledger._state
import protocol
from ledger import tx

from ..keys import pub
from ..ledger.helpers import (
    ALICE,
    BOB,
    CHAIN,
    COORD,
    JOB,
    RECEIPT_KEY,
    Chain,
    award,
    genesis,
    job_spec,
    receipt,
    result,
    settle,
)

RETAIN = 100  # a lock's expiry may be this far below its JobSpec's (100 in the helpers)


@pytest.fixture(autouse=True)
def short_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger._state, "ESCROW_RETENTION", RETAIN)


def _slash_bob(
    c: Chain, evidence: list[bytes], amount: int = 100
) -> protocol.Signed[protocol.Transaction]:
    return tx.slash(
        COORD,
        CHAIN,
        c.seq(COORD),
        offender=pub(BOB),
        amount=amount,
        reason="conflicting_results",
        evidence=evidence,
        expiry_height=c.height + 10,
    )


def _conflict() -> list[bytes]:
    """BOB's two Results of one replica of JOB with different outputs (an equivocation)."""
    return [result(BOB, b"one"), result(BOB, b"two")]


def _refunded_with_bob_slashed() -> Chain:
    """ALICE's JOB locked, BOB slashed once on its evidence, the escrow refunded at its
    expiry (height 4): the escrow's prune height is 4 + RETAIN."""
    c = Chain.new()
    c.ok(
        tx.stake(BOB, CHAIN, 0, amount=1000, expiry_height=10),
        c.lock(ALICE, 300, claim_at=2, expire_at=4, per_payee=100),
    )  # block 1
    c.ok(_slash_bob(c, _conflict()))  # block 2: used once
    c.rejects(_slash_bob(c, _conflict()), ledger.EscrowError)  # block 3: not twice
    c.ok(tx.refund(ALICE, CHAIN, 1, job_id=JOB, expiry_height=c.height + 10))  # block 4
    e = c.state.escrow(JOB)
    assert e is not None and e.closed_height == 4 and pub(BOB) in e.slashed
    return c


def test_slash_evidence_is_used_once_even_after_the_escrow_left_the_state() -> None:
    c = _refunded_with_bob_slashed()
    c.until(4 + RETAIN)
    assert c.state.escrow(JOB) is None  # pruned
    stake_before = c.state.account(pub(BOB)).stake
    # ALICE (dishonest, or colluding with whoever reports) locks JOB again: same JobSpec
    relock = c.lock(ALICE, 1, claim_at=c.height + 1, expire_at=c.height + 2, per_payee=1)
    produced = c.block(relock)
    relocked = not produced.rejected
    # the very evidence already used on JOB, submitted again by a coordinator
    produced = c.block(_slash_bob(c, _conflict()))
    slashed_again = not produced.rejected
    assert not (relocked and slashed_again), (
        f"BOB slashed twice for one offence: stake {stake_before} -> "
        f"{c.state.account(pub(BOB)).stake}"
    )


def test_a_receipt_pays_once_even_after_the_escrow_left_the_state() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=2, expire_at=6, per_payee=100))  # block 1
    c.until(2)
    c.ok(
        tx.claim(
            BOB,
            CHAIN,
            0,
            job_id=JOB,
            award=award(ALICE, BOB, 100),
            receipt=receipt(ALICE, BOB),
            unseal_key=RECEIPT_KEY,
            expiry_height=c.height + 10,
        )
    )  # block 3
    c.until(6)
    c.ok(tx.refund(ALICE, CHAIN, 1, job_id=JOB, expiry_height=c.height + 10))  # block 7
    c.until(7 + RETAIN)
    assert c.state.escrow(JOB) is None
    c.block(c.lock(ALICE, 300, claim_at=c.height + 1, expire_at=c.height + 9, per_payee=100))
    c.until(c.height + 1)
    again = tx.claim(
        BOB,
        CHAIN,
        c.seq(BOB),
        job_id=JOB,
        award=award(ALICE, BOB, 100),
        receipt=receipt(ALICE, BOB),
        unseal_key=RECEIPT_KEY,
        expiry_height=c.height + 10,
    )
    produced = c.block(again)
    assert produced.rejected, "one Award and Receipt paid BOB twice"


def test_evidence_is_taken_until_the_block_before_the_prune_height_and_refused_from_it() -> None:
    """A slash and an attestation race the prune height: the last block before it still
    takes them, the block at it refuses them, and the chain's invariants hold either way."""
    c = Chain.new()
    c.ok(
        tx.stake(BOB, CHAIN, 0, amount=1000, expiry_height=10),
        c.lock(ALICE, 300, claim_at=2, expire_at=50, per_payee=100),
    )  # block 1
    c.ok(settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 100}, expiry_height=10))  # 2
    prune_at = 50 + RETAIN  # its expiry, not its closing, sets it
    c.until(prune_at - 2)
    c.ok(_slash_bob(c, _conflict()))  # block prune_at - 1
    assert c.state.escrow(JOB) is not None
    # the block at the prune height: the escrow is gone before its transactions
    attest = tx.attest(
        ALICE, CHAIN, 2, job_id=JOB, subject=pub(BOB), positive=False, expiry_height=c.height + 9
    )
    c.rejects(attest, ledger.EscrowError)
    assert c.state.height == prune_at and c.state.escrow(JOB) is None
    c.rejects(_slash_bob(c, [result(BOB, b"x"), result(BOB, b"y")]), ledger.BadEvidence)
    ledger.check_invariants(c.state)


def test_a_job_cannot_be_locked_again_in_the_block_that_prunes_it_and_all_agree(
    tmp_path: Path,
) -> None:
    """In the block at the prune height the escrow is gone, and a new lock of its JobSpec
    is refused (the JobSpec's escrow expiry has passed: a job's escrow never leaves the
    state before then); replicas replaying the chain, and a store reopened from disk, hold
    the same state."""
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))  # block 1
    c.ok(settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 100}, expiry_height=30))  # 2
    c.until(9 + RETAIN - 1)
    h = c.height + 1  # the prune height
    relock = tx.lock(
        ALICE,
        CHAIN,
        2,
        job_id=JOB,
        amount=200,
        claim_height=h + 1,
        escrow_expiry=h + 3,
        max_per_payee=100,
        max_payees=2,
        spec=job_spec(ALICE).raw,
        expiry_height=h + 5,
    )
    assert "has passed" in c.rejects(relock, ledger.EscrowError)
    assert c.state.height == h and c.state.escrow(JOB) is None
    assert ledger._state.ESCROW_PREFIX + JOB in c.state.removed
    assert c.state.root == ledger._state.compute_root(c.state.leaves())
    state = ledger.State.from_genesis(genesis())
    path = tmp_path / "ledger.sqlite"
    with ledger.LedgerStore.open(path, genesis()) as store:
        for raw in c.blocks:
            state = ledger.apply_block(state, raw)
            store.commit(ledger.decode_block(raw, genesis()), state)
            assert state.root == ledger._state.compute_root(state.leaves())
    with ledger.LedgerStore.open(path, genesis()) as store:
        assert store.state.root == c.state.root == state.root
        assert dict(store.state.leaves()) == dict(c.state.leaves())
    held, issued = c.state.conservation()
    assert held == issued


def test_a_replayed_lock_cannot_reopen_a_pruned_job() -> None:
    """Anyone holding the requester's original lock transaction (it was in a block) sends
    it again once the escrow has left the state: its sequence number is used, it is
    refused, and nothing is locked (only the requester can sign a new lock)."""
    c = Chain.new()
    lock = tx.lock(
        ALICE,
        CHAIN,
        0,
        job_id=JOB,
        amount=300,
        claim_height=5,
        escrow_expiry=100,
        max_per_payee=100,
        max_payees=2,
        spec=job_spec(ALICE).raw,
        expiry_height=900,  # the transaction itself valid long after
    )
    c.ok(lock)  # block 1
    c.ok(settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 100}, expiry_height=30))
    c.until(100 + RETAIN)
    assert c.state.escrow(JOB) is None
    balance = c.state.balance(pub(ALICE))
    c.rejects(lock, ledger.SequenceError)
    assert c.state.escrow(JOB) is None and c.state.balance(pub(ALICE)) == balance
