"""Round-7 review R7-3 and R7-5: the edges of R5-6's mend at admission.

R7-3: a pending settle was replaced (a higher fee, same sequence number) again and again,
each version around 64 Bids recombined from more than the mempool remembers, so each cost
65 signature checks at admission; the last one overpaid its escrow and was refused when
the block was made, so no fee was ever paid (one key: 400 replacements a block, ~2 s of the
coordinator's CPU). Now a ``(sender, seq)`` is replaced at most ``MAX_REPLACEMENTS`` (4)
times while pending, and one sender at most 4 times between two blocks, whatever its
sequence numbers; a replacement past either is refused before any Bid is checked.

R7-5: a payload refused as malformed was remembered with its whole reason, which can quote
a carried message's 4,096-character tag (~4.3 KiB each, ~0.27 GiB at the memory's limit).
Now the reason is cut to ``MAX_FAILED_REASON`` (200) characters.
"""

from __future__ import annotations

import hashlib
import tracemalloc

import nacl.signing
import pytest

import ledger
import protocol
from ledger import tx
from ledger._admission import MAX_FAILED_REASON, VerifiedMessages, check_embedded
from ledger._mempool import MAX_REPLACEMENTS

from ..keys import key, pub
from .helpers import CHAIN, COORD
from .test_block_budget import INTERVAL_MS
from .test_review6_settle_cost import PAYEES, _escrowed, counting_checks


def _fresh_bids(job: bytes, variant: int) -> dict[bytes, bytes]:
    """64 payees' Bids for ``job`` at 1, none signed before (``variant`` changes each):
    what the attacker recombines, past the mempool's memory, into each new settle."""
    return {
        pub(p): protocol.sign(
            protocol.Bid(
                job_id=job,
                provider=pub(p),
                price=1,
                est_finish_ms=1,
                determinism_class="x",
                bench_score=1,
                expires_ms=10**9 + variant,
            ),
            p,
            CHAIN,
        ).raw
        for p in PAYEES
    }


def _settle(owner: nacl.signing.SigningKey, job: bytes, seq: int, fee: int, variant: int) -> bytes:
    bids = _fresh_bids(job, variant)
    payouts = {p: 1 for p in bids}
    return tx.settle(
        owner, CHAIN, seq, job_id=job, payouts=payouts, bids=bids, expiry_height=999, fee=fee
    ).raw


def test_a_pending_settle_is_replaced_at_most_four_times_the_fifth_costing_no_bid_check() -> None:
    # The review's w2_coordinator_fee_ladder.py: 400 replacements a block, each admitted
    # after 64 Bid checks.
    owner = key("owner")
    producer, [job] = _escrowed([owner])
    assert MAX_REPLACEMENTS == 4
    for fee in range(MAX_REPLACEMENTS + 1):  # the first and its 4 replacements
        with counting_checks() as checks:
            last = producer.submit(_settle(owner, job, 1, fee, variant=fee))
        assert checks[0] == 65
    with (
        counting_checks() as checks,
        pytest.raises(ledger.MempoolRejected, match="already replaced 4 times while pending"),
    ):
        producer.submit(_settle(owner, job, 1, 5, variant=5))
    assert checks[0] == 1  # its own signature only
    assert last.id in producer.mempool and len(producer.mempool) == 1
    # a fee bump that is no bump is refused before the Bids too (as before)
    with counting_checks() as checks, pytest.raises(ledger.MempoolRejected, match="higher fee"):
        producer.submit(_settle(owner, job, 1, 4, variant=6))
    assert checks[0] == 1
    # the last version is taken by the next block
    producer.tick(2 * INTERVAL_MS)
    escrow = producer.state.escrow(job)
    assert escrow is not None and not escrow.is_open
    assert producer.state.account(pub(owner)).balance == 10_000 - 64 - 4


def test_one_sender_replaces_at_most_four_pending_transactions_between_two_blocks() -> None:
    # Spread over the sender's sequence numbers, a bound per (sender, seq) alone left 63
    # pending settles x 5 versions a block (the helper's w4_spread_ladder.py: 20,160
    # checks, 1.7 s a block; now 67 settles, 4,288 checks).
    owner = key("owner")
    producer, [job] = _escrowed([owner])
    for seq in range(1, 7):
        producer.submit(_settle(owner, job, seq, 0, variant=seq))
    for seq in range(1, 5):
        with counting_checks() as checks:
            producer.submit(_settle(owner, job, seq, 1, variant=10 + seq))
        assert checks[0] == 65
    for seq in (5, 6):
        with (
            counting_checks() as checks,
            pytest.raises(
                ledger.MempoolRejected,
                match="already replaced 4 pending transactions since block 1",
            ),
        ):
            producer.submit(_settle(owner, job, seq, 1, variant=10 + seq))
        assert checks[0] == 1
    assert len(producer.mempool) == 6


def test_the_senders_replacements_are_counted_anew_after_each_block() -> None:
    sender, to = key("sender"), key("to")
    g = ledger.make_genesis(CHAIN, [pub(COORD)], {pub(sender): 1_000})
    producer = ledger.Producer(
        COORD, ledger.State.from_genesis(g), interval_ms=INTERVAL_MS, now_ms=0
    )

    def transfer(seq: int, fee: int) -> bytes:
        return tx.transfer(sender, CHAIN, seq, to=pub(to), amount=1, fee=fee, expiry_height=99).raw

    for block in range(1, 3):
        first = producer.state.next_seq(pub(sender))
        for seq in range(first, first + 5):
            producer.submit(transfer(seq, 0))
        for seq in range(first, first + 4):
            producer.submit(transfer(seq, 1))
        with pytest.raises(ledger.MempoolRejected, match="replace more after the next block"):
            producer.submit(transfer(first + 4, 1))
        producer.tick(block * INTERVAL_MS)
        assert producer.state.next_seq(pub(sender)) == first + 5  # all in the block


def _lock_with_long_tag(sender: nacl.signing.SigningKey, n: int, expiry: int = 30) -> bytes:
    """A lock whose carried "JobSpec" is no signed message: its 4,096-character tag is
    quoted by the refusal's reason (the review's v1_failed_reasons.py)."""
    spec = protocol.pack(["x" * 4096, CHAIN, [], pub(sender), bytes(64)])
    job = hashlib.sha256(b"%d" % n).digest()
    payload = ledger.Lock(job, 1, 1, 100, 1, 1, spec)
    return tx.make(sender, CHAIN, 0, payload, expiry_height=expiry).raw


def test_a_refused_payloads_reason_is_kept_short_whatever_tag_its_message_quotes() -> None:
    sender = key("v1")
    known = VerifiedMessages()
    reasons = []
    for expiry in (30, 31):  # signed anew around the same payload: answered from memory
        with pytest.raises(ledger.MalformedTransaction) as refused:
            check_embedded(
                ledger.verify_tx(_lock_with_long_tag(sender, 0, expiry), CHAIN), CHAIN, known
            )
        reasons.append(str(refused.value))
    assert known.checks == 1  # the second from memory
    assert all(len(r) <= MAX_FAILED_REASON for r in reasons)  # before: 4,272 characters
    assert reasons[0] == reasons[1]
    assert reasons[0].startswith("a lock must carry the signed messages its rule names")
    # what the memory holds for each: before ~4.3 KiB, now ~0.6 KiB
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        n = 300
        for i in range(1, n + 1):
            vtx = ledger.verify_tx(_lock_with_long_tag(sender, i), CHAIN)
            with pytest.raises(ledger.MalformedTransaction):
                check_embedded(vtx, CHAIN, known)
            del vtx
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert held / n < 1024
