"""Money intents against the round-5 review (R5-4 and its "also noted" lock): a sealed
claim refused or evicted is signed again at the next block, not ``RETRY_BLOCKS`` later
(past its ``claim_by``: one refusal was final); a lock refused only because the mempool was
full is signed again instead of failing its job."""

from __future__ import annotations

import nacl.signing
import pytest

import ledger
from ledger import tx
from node.ledger import Intent, IntentBook, Resolved, Submit
from node.ledger._intents import EVICTED, MAX_REFUSALS, POOL_FULL

from ...keys import key, pub
from ...ledger.helpers import ALICE, BOB, CHAIN, COORD, JOB, RECEIPT_KEY, award, receipt
from ...ledger.test_block_budget import INTERVAL_MS, small_spec

PRICE = 100


class Chain:
    def __init__(self, height: int, escrow: ledger.Escrow | None) -> None:
        self.height = height
        self.escrows = {JOB: escrow} if escrow is not None else {}

    def next_seq(self, account: bytes) -> int:
        return 0

    def escrow(self, job_id: bytes) -> ledger.Escrow | None:
        return self.escrows.get(job_id)


def _kinds(actions: list[Submit | Resolved]) -> list[str]:
    return [f"{type(a).__name__}:{a.intent.kind}" for a in actions]


def test_a_refused_sealed_claim_is_signed_again_at_the_next_block_until_its_claim_by() -> None:
    # at claim_by itself it is given up: its next block would be past it (round 61, R61-1)
    escrow = ledger.Escrow(pub(ALICE), 1000, 1000, 80, 100, 1000, 1)
    sealed = receipt(ALICE, BOB, at_once=True, claim_by=14)
    claim = ledger.Claim(JOB, award(ALICE, BOB, 100), sealed, RECEIPT_KEY)
    book, chain = IntentBook(pub(BOB)), Chain(10, escrow)
    intent = Intent.of(claim, 10)
    assert _kinds(book.add(intent)) == ["Submit:claim"]
    for h in (10, 11, 12, 13):  # refused (or evicted) each time: tried again each block
        chain.height = h
        assert book.refused(intent.key, "the mempool is full; retry later", h) == []
        chain.height = h + 1
        actions = book.on_block(chain)
        if h + 1 < 14:  # its next block, h + 2, still within claim_by
            assert _kinds(actions) == ["Submit:claim"], h
        else:
            [resolved] = actions
            assert isinstance(resolved, Resolved) and "claim_by" in resolved.reason


def test_a_sealed_claim_refused_by_a_full_pool_is_paid_once_the_pool_has_room() -> None:
    # The pool is full of fee-1 transfers when the newcomer's fee-0 sealed claim comes:
    # refused. Before, its intent signed it again RETRY_BLOCKS (5) blocks later, past the
    # receipt's claim_by (4 blocks): the provider did the work and was never paid.
    requester, filler, provider = key("requester"), key("filler"), key("newcomer")
    g = ledger.make_genesis(CHAIN, [pub(COORD)], {pub(requester): 10_000, pub(filler): 1_000})
    producer = ledger.Producer(
        COORD,
        ledger.State.from_genesis(g),
        interval_ms=INTERVAL_MS,
        now_ms=0,
        mempool=ledger.Mempool(CHAIN, max_size=4),
    )
    spec = small_spec(requester, 5)
    producer.submit(
        tx.lock(
            requester,
            CHAIN,
            0,
            job_id=spec.id,
            amount=PRICE,
            claim_height=500,
            escrow_expiry=600,
            max_per_payee=PRICE,
            max_payees=1,
            spec=spec.raw,
            expiry_height=999,
        ).raw
    )
    now = INTERVAL_MS
    producer.tick(now)
    h = producer.state.height
    for seq in range(4):
        producer.submit(
            tx.transfer(filler, CHAIN, seq, to=pub(COORD), amount=1, fee=1, expiry_height=999).raw
        )
    sealed = receipt(requester, provider, spec.id, at_once=True, claim_by=h + 4)
    payload = ledger.Claim(spec.id, award(requester, provider, PRICE, spec.id), sealed, RECEIPT_KEY)
    book = IntentBook(pub(provider))
    seq = 0

    def carry_out(actions: list[Submit | Resolved]) -> None:
        nonlocal seq
        for action in actions:
            if not isinstance(action, Submit):
                continue
            signed = tx.make(provider, CHAIN, seq, action.intent.decoded(), expiry_height=h + 30)
            book.signed(action.intent.key, seq, h + 30)
            try:
                producer.submit(signed.raw)
            except ledger.TransactionRejected as exc:
                book.refused(action.intent.key, str(exc), producer.state.height)
                continue
            seq += 1

    carry_out(book.add(Intent.of(payload, h)))
    assert len(producer.mempool) == 4  # refused: the pool was full
    for _ in range(4):
        now += INTERVAL_MS
        producer.tick(now)
        carry_out(book.on_block(producer.state))
        if producer.state.account(pub(provider)).balance:
            break
    assert producer.state.account(pub(provider)).balance == PRICE
    assert producer.state.height <= h + 4


