"""Closed escrows leave the state once their retention is over, so that a long-running
ledger's memory follows its open work and its accounts, not every job it ever saw."""

from __future__ import annotations

from pathlib import Path

import pytest

import ledger
import ledger._state
from ledger import tx

from ..keys import pub
from .helpers import ALICE, BOB, CHAIN, JOB, RECEIPT_KEY, Chain, genesis, settle

RETAIN = 100  # a lock's expiry may be this far below its JobSpec's (100 here)


@pytest.fixture(autouse=True)
def short_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger._state, "ESCROW_RETENTION", RETAIN)


def settled() -> Chain:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))  # block 1
    c.ok(settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 100}, expiry_height=30))
    return c


def test_a_settled_escrow_stays_for_its_retention_then_leaves_the_state() -> None:
    c = settled()
    e = c.state.escrow(JOB)
    assert e is not None and e.closed_height == 2 and e.prune_height == 9 + RETAIN
    c.until(9 + RETAIN - 2)
    assert c.state.escrow(JOB) is not None
    # attestations still name it until then (this is the block before the prune height)
    c.ok(tx.attest(ALICE, CHAIN, 2, job_id=JOB, subject=pub(BOB), positive=True, expiry_height=400))
    c.ok()  # the block at the prune height
    assert c.state.height == 9 + RETAIN
    assert c.state.escrow(JOB) is None
    assert ledger._state.ESCROW_PREFIX + JOB in c.state.removed
    # the root is the root of what is left, and nothing was created or destroyed
    assert c.state.root == ledger._state.compute_root(c.state.leaves())
    ledger.check_invariants(c.state)
    late = tx.attest(
        BOB, CHAIN, 0, job_id=JOB, subject=pub(ALICE), positive=False, expiry_height=400
    )
    c.rejects(late, ledger.LedgerError)


def test_an_open_escrow_is_never_removed_and_its_refund_starts_its_retention() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=3, expire_at=5, per_payee=100))
    c.until(5 + RETAIN + 5)
    e = c.state.escrow(JOB)
    assert e is not None and e.is_open  # past expiry, still owed to its owner
    c.ok(tx.refund(ALICE, CHAIN, 1, job_id=JOB, expiry_height=c.height + 10))
    closed = c.height
    c.until(closed + RETAIN - 1)
    assert c.state.escrow(JOB) is not None
    c.ok()
    assert c.state.escrow(JOB) is None
    assert c.state.balance(pub(ALICE)) == 1_000_000


def test_a_replica_and_a_reopened_store_agree_on_the_pruned_state(tmp_path: Path) -> None:
    c = settled()
    c.until(9 + RETAIN + 2)
    # replaying every block from genesis gives the same states (what verify does)
    state = ledger.State.from_genesis(genesis())
    for raw in c.blocks:
        state = ledger.apply_block(state, raw)
    assert state.root == c.state.root and state.escrow(JOB) is None
    # a store that commits the blocks forgets the escrow's leaf, and loads the same root
    path = tmp_path / "ledger.sqlite"
    with ledger.LedgerStore.open(path, genesis()) as store:
        state = store.state
        for raw in c.blocks:
            state = ledger.apply_block(state, raw)
            store.commit(ledger.decode_block(raw, genesis()), state)
    with ledger.LedgerStore.open(path, genesis()) as store:
        assert store.state.root == c.state.root
        assert store.state.escrow(JOB) is None
        assert dict(store.state.leaves()) == dict(c.state.leaves())


def test_a_settled_escrow_stays_until_its_expiry_and_its_job_is_never_locked_again() -> None:
    from .helpers import award, job_spec, receipt

    c = Chain.new()
    spec = job_spec(ALICE, b"long")  # its escrow expiry height is 100
    job = spec.id
    lock = c.lock(ALICE, 300, claim_at=2, expire_at=40, per_payee=100, job=job, spec=spec.raw)
    c.ok(lock)
    c.ok(settle(ALICE, CHAIN, 1, job_id=job, payouts={pub(BOB): 100}, expiry_height=30))
    c.until(2 + RETAIN + 5)
    assert c.state.escrow(job) is not None  # closed long ago, but not yet expired
    claim = tx.claim(
        BOB,
        CHAIN,
        c.seq(BOB),
        job_id=job,
        award=award(ALICE, BOB, 100, job=job),
        receipt=receipt(ALICE, BOB, job=job),
        unseal_key=RECEIPT_KEY,
        expiry_height=c.height + 10,
    )
    c.rejects(claim, ledger.LedgerError)
    c.until(40 + RETAIN)
    assert c.state.escrow(job) is None
    # the same JobSpec can never be locked again: its escrow expiry has passed
    again = c.lock(
        ALICE,
        300,
        claim_at=c.height + 2,
        expire_at=c.height + 9,
        per_payee=100,
        job=job,
        spec=spec.raw,
    )
    assert "has passed" in c.rejects(again, ledger.EscrowError)
    assert c.state.balance(pub(BOB)) == 1_000_000 + 100  # paid once, by the settle
