"""One slash per (job, offender) pending (round 11, R11-8): the same report sent to two
coordinators must not put a second slash in a block, where it would be refused ("evidence
used once") and drop its coordinator's later transactions behind it."""

from __future__ import annotations

import pytest

import ledger
from ledger import tx

from ..keys import key, pub
from .helpers import ALICE, BOB, CAROL, CHAIN, COORD, JOB, Chain, result, settle

C2 = key("coordinator-2")
DAVE = key("dave")


def _chain() -> Chain:
    g = ledger.make_genesis(
        CHAIN,
        [pub(COORD), pub(C2)],
        {pub(ALICE): 1_000_000, pub(BOB): 1_000_000, pub(CAROL): 1_000_000, pub(DAVE): 210},
        unbonding_delay=3,
        reputation_half_life=10,
    )
    return Chain(ledger.State.from_genesis(g))


def _evidence(c: Chain) -> tuple[bytes, ...]:
    """BOB staked and outvoted on ALICE's settled job by CAROL and DAVE, who have bonded
    what a slash takes: evidence a coordinator may slash on."""
    c.ok(
        tx.stake(BOB, CHAIN, c.seq(BOB), amount=500, expiry_height=c.height + 9),
        tx.stake(CAROL, CHAIN, c.seq(CAROL), amount=200, expiry_height=c.height + 9),
        tx.stake(DAVE, CHAIN, c.seq(DAVE), amount=200, expiry_height=c.height + 9),
    )
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100, payees=3))
    paid = {pub(CAROL): 100, pub(DAVE): 100}
    c.ok(settle(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, payouts=paid, expiry_height=c.height + 5))
    right, wrong = b"\x05" * 32, b"\x06" * 32
    return (
        result(BOB, b"bad", commitment=wrong, replica=0),
        result(CAROL, b"good", commitment=right, replica=1),
        result(DAVE, b"good", commitment=right, replica=2),
    )


def _slash(c: Chain, by: object, evidence: tuple[bytes, ...], seq: int | None = None) -> bytes:
    assert isinstance(by, type(COORD))
    return tx.slash(
        by,
        CHAIN,
        c.seq(by) if seq is None else seq,
        offender=pub(BOB),
        amount=100,
        reason="failed_verification",
        evidence=list(evidence),
        expiry_height=c.height + 20,
    ).raw


def test_a_second_slash_of_one_offender_for_one_job_is_refused_at_admission() -> None:
    c = _chain()
    evidence = _evidence(c)
    pool = ledger.Mempool(CHAIN)
    pool.add(_slash(c, COORD, evidence), c.state)
    with pytest.raises(ledger.MempoolRejected, match="already pending"):
        pool.add(_slash(c, C2, evidence), c.state)  # the same report, the other coordinator
    with pytest.raises(ledger.MempoolRejected, match="already pending"):
        pool.add(_slash(c, COORD, evidence, seq=c.seq(COORD) + 1), c.state)  # or itself again
    # C2 is not dragged: its own next transaction goes in the same block as COORD's slash
    later = tx.mint(C2, CHAIN, c.seq(C2), to=pub(ALICE), amount=1, expiry_height=c.height + 5)
    pool.add(later.raw, c.state)
    chosen = pool.select(c.state, 10)
    assert len(chosen) == 2
    produced = ledger.produce_block(c.state, COORD, chosen)
    assert not produced.rejected, [str(e) for _, e in produced.rejected]
    assert produced.state.account(pub(BOB)).stake == 400


def test_a_slash_that_left_the_pool_frees_its_place() -> None:
    # A fee bump of the same slash replaces it; once it is gone (here: removed, as after a
    # block that refused it), another coordinator's slash of that pair is admitted.
    c = _chain()
    evidence = _evidence(c)
    pool = ledger.Mempool(CHAIN)
    first = ledger.verify_tx(_slash(c, COORD, evidence), CHAIN)
    pool.add_verified(first, c.state)
    pool.remove(first)
    pool.add(_slash(c, C2, evidence), c.state)
    assert len(pool) == 1
