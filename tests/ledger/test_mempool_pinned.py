"""Mempool admission rules the mutation run (scripts/mutate.py) found unpinned: each test
sends a transaction that passes every other admission check, so the one pinned decides."""

from __future__ import annotations

import pytest

import ledger
from ledger import tx

from ..keys import key, pub
from .helpers import ALICE, CAROL, CHAIN, JOB, RECEIPT_KEY, Chain, award, receipt, settle


def _unfunded_claim(c: Chain, provider_name: str, job: bytes = JOB) -> bytes:
    """A claim by a fresh key with ALICE's (the escrow owner's) Award and Receipt."""
    who = key(provider_name)
    return tx.claim(
        who,
        CHAIN,
        0,
        job_id=job,
        award=award(ALICE, who, 100, job=job),
        receipt=receipt(ALICE, who, job=job),
        unseal_key=RECEIPT_KEY,
        expiry_height=c.height + 5,
    ).raw


def test_an_unfunded_claim_needs_an_open_escrow() -> None:
    c = Chain.new()
    pool = ledger.Mempool(CHAIN)
    with pytest.raises(ledger.MempoolRejected, match="open escrow"):
        pool.add(_unfunded_claim(c, "fresh-1"), c.state)  # no escrow for the job at all
    c.ok(c.lock(ALICE, 300, claim_at=1, expire_at=20, per_payee=100, payees=2))
    pool.add(_unfunded_claim(c, "fresh-1"), c.state)  # open: admitted
    paid = {pub(CAROL): 100}
    c.ok(settle(ALICE, CHAIN, 1, job_id=JOB, payouts=paid, expiry_height=c.height + 5))
    e = c.state.escrow(JOB)
    assert e is not None and not e.is_open
    with pytest.raises(ledger.MempoolRejected, match="open escrow"):
        pool.add(_unfunded_claim(c, "fresh-2"), c.state)  # closed: it could never apply
    assert len(pool) == 1
    assert pub(key("fresh-2")) not in {v.sender for v in pool.select(c.state, 10)}


def test_removing_a_transaction_that_is_not_pending_changes_nothing() -> None:
    # ``remove`` is public: removing one it never held (or one already gone) is a no-op,
    # not an error out of the producer's block loop.
    c = Chain.new()
    pool = ledger.Mempool(CHAIN)
    mine = ledger.verify_tx(c.transfer(ALICE, CAROL, 5).raw, CHAIN)
    never_held = ledger.verify_tx(c.transfer(CAROL, ALICE, 5).raw, CHAIN)
    pool.add_verified(mine, c.state)
    pool.remove(never_held)  # CAROL has nothing pending
    assert len(pool) == 1 and mine.id in pool
    pool.remove(mine)
    pool.remove(mine)  # twice
    assert len(pool) == 0


def test_an_unfunded_plain_claim_is_admitted_from_the_block_its_window_opens() -> None:
    # (mutation run, round 16: `height < e.claim_height` as `<=` went unnoticed) the next
    # block is the escrow's claim height: admitted; one block earlier: refused.
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=c.height + 3, expire_at=20, per_payee=100, payees=2))
    pool = ledger.Mempool(CHAIN)
    with pytest.raises(ledger.MempoolRejected, match="claims open at height"):
        pool.add(_unfunded_claim(c, "fresh-early"), c.state)
    c.ok()  # the next block is the claim height now
    pool.add(_unfunded_claim(c, "fresh-on-time"), c.state)
    assert len(pool) == 1
