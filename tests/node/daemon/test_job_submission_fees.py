"""What job submission keeps back for the jobs already submitted (review round 15, R15-5):
each pending lock's escrow and two fees (its lock's, its settle's), and each open escrow's
settle or refund fee. Counting only the escrows, two jobs that each passed the check left
one fee for two settles: the second settle, and then its refund, were refused for good."""

from __future__ import annotations

from types import SimpleNamespace

import ledger
from node.daemon._job_submission import locked_pending

from ...keys import pub
from ...ledger.helpers import ALICE, BOB, CHAIN, JOB, Chain, job_spec, settle


def _job(job_id: bytes, phase: str, price: int = 100, budget: int = 2) -> SimpleNamespace:
    return SimpleNamespace(
        id=job_id, spec=SimpleNamespace(max_price=price), budget=budget, phase=phase, done=None
    )


def test_pending_jobs_keep_back_their_escrows_and_the_fees_still_to_pay() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=8, expire_at=12, per_payee=100))  # JOB: open
    closed = job_spec(ALICE, b"closed")
    lock = ledger.tx.lock(
        ALICE,
        CHAIN,
        c.seq(ALICE),
        job_id=closed.id,
        amount=100,
        claim_height=8,
        escrow_expiry=12,
        max_per_payee=100,
        max_payees=1,
        spec=closed.raw,
        expiry_height=10,
    )
    c.ok(lock)
    c.ok(
        settle(
            ALICE, CHAIN, c.seq(ALICE), job_id=closed.id, payouts={pub(BOB): 100}, expiry_height=10
        )
    )
    locking = job_spec(ALICE, b"locking").id  # its lock not in a block yet
    jobs = {
        JOB: _job(JOB, "running"),
        closed.id: _job(closed.id, "closed"),
        locking: _job(locking, "locking"),
    }
    requester = SimpleNamespace(jobs=jobs)
    assert locked_pending(requester, c.state, fee=10) == 100 * 2 + 2 * 10 + 10  # type: ignore[arg-type]
    assert locked_pending(requester, c.state) == 100 * 2  # type: ignore[arg-type]