def _lock_intent(height: int = 10) -> Intent:
    payload = ledger.Lock(JOB, 1000, 80, 100, 1000, 1, b"spec")
    return Intent.of(payload, height, expiry_cap=100)


@pytest.mark.parametrize(
    "reason",
    [
        "the mempool is full; retry later or raise the fee",
        "dropped from the block: evicted from the full mempool (by a higher fee, or at equal "
        "fee from the sender holding the most of it); retry later or raise the fee",
    ],
)
def test_a_lock_refused_only_for_a_full_pool_is_signed_again_not_failed(reason: str) -> None:
    book, chain = IntentBook(pub(ALICE)), Chain(10, None)
    intent = _lock_intent()
    assert _kinds(book.add(intent)) == ["Submit:lock"]
    book.signed(intent.key, seq=0, tx_expiry=40)
    assert book.refused(intent.key, reason, 10) == []  # before: Resolved (the job failed)
    chain.height = 11
    assert _kinds(book.on_block(chain)) == ["Submit:lock"]
    # bounded: after MAX_REFUSALS such refusals the lock fails, as does one refused for
    # anything else (at once)
    for n in range(2, MAX_REFUSALS):
        assert book.refused(intent.key, reason, 10 + n) == []
    [failed] = book.refused(intent.key, reason, 20)
    assert isinstance(failed, Resolved) and not failed.applied
    book.add(other := _lock_intent(20))
    [failed] = book.refused(other.key, "balance 3 cannot pay the fee 5", 20)
    assert isinstance(failed, Resolved) and not failed.applied


def test_the_intents_read_the_mempools_own_words_for_a_full_pool() -> None:
    # The wire carries only the text: the intents must match what the pool says.
    hog, other = key("hog"), key("other")
    g = ledger.make_genesis(CHAIN, [pub(COORD)], {pub(hog): 100, pub(other): 100})
    producer = ledger.Producer(
        COORD,
        ledger.State.from_genesis(g),
        interval_ms=INTERVAL_MS,
        now_ms=0,
        mempool=ledger.Mempool(CHAIN, max_size=2),
    )

    def transfer(k: nacl.signing.SigningKey, seq: int) -> bytes:
        return tx.transfer(k, CHAIN, seq, to=pub(COORD), amount=1, expiry_height=99).raw

    producer.submit(transfer(hog, 0))
    producer.submit(transfer(hog, 1))
    with pytest.raises(ledger.MempoolRejected) as refused:
        producer.submit(transfer(hog, 2))
    assert POOL_FULL in str(refused.value)
    producer.submit(transfer(other, 0))  # evicts the hog's last
    [evicted] = producer.take_dropped()
    assert EVICTED in evicted.reason
