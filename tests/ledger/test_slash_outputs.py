"""Slash evidence is outputs a verdict compared (review round 16, R16B-1): a requester that
withheld a staked provider's job data (its run "crashed", committing to nothing) had it
slashed on the agreeing Results of two honest providers it paid. A failed run is no wrong
answer, and outputs compare only within one determinism class."""

from __future__ import annotations

import pytest

import ledger
import protocol
from ledger import tx

from ..keys import key, pub
from .helpers import ALICE, BOB, CAROL, CHAIN, COORD, JOB, Chain, result, settle

DAVE = key("dave")
RIGHT = b"\x05" * 32


def _settled() -> Chain:
    """BOB staked; ALICE's job settled paying CAROL and DAVE, who agree (and have bonded
    what a slash takes)."""
    c = Chain.new()
    c.ok(
        tx.stake(BOB, CHAIN, 0, amount=500, expiry_height=9),
        tx.stake(CAROL, CHAIN, 0, amount=200, expiry_height=9),
        tx.transfer(ALICE, CHAIN, 0, to=pub(DAVE), amount=210, expiry_height=9),
    )
    c.ok(tx.stake(DAVE, CHAIN, 0, amount=200, expiry_height=9))
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100, payees=3))
    paid = {pub(CAROL): 100, pub(DAVE): 100}
    c.ok(settle(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, payouts=paid, expiry_height=20))
    return c


def _slash(c: Chain, evidence: list[bytes], reason: str = "failed_verification") -> bytes:
    return tx.slash(
        COORD,
        CHAIN,
        c.seq(COORD),
        offender=pub(BOB),
        amount=100,
        reason=reason,
        evidence=evidence,
        expiry_height=c.height + 9,
    ).raw


def _majority() -> list[bytes]:
    return [
        result(CAROL, b"good", commitment=RIGHT, replica=1),
        result(DAVE, b"good", commitment=RIGHT, replica=2),
    ]


@pytest.mark.parametrize("outcome", ["crashed", "timeout", "memory_limit", "runtime_error"])
def test_a_failed_run_outvoted_by_a_paid_majority_is_no_evidence(outcome: str) -> None:
    c = _settled()
    before = c.state.reputation(pub(BOB))
    failed = result(BOB, b"", commitment=bytes(32), outcome=outcome)
    raw = _slash(c, [failed, *_majority()])
    why = "a failed run is no wrong answer"
    with pytest.raises(ledger.BadEvidence, match=why):  # what a coordinator checks first
        ledger.check_slash_evidence(
            c.state, ledger.Slash(pub(BOB), 100, "failed_verification", (failed, *_majority()))
        )
    with pytest.raises(ledger.MalformedTransaction, match=why):  # the mempool
        ledger.Mempool(CHAIN).add(raw, c.state)
    produced = c.block(protocol.decode(raw, CHAIN, protocol.Transaction))  # the block
    assert [type(e) for _, e in produced.rejected] == [ledger.BadEvidence]
    assert c.state.account(pub(BOB)).stake == 500
    assert c.state.reputation(pub(BOB)) == before


def test_an_ok_result_with_no_commitment_is_no_evidence_either() -> None:
    c = _settled()
    blank = result(BOB, b"bad", commitment=bytes(32))
    with pytest.raises(ledger.BadEvidence, match="with a commitment"):
        ledger.check_slash_evidence(
            c.state, ledger.Slash(pub(BOB), 100, "failed_verification", (blank, *_majority()))
        )


def test_outputs_of_another_determinism_class_are_no_evidence() -> None:
    c = _settled()
    other = result(BOB, b"bad", determinism_class="ort-1.32.0/cuda/sm90/basic")
    evidence = (other, *_majority())
    with pytest.raises(ledger.BadEvidence, match="one determinism class"):
        ledger.check_slash_evidence(
            c.state, ledger.Slash(pub(BOB), 100, "failed_verification", evidence)
        )
    same_class = result(BOB, b"bad")  # the same wrong output in the majority's class
    c.ok(protocol.decode(_slash(c, [same_class, *_majority()]), CHAIN, protocol.Transaction))
    assert c.state.account(pub(BOB)).stake == 400


def test_conflicting_results_are_two_outputs_not_a_failure_and_a_retry() -> None:
    # R16B-3: a crashed Result and a later ok one for the same replica contradicted on the
    # sealed blob's hash; two ok outputs with different commitments still do.
    c = _settled()
    crashed = result(BOB, b"", commitment=bytes(32), outcome="crashed")
    with pytest.raises(ledger.BadEvidence, match="a failed run is no wrong answer"):
        ledger.check_slash_evidence(
            c.state,
            ledger.Slash(pub(BOB), 100, "conflicting_results", (crashed, result(BOB, b"x"))),
        )
    same = result(BOB, b"x", commitment=RIGHT), result(BOB, b"y", commitment=RIGHT)
    with pytest.raises(ledger.BadEvidence, match="different outputs"):  # one commitment
        ledger.check_slash_evidence(
            c.state, ledger.Slash(pub(BOB), 100, "conflicting_results", same)
        )
    c.ok(
        protocol.decode(
            _slash(c, [result(BOB, b"x"), result(BOB, b"y")], "conflicting_results"),
            CHAIN,
            protocol.Transaction,
        )
    )
    assert c.state.account(pub(BOB)).stake == 400
