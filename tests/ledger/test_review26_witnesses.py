"""Round 26, H1: a ``failed_verification`` slash takes no more than each provider of the
outvoting majority (its witnesses) has bonded, and an unbonded majority's takes nothing
and counts no failure: the majority is whoever the paying requester chose, and two free
keys paid by their own requester framed an honest veteran for its whole stake."""

from __future__ import annotations

import ledger
from ledger import tx

from ..keys import key, pub
from .helpers import ALICE, BOB, CAROL, CHAIN, JOB, Chain, settle, slash_bob_outvoted

DAVE = key("dave")


def _outvoted(dave_stake: int) -> Chain:
    """BOB staked 500, CAROL 200, DAVE ``dave_stake``; ALICE's job paid CAROL and DAVE."""
    c = Chain.new()
    c.ok(
        tx.stake(BOB, CHAIN, 0, amount=500, expiry_height=9),
        tx.stake(CAROL, CHAIN, 0, amount=200, expiry_height=9),
        tx.transfer(ALICE, CHAIN, 0, to=pub(DAVE), amount=10 + dave_stake, expiry_height=9),
    )
    if dave_stake:
        c.ok(tx.stake(DAVE, CHAIN, 0, amount=dave_stake, expiry_height=9))
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100, payees=3))
    paid = {pub(CAROL): 100, pub(DAVE): 100}
    c.ok(settle(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, payouts=paid, expiry_height=20))
    return c


def test_a_slash_takes_no_more_than_its_least_bonded_witness() -> None:
    c = _outvoted(dave_stake=40)
    slash = slash_bob_outvoted(c)
    assert ledger.check_slash_evidence(c.state, ledger.verify_tx(slash.raw, CHAIN).payload) == 40
    c.ok(slash)
    assert c.state.account(pub(BOB)).stake == 460
    assert c.state.provider_record(pub(BOB)).failures == 4


def test_an_unbonded_majority_slashes_nothing_and_leaves_the_evidence_unused() -> None:
    # (round 27, I3: marked used, it barred a report with other, bonded winners)
    c = _outvoted(dave_stake=0)
    c.ok(slash_bob_outvoted(c))
    assert c.state.account(pub(BOB)).stake == 500
    assert c.state.provider_record(pub(BOB)).failures == 0
    assert c.state.burned == 0
    assert pub(BOB) not in c.state.escrow(JOB).slashed  # type: ignore[union-attr]


def test_a_witness_unstaking_in_the_slashs_block_still_holds_what_it_unbonds() -> None:
    # (round 27, I3: counted by its bonded stake alone, a witness unstaking in the block
    # where the slash landed made an honest slash take nothing)
    c = _outvoted(dave_stake=200)
    c.ok(
        tx.unstake(DAVE, CHAIN, c.seq(DAVE), amount=200, expiry_height=c.height + 5),
        slash_bob_outvoted(c),
    )
    assert c.state.account(pub(DAVE)).stake == 0
    assert c.state.account(pub(BOB)).stake == 400


def test_a_coordinator_leaves_out_witness_stake_released_before_its_slash_lands() -> None:
    # Round 28, J1: counted with unbonding released before the slash could land, a
    # cheat's own witnesses made its slash a no-op that held its place in flight, and
    # honest reports of it were answered "slash pending".
    c = _outvoted(dave_stake=200)
    c.ok(tx.unstake(DAVE, CHAIN, c.seq(DAVE), amount=200, expiry_height=c.height + 5))
    ((release, amount),) = c.state.account(pub(DAVE)).unbonding
    assert amount == 200
    slash = ledger.verify_tx(slash_bob_outvoted(c).raw, CHAIN).payload
    assert ledger.check_slash_evidence(c.state, slash, released_after=release - 1) == 200
    assert ledger.check_slash_evidence(c.state, slash, released_after=release) == 0
