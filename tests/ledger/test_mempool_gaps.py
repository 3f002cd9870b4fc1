"""Review round 2 (M1): transactions with a gap in their sequence numbers filled the
coordinator's mempool for free. They could never be selected, so they stayed until their
expiry and never paid a fee: 318 keys holding 1 micro-credit each filled 20,000 places and
every honest transaction was evicted or refused. Now a sender's pending sequence numbers run
without a hole, its balance pays all the fees it has pending, and a full pool evicts only
a sender's last transaction."""

from __future__ import annotations

import nacl.signing
import pytest

import ledger
from ledger import tx

from ..keys import key, pub
from .helpers import ALICE, BOB, CAROL, CHAIN, COORD


def _transfer(k: nacl.signing.SigningKey, seq: int, fee: int, expiry: int = 50) -> bytes:
    return tx.transfer(k, CHAIN, seq, to=pub(CAROL), amount=1, fee=fee, expiry_height=expiry).raw


def _state(balances: dict[bytes, int], **params: int) -> ledger.State:
    alloc = {pub(ALICE): 1_000_000, pub(BOB): 1_000_000, pub(CAROL): 1_000_000, **balances}
    return ledger.State.from_genesis(ledger.make_genesis(CHAIN, [pub(COORD)], alloc, **params))


def test_transactions_behind_a_gap_cannot_fill_the_mempool() -> None:
    # The attack at a tenth of the scale: 10 keys with 1 micro-credit each send seqs 1..63
    # at fee 1 (seq 0, never sent, is the gap) into a pool of 630 places.
    attackers = [key(f"gapper-{i}") for i in range(10)]
    s = _state({pub(k): 1 for k in attackers})
    producer = ledger.Producer(
        COORD, s, interval_ms=10, now_ms=0, mempool=ledger.Mempool(CHAIN, max_size=630)
    )
    honest = producer.submit(_transfer(BOB, 0, fee=0))  # the daemon's fee
    for k in attackers:
        for seq in range(1, 64):
            with pytest.raises(ledger.SequenceGap, match=ledger.SequenceGap.TEXT):
                producer.submit(_transfer(k, seq, fee=1, expiry=999))
    assert len(producer.mempool) == 1 and honest.id in producer.mempool
    # Without the gap, one fee of 1 is all that 1 micro-credit pledges.
    for k in attackers:
        producer.submit(_transfer(k, 0, fee=1))
        with pytest.raises(ledger.MempoolRejected, match="on top of the fees"):
            producer.submit(_transfer(k, 1, fee=1))
    assert len(producer.mempool) == 11
    producer.produce()  # the honest one lands; each attacker's overdraws (fee + amount)
    assert producer.state.next_seq(pub(BOB)) == 1
    assert len(producer.mempool) == 0 and len(producer.take_dropped()) == 10
    late = producer.submit(_transfer(CAROL, 0, fee=0))
    assert late.id in producer.mempool


def test_a_transaction_that_overtook_the_one_before_it_is_admitted_when_sent_again() -> None:
    # Pipelined submissions may arrive out of order (a forwarding replica, concurrent
    # streams): the later one is refused for the gap and admitted once sent again.
    s = _state({})
    pool = ledger.Mempool(CHAIN)
    first, second, third = (_transfer(ALICE, seq, fee=1) for seq in (0, 1, 2))
    with pytest.raises(ledger.SequenceGap, match="the sender's next is 0"):
        pool.add(second, s)
    pool.add(first, s)
    with pytest.raises(ledger.SequenceGap, match="the sender's next is 1"):
        pool.add(third, s)
    pool.add(second, s)
    pool.add(third, s)
    pool.add(_transfer(ALICE, 1, fee=2), s)  # a replacement inside the run: no gap
    assert [v.tx.seq for v in pool.select(s, 10)] == [0, 1, 2]
    producer = ledger.Producer(COORD, s, interval_ms=10, now_ms=0, mempool=pool)
    assert producer.produce().state.next_seq(pub(ALICE)) == 3
    assert len(pool) == 0


