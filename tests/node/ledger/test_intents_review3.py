"""A claim intent whose sealed receipt's ``claim_by`` the chain has already passed when the
claim is asked for (review round 3, F5) is resolved at once, never submitted: its
transaction could only be refused in a block, dropping the node's later ones with it."""

from __future__ import annotations

import ledger
from node.ledger import Intent, IntentBook, Resolved, Submit

from ...keys import pub
from ...ledger.helpers import ALICE, BOB, JOB, award, receipt

ME = pub(BOB)


def _claim(claim_by: int) -> ledger.Claim:
    sealed = receipt(ALICE, BOB, at_once=True, claim_by=claim_by)
    return ledger.Claim(JOB, award(ALICE, BOB, 100), sealed, bytes(32))


def test_a_sealed_claim_asked_for_at_or_past_its_claim_by_is_resolved_not_submitted() -> None:
    for claim_by in (0, 9, 10):
        book = IntentBook(ME)
        [action] = book.add(Intent.of(_claim(claim_by), 10))
        assert isinstance(action, Resolved) and not action.applied, claim_by
        assert "claim_by" in action.reason
        assert len(book) == 0


def test_a_sealed_claim_with_its_claim_by_ahead_is_submitted() -> None:
    book = IntentBook(ME)
    [action] = book.add(Intent.of(_claim(11), 10))
    assert isinstance(action, Submit)
    # a plain receipt's claim is not bound by a claim_by
    plain = ledger.Claim(JOB, award(ALICE, BOB, 100), receipt(ALICE, BOB), bytes(32))
    [action] = IntentBook(ME).add(Intent.of(plain, 10))
    assert isinstance(action, Submit)
