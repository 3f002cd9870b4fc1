"""The mempool against the round-5 review (R5-4, R5-1, R5-6): an unfunded claim is admitted
only if the claim rule would take it, one per sender and escrow; block space is shared
round robin at equal fee; the same signed bytes refused when a block was made are not
admitted again."""

from __future__ import annotations

import nacl.signing
import pytest

import ledger
from ledger import tx

from ..keys import key, pub
from .helpers import CHAIN, COORD, RECEIPT_KEY, award, bid, receipt
from .test_block_budget import INTERVAL_MS, small_spec

PRICE = 100


def commit_of(effects: list[ledger.Effect]) -> ledger.Commit:
    return next(e for e in effects if isinstance(e, ledger.Commit))


def _escrowed(
    requester: nacl.signing.SigningKey, funds: dict[bytes, int], *, max_payees: int = 5
) -> tuple[ledger.Producer, bytes]:
    """A producer whose chain holds one open escrow of ``requester``'s (plain receipts
    claimable only late: sealed ones now), at height 1."""
    g = ledger.make_genesis(CHAIN, [pub(COORD)], {pub(requester): 10_000} | funds)
    producer = ledger.Producer(
        COORD, ledger.State.from_genesis(g), interval_ms=INTERVAL_MS, now_ms=0
    )
    spec = small_spec(requester, 77)
    producer.submit(
        tx.lock(
            requester,
            CHAIN,
            0,
            job_id=spec.id,
            amount=PRICE * max_payees,
            claim_height=500,
            escrow_expiry=600,
            max_per_payee=PRICE,
            max_payees=max_payees,
            spec=spec.raw,
            expiry_height=999,
        ).raw
    )
    assert commit_of(producer.tick(INTERVAL_MS)).state.escrow(spec.id) is not None
    return producer, spec.id


def _claim(
    provider: nacl.signing.SigningKey,
    seq: int,
    job: bytes,
    award_raw: bytes,
    receipt_raw: bytes,
    expiry: int,
) -> bytes:
    return tx.claim(
        provider,
        CHAIN,
        seq,
        job_id=job,
        award=award_raw,
        receipt=receipt_raw,
        unseal_key=RECEIPT_KEY,
        expiry_height=expiry,
    ).raw


# --- R5-4: unfunded claims --------------------------------------------------------------


def test_a_sybil_awarded_once_cannot_fill_an_escrows_unfunded_claim_places_with_junk() -> None:
    # The review's d1_unfunded_claim_slots.py: a key awarded once (genuinely: it bid, was
    # awarded, declined) submitted max_payees claims with its Award and a receipt of its
    # own making; the honest newcomer's sealed claim was refused "as many claims pending
    # as payees" and, retried past its claim_by, never paid.
    requester, sybil, provider = key("requester"), key("sybil"), key("newcomer")
    producer, job = _escrowed(requester, {})
    h = producer.state.height
    genuine_award = award(requester, sybil, PRICE, job, replica=1)
    junk_receipt = receipt(sybil, sybil, job, replica=1, at_once=True, claim_by=h + 4)
    refused = 0
    for seq in range(5):
        with pytest.raises(ledger.MempoolRejected, match="Receipt"):
            producer.submit(_claim(sybil, seq, job, genuine_award, junk_receipt, h + 30))
        refused += 1
    assert refused == 5 and len(producer.mempool) == 0
    sealed = receipt(requester, provider, job, at_once=True, claim_by=h + 4)
    producer.submit(
        _claim(provider, 0, job, award(requester, provider, PRICE, job), sealed, h + 30)
    )
    producer.tick(2 * INTERVAL_MS)
    assert producer.state.account(pub(provider)).balance == PRICE


def test_an_unfunded_sender_has_at_most_one_claim_pending_per_escrow() -> None:
    requester, provider = key("requester"), key("newcomer")
    producer, job = _escrowed(requester, {})
    h = producer.state.height
    genuine = award(requester, provider, PRICE, job)
    sealed = receipt(requester, provider, job, at_once=True, claim_by=h + 4)
    producer.submit(_claim(provider, 0, job, genuine, sealed, h + 30))
    with pytest.raises(ledger.MempoolRejected, match="already pending"):
        producer.submit(_claim(provider, 1, job, genuine, sealed, h + 31))
    assert len(producer.mempool) == 1


@pytest.mark.parametrize(
    ("what", "make"),
    [
        ("a receipt for another replica", lambda r, p, j, h: (0, receipt(r, p, j, replica=1))),
        (
            "a sealed receipt past its claim_by",
            lambda r, p, j, h: (0, receipt(r, p, j, at_once=True, claim_by=h)),
        ),
        ("a plain receipt before the claim window", lambda r, p, j, h: (0, receipt(r, p, j))),
        (
            "a receipt naming another key",
            lambda r, p, j, h: (0, receipt(r, p, j, at_once=True, claim_by=h + 4, key=b"k" * 32)),
        ),
    ],
)
def test_an_unfunded_claim_the_next_block_would_refuse_is_not_admitted(
    what: str, make: object
) -> None:
    requester, provider = key("requester"), key("newcomer")
    producer, job = _escrowed(requester, {})
    h = producer.state.height
    assert callable(make)
    replica, receipt_raw = make(requester, provider, job, h)
    genuine = award(requester, provider, PRICE, job, replica=replica)
    with pytest.raises(ledger.MempoolRejected):
        producer.submit(_claim(provider, 0, job, genuine, receipt_raw, h + 30))
    assert len(producer.mempool) == 0, what