def test_a_senders_balance_pays_every_fee_it_has_pending() -> None:
    poor = key("poor")
    s = _state({pub(poor): 5})
    pool = ledger.Mempool(CHAIN)
    pool.add(_transfer(poor, 0, fee=3), s)
    with pytest.raises(ledger.MempoolRejected, match="fees 3 of the sender's 1 pending"):
        pool.add(_transfer(poor, 1, fee=3), s)
    pool.add(_transfer(poor, 1, fee=2), s)  # 3 + 2: all 5 pledged
    with pytest.raises(ledger.MempoolRejected, match="on top of the fees"):
        pool.add(_transfer(poor, 1, fee=3), s)  # replacing 2 with 3 would pledge 6
    with pytest.raises(ledger.MempoolRejected, match="on top of the fees"):
        pool.add(_transfer(poor, 2, fee=1), s)
    pool.add(_transfer(poor, 2, fee=0), s)  # a zero fee pledges nothing
    assert len(pool) == 3


def test_a_full_pool_evicts_only_a_senders_last_transaction() -> None:
    s = _state({})
    pool = ledger.Mempool(CHAIN, max_size=3)
    pool.add(_transfer(ALICE, 0, fee=0), s)
    pool.add(_transfer(ALICE, 1, fee=5), s)
    pool.add(_transfer(BOB, 0, fee=2), s)
    # Alice's 0 has the lowest fee, but evicting it would leave her 1 behind a gap: the
    # candidates are each sender's last (Alice's 1 at 5, Bob's 0 at 2).
    with pytest.raises(ledger.MempoolRejected, match="full"):
        pool.add(_transfer(CAROL, 0, fee=1), s)
    pool.add(_transfer(CAROL, 0, fee=3), s)  # evicts Bob's 0
    assert [(v.sender, v.tx.seq) for v in pool.take_evicted()] == [(pub(BOB), 0)]
    assert {(v.sender, v.tx.seq) for v in pool.select(s, 10)} == {
        (pub(ALICE), 0),
        (pub(ALICE), 1),
        (pub(CAROL), 0),
    }
    pool.add(_transfer(ALICE, 2, fee=9), s)  # evicts Carol's 0 (3)
    # Now Alice's own 2 is the only candidate: evicting it for her 3 would leave a gap.
    with pytest.raises(ledger.MempoolRejected, match="full"):
        pool.add(_transfer(ALICE, 3, fee=10), s)
    assert [v.tx.seq for v in pool.select(s, 10)] == [0, 1, 2] and len(pool) == 3
    # Bob comes back higher: Alice's last (2, at 9) goes, her 0 and 1 stay in sequence.
    pool.add(_transfer(BOB, 0, fee=10), s)
    assert [(v.sender, v.tx.seq) for v in pool.select(s, 10)] == [
        (pub(BOB), 0),
        (pub(ALICE), 0),
        (pub(ALICE), 1),
    ]


def test_an_evicted_transaction_is_reported_to_its_sender() -> None:
    # Before, an honest fee-0 transaction evicted by a higher fee was never reported: its
    # sender learnt of it only when the chain passed its expiry (30 blocks later).
    pool = ledger.Mempool(CHAIN, max_size=1)
    producer = ledger.Producer(COORD, _state({}), interval_ms=10, now_ms=0, mempool=pool)
    honest = producer.submit(_transfer(ALICE, 0, fee=0))
    producer.submit(_transfer(BOB, 0, fee=1))
    dropped = [e for e in producer.tick(10) if isinstance(e, ledger.TxDropped)]
    assert [(d.sender, d.seq, d.tx_id) for d in dropped] == [(pub(ALICE), 0, honest.id)]
    assert "evicted" in dropped[0].reason
    assert producer.state.next_seq(pub(BOB)) == 1
