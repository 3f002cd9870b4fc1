"""A claim intent with a sealed receipt (review round 2, D1): the ledger takes such a claim
only up to the receipt's ``claim_by``, so the intent is signed again until then, and ends,
not applied, once the chain is past it."""

from __future__ import annotations

import ledger
from node.ledger import Intent, IntentBook, Resolved, Submit

from ...keys import pub
from ...ledger.helpers import ALICE, BOB, JOB, award, receipt

ME = pub(BOB)


class Chain:
    def __init__(self, height: int, escrow: ledger.Escrow) -> None:
        self.height = height
        self.escrows = {JOB: escrow}

    def next_seq(self, account: bytes) -> int:
        return 0

    def escrow(self, job_id: bytes) -> ledger.Escrow | None:
        return self.escrows.get(job_id)


def _kinds(actions: list[Submit | Resolved]) -> list[str]:
    return [f"{type(a).__name__}:{a.intent.kind}" for a in actions]


def test_a_sealed_claim_is_retried_up_to_its_claim_by_and_then_ends() -> None:
    escrow = ledger.Escrow(pub(ALICE), 1000, 1000, 80, 100, 1000, 1)
    sealed = receipt(ALICE, BOB, at_once=True, claim_by=14)
    claim = ledger.Claim(JOB, award(ALICE, BOB, 100), sealed, bytes(32))
    book, chain = IntentBook(ME), Chain(10, escrow)
    book.add(intent := Intent.of(claim, 10))
    book.signed(intent.key, seq=0, tx_expiry=12)
    chain.height = 13  # its transaction can no longer apply: signed again, before claim_height
    assert _kinds(book.on_block(chain)) == ["Submit:claim"]
    book.signed(intent.key, seq=1, tx_expiry=14)
    chain.height = 15  # past claim_by: no claim with this receipt can land any more
    [resolved] = book.on_block(chain)
    assert isinstance(resolved, Resolved) and not resolved.applied
    assert "claim_by" in resolved.reason
    # A plain receipt's claim is not bound by it: it waits for the claim window.
    plain = ledger.Claim(JOB, award(ALICE, BOB, 100), receipt(ALICE, BOB), bytes(32))
    book.add(intent := Intent.of(plain, 15))
    book.signed(intent.key, seq=2, tx_expiry=16)
    chain.height = 20  # lost, and past 14: it waits for the claim window all the same
    assert book.on_block(chain) == []
    chain.height = 80
    assert _kinds(book.on_block(chain)) == ["Submit:claim"]


def test_a_claim_kept_over_a_restart_is_signed_again_at_once() -> None:
    """Its transaction took no sequence number (``ledger.UNSEQUENCED``) and the escrow takes
    one claim of ours, so after a restart it is signed again at once; waiting for the lost
    transaction's expiry (30 blocks) would pass the sealed receipt's ``claim_by``."""
    escrow = ledger.Escrow(pub(ALICE), 1000, 1000, 80, 100, 1000, 1)
    sealed = receipt(ALICE, BOB, at_once=True, claim_by=14)
    claim = ledger.Claim(JOB, award(ALICE, BOB, 100), sealed, bytes(32))
    before = IntentBook(ME)
    before.add(intent := Intent.of(claim, 10))
    before.signed(intent.key, seq=ledger.UNSEQUENCED, tx_expiry=40)
    chain = Chain(11, escrow)
    assert before.on_block(chain) == []  # it may still land: no second one
    after = IntentBook(ME, [intent])  # the same intent, read back after a restart
    assert _kinds(after.on_block(chain)) == ["Submit:claim"]
    # A numbered transaction kept over a restart still waits for its expiry.
    refund = Intent.of(ledger.Refund(JOB), 10)
    refund.seq, refund.tx_expiry = 3, 130
    chain.height = 101  # past the escrow's expiry: a refund is due
    assert IntentBook(ME, [refund]).on_block(chain) == []


def test_a_claim_refused_only_for_room_is_tried_at_the_next_block_and_never_gives_up() -> None:
    """Review round 14, R14-2: fresh keys' claims kept the pool full, each refusal of a
    plain claim counted, and after 8 (about 40 blocks) it gave up for good while its escrow
    stayed open to height 99: the provider lost a silent requester's payment."""
    escrow = ledger.Escrow(pub(ALICE), 1000, 1000, 10, 100, 1000, 1)
    plain = ledger.Claim(JOB, award(ALICE, BOB, 100), receipt(ALICE, BOB), bytes(32))
    book, chain = IntentBook(ME), Chain(10, escrow)
    book.add(intent := Intent.of(plain, 10))
    for height in range(10, 40):
        chain.height = height
        book.signed(intent.key, seq=ledger.UNSEQUENCED, tx_expiry=height + 30)
        full = "transaction rejected: the mempool is full; retry later or raise the fee"
        assert book.refused(intent.key, full, height) == []
        assert _kinds(book.on_block(Chain(height + 1, escrow))) == ["Submit:claim"]
    assert intent.refusals == 0
    # A refusal for any other reason still counts, and is tried 5 blocks later.
    book.signed(intent.key, seq=ledger.UNSEQUENCED, tx_expiry=70)
    book.refused(intent.key, "transaction rejected: escrow error", 40)
    assert intent.refusals == 1 and book.on_block(Chain(41, escrow)) == []


def test_a_claim_refused_for_room_offers_a_rising_fee_out_of_its_payout() -> None:
    """Review round 15, R15-2: at fee 0, a pool full of free claims kept a busy honest
    requester's claims (one round of the block at a time) past their claim_by. Refused for
    room, a claim now offers 1, 2, 4, ... (the node's fee at least), up to a tenth of its
    payout, which pays it; any other refusal starts again from the node's fee."""
    claim = ledger.Claim(JOB, award(ALICE, BOB, 100), receipt(ALICE, BOB), bytes(32))
    book = IntentBook(ME)
    book.add(intent := Intent.of(claim, 10))
    assert book.fee_for(intent, 0) == 0
    offered = []
    for height in range(10, 16):
        book.refused(intent.key, "transaction rejected: the mempool is full; retry", height)
        offered.append(book.fee_for(intent, 0))
    assert offered == [1, 2, 4, 8, 10, 10]  # a tenth of the payout (100) at most
    assert book.fee_for(intent, 3) == 10
    book.refused(intent.key, "transaction rejected: escrow error", 16)
    assert book.fee_for(intent, 0) == 0 and book.fee_for(intent, 3) == 3
    lock = Intent.of(ledger.Refund(JOB), 10)  # only claims pay it out of a payout
    book.add(lock)
    book.refused(lock.key, "transaction rejected: the mempool is full; retry", 16)
    assert book.fee_for(lock, 0) == 0