# --- R5-1: round robin at equal fee -----------------------------------------------------


def test_512_accounts_preloading_fee_0_transfers_do_not_keep_a_sealed_claim_out() -> None:
    # The review's a2_claim_starve.py 512 39: ranked by bytes alone, a claim (835 B) came
    # after each account's first four transfers (201 B each): 512 accounts x 4 filled the
    # 2,048 signature checks of every block ahead of it, and 39 pending each (19,968, one
    # pre-load) held it past its claim_by. Round robin puts it after each one's first.
    attackers = [key(f"ring-{i}") for i in range(512)]
    requester, provider = key("requester"), key("newcomer")
    producer, job = _escrowed(requester, {pub(a): 64 for a in attackers}, max_payees=1)
    h = producer.state.height
    for seq in range(39):
        for i, a in enumerate(attackers):
            to = pub(attackers[(i + 1) % len(attackers)])
            producer.submit(tx.transfer(a, CHAIN, seq, to=to, amount=1, expiry_height=h + 30).raw)
    assert len(producer.mempool) == 512 * 39
    sealed = receipt(requester, provider, job, at_once=True, claim_by=h + 4)
    claim = _claim(provider, 0, job, award(requester, provider, PRICE, job), sealed, h + 30)
    producer.submit(claim)
    block = commit_of(producer.tick(2 * INTERVAL_MS)).block.message
    assert claim in block.txs  # the next block
    assert producer.state.account(pub(provider)).balance == PRICE
    assert len(block.txs) > 2000  # beside the flood, not instead of it


# --- R5-6: the same signed bytes refused at block time ----------------------------------


def _bad_settle(owner: nacl.signing.SigningKey, job: bytes, expiry: int) -> bytes:
    """A 2-payout settle admitted (its signatures all verify) and refused when the block is
    made, for a state rule: each payee is paid above the escrow's per-payee limit. (A bad
    Bid signature, the review's case, is refused at admission since round 6: see
    tests/ledger/test_review6_settle_cost.py.)"""
    payees = [key("payee-0"), key("payee-1")]
    return tx.settle(
        owner,
        CHAIN,
        1,
        job_id=job,
        payouts={pub(p): PRICE + 1 for p in payees},
        bids={pub(p): bid(p, PRICE + 1, job=job) for p in payees},
        expiry_height=expiry,
    ).raw


def test_a_bad_payout_settle_refused_at_block_time_is_not_admitted_again() -> None:
    # The review's g1_bad_settle_replay.py: the refused settle consumed no sequence number
    # and no fee, so the very same bytes were admitted again after every block (1 check)
    # and refused again (a check per payout Bid), for up to 1,000 blocks.
    requester = key("requester")
    producer, job = _escrowed(requester, {})
    raw = _bad_settle(requester, job, 999)
    producer.submit(raw)
    effects = producer.tick(2 * INTERVAL_MS)
    [dropped] = [e for e in effects if isinstance(e, ledger.TxDropped)]
    assert "per-payee limit" in dropped.reason
    with pytest.raises(ledger.MempoolRejected, match="refused when a block was made"):
        producer.submit(raw)
    assert len(producer.mempool) == 0
    # (a settle signed anew is a new transaction: admitted, and refused at block time)
    producer.submit(_bad_settle(requester, job, 998))


def test_refused_ids_are_remembered_until_their_expiry_and_at_most_a_bound() -> None:
    requester = key("requester")
    producer, job = _escrowed(requester, {})
    producer.mempool.max_refused = 2
    raws = [_bad_settle(requester, job, expiry) for expiry in (900, 901, 902)]
    now = 2 * INTERVAL_MS
    for raw in raws:
        producer.submit(raw)
        producer.tick(now)
        now += INTERVAL_MS
    # the oldest is forgotten (the bound): admitted again; the other two are refused
    for raw in raws[1:]:
        with pytest.raises(ledger.MempoolRejected, match="refused when a block was made"):
            producer.submit(raw)
    producer.submit(raws[0])
    # one is forgotten once its expiry passed (it could not be admitted then anyway)
    producer, job = _escrowed(requester, {})
    producer.submit(_bad_settle(requester, job, 3))
    producer.tick(2 * INTERVAL_MS)
    assert len(producer.mempool._refused) == 1
    producer.tick(3 * INTERVAL_MS)
    assert producer.state.height == 3 and not producer.mempool._refused
