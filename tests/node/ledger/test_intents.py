"""Money intents (issue 15): the book's rules, sans I/O (a chain in, actions out), and the
SQLite store they survive a restart in."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

import ledger
from node.ledger import Intent, IntentBook, IntentStore, Resolved, Submit
from node.ledger._intents import MAX_REFUSALS, RETRY_BLOCKS

from ...keys import pub
from ...ledger.helpers import ALICE, BOB

ME = pub(ALICE)
JOB = bytes(range(32))
EXPIRY = 100
CLAIM_AT = 80


@dataclass
class FakeChain:
    height: int = 10
    seq: int = 0
    escrows: dict[bytes, ledger.Escrow] = field(default_factory=dict)

    def next_seq(self, account: bytes) -> int:
        assert account == ME
        return self.seq

    def escrow(self, job_id: bytes) -> ledger.Escrow | None:
        return self.escrows.get(job_id)


def _escrow(owner: bytes = ME, **kw: object) -> ledger.Escrow:
    e = ledger.Escrow(owner, 1000, 1000, CLAIM_AT, EXPIRY, 1000, 1)
    return replace(e, **kw)  # type: ignore[arg-type]


def _lock(height: int = 10) -> Intent:
    payload = ledger.Lock(JOB, 1000, CLAIM_AT, EXPIRY, 1000, 1, b"spec")
    return Intent.of(payload, height, expiry_cap=EXPIRY)


def _kinds(actions: list[Submit | Resolved]) -> list[str]:
    return [f"{type(a).__name__}:{a.intent.kind}" for a in actions]


def test_a_lock_whose_answer_was_lost_waits_for_the_chain_and_is_not_refused() -> None:
    book, chain = IntentBook(ME), FakeChain()
    intent = _lock()
    assert _kinds(book.add(intent)) == ["Submit:lock"]
    book.signed(intent.key, seq=0, tx_expiry=40)
    # no answer (a timeout): nothing happens while the transaction may still apply
    for h in range(10, 41):
        chain.height = h
        assert book.on_block(chain) == []
    # the coordinator applied it after all: the escrow is ours
    chain.seq, chain.escrows[JOB] = 1, _escrow()
    [resolved] = book.on_block(chain)
    assert isinstance(resolved, Resolved) and resolved.applied and len(book) == 0


def test_a_lock_that_can_no_longer_apply_fails_and_is_never_signed_again() -> None:
    book, chain = IntentBook(ME), FakeChain()
    intent = _lock()
    book.add(intent)
    book.signed(intent.key, seq=3, tx_expiry=40)
    chain.seq = 4  # the chain took seq 3 for another transaction: no escrow
    [resolved] = book.on_block(chain)
    assert isinstance(resolved, Resolved) and not resolved.applied
    assert "did not reach a block" in resolved.reason


def test_a_lock_past_its_transaction_expiry_fails() -> None:
    book, chain = IntentBook(ME), FakeChain()
    intent = _lock()
    book.add(intent)
    book.signed(intent.key, seq=0, tx_expiry=40)
    chain.height = 41
    [resolved] = book.on_block(chain)
    assert isinstance(resolved, Resolved) and not resolved.applied


def test_a_refused_lock_fails_at_once() -> None:
    book = IntentBook(ME)
    intent = _lock()
    book.add(intent)
    [resolved] = book.refused(intent.key, "insufficient funds", height=10)
    assert isinstance(resolved, Resolved) and not resolved.applied
    assert resolved.reason == "insufficient funds"


def test_a_settle_is_signed_again_until_the_escrow_closes() -> None:
    book, chain = IntentBook(ME), FakeChain(escrows={JOB: _escrow()})
    intent = Intent.of(ledger.Settle(JOB, (ledger.Payout(pub(BOB), 10, b"bid"),)), 10)
    assert _kinds(book.add(intent)) == ["Submit:settle"]
    book.signed(intent.key, seq=0, tx_expiry=40)
    chain.height = 41  # dropped during an outage: its transaction expired unapplied
    assert _kinds(book.on_block(chain)) == ["Submit:settle"]
    assert book.on_block(chain) == []  # queued: once
    book.signed(intent.key, seq=1, tx_expiry=75)
    chain.height, chain.seq = 42, 2
    chain.escrows[JOB] = _escrow(status=ledger.EscrowStatus.SETTLED)
    [resolved] = book.on_block(chain)
    assert isinstance(resolved, Resolved) and resolved.applied


def test_a_refused_refund_is_tried_again_later_and_never_gives_up() -> None:
    book, chain = IntentBook(ME), FakeChain(height=EXPIRY, escrows={JOB: _escrow()})
    intent = Intent.of(ledger.Refund(JOB), EXPIRY)
    book.add(intent)
    assert book.refused(intent.key, "escrow expires at height 101", height=EXPIRY) == []
    for h in range(EXPIRY, EXPIRY + RETRY_BLOCKS):
        chain.height = h
        assert book.on_block(chain) == []
    chain.height = EXPIRY + RETRY_BLOCKS
    assert _kinds(book.on_block(chain)) == ["Submit:refund"]
    for _ in range(MAX_REFUSALS - 1):
        assert book.refused(intent.key, "no", height=chain.height) == []
    # after many refusals, tried less often (tests/adversarial/test_refund.py)
    chain.height += RETRY_BLOCKS * MAX_REFUSALS - 1
    assert book.on_block(chain) == []
    chain.height += 1
    assert _kinds(book.on_block(chain)) == ["Submit:refund"] and len(book) == 1


def test_a_refund_waits_for_the_escrow_expiry_and_a_pruned_escrow_counts_as_closed() -> None:
    book, chain = IntentBook(ME), FakeChain(height=50, escrows={JOB: _escrow()})
    intent = Intent.of(ledger.Refund(JOB), 50)
    book.add(intent)
    book.refused(intent.key, "too early", height=50)
    chain.height = EXPIRY - 1
    assert book.on_block(chain) == []
    chain.height = EXPIRY
    assert _kinds(book.on_block(chain)) == ["Submit:refund"]
    book.signed(intent.key, seq=0, tx_expiry=EXPIRY + 30)
    del chain.escrows[JOB]  # refunded, and pruned past its retention
    chain.height = EXPIRY + 400
    [resolved] = book.on_block(chain)
    assert isinstance(resolved, Resolved) and resolved.applied


def test_a_claim_is_retried_in_its_window_and_ends_with_it() -> None:
    book, chain = IntentBook(ME), FakeChain(height=CLAIM_AT, escrows={JOB: _escrow()})
    intent = Intent.of(ledger.Claim(JOB, b"award", b"receipt"), CLAIM_AT)
    book.add(intent)
    book.signed(intent.key, seq=0, tx_expiry=CLAIM_AT + 5)
    chain.height = CLAIM_AT + 6
    assert _kinds(book.on_block(chain)) == ["Submit:claim"]
    book.signed(intent.key, seq=1, tx_expiry=CLAIM_AT + 30)
    chain.height = EXPIRY
    [resolved] = book.on_block(chain)
    assert isinstance(resolved, Resolved) and not resolved.applied
    assert "window" in resolved.reason
    # and one that landed is applied
    book.add(intent := Intent.of(ledger.Claim(JOB, b"award", b"receipt"), CLAIM_AT))
    chain.height = CLAIM_AT + 1
    chain.escrows[JOB] = _escrow(claimed=(ME,), paid=((ME, 10),))
    [resolved] = book.on_block(chain)
    assert isinstance(resolved, Resolved) and resolved.applied


def test_nothing_is_decided_before_the_state_reaches_the_intent() -> None:
    # after a restart the replica catches up from below: no escrow yet is not "closed"
    book, chain = IntentBook(ME), FakeChain(height=3)
    intent = Intent.of(ledger.Settle(JOB, ()), 60)
    intent.seq, intent.tx_expiry = 7, 90
    book = IntentBook(ME, [intent])
    assert book.on_block(chain) == []
    chain.height, chain.seq = 60, 8
    chain.escrows[JOB] = _escrow()
    assert _kinds(book.on_block(chain)) == ["Submit:settle"]


def test_one_intent_per_job_and_kind() -> None:
    book = IntentBook(ME)
    assert book.add(Intent.of(ledger.Refund(JOB), 10))
    assert book.add(Intent.of(ledger.Refund(JOB), 11)) == []
    assert len(book) == 1


def test_the_store_keeps_intents_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "intents.sqlite3"
    store = IntentStore(path)
    lock, refund = _lock(), Intent.of(ledger.Refund(bytes(32)), 12)
    lock.seq, lock.tx_expiry, lock.refusals, lock.reason = 4, 40, 1, "timeout"
    lock.raw = b"signed bytes"  # sent again after the restart (round 61, R61-3)
    store.save(lock)
    store.save(refund)
    store.save(refund)  # a change replaces
    store.delete(refund.key)
    store.close()
    again = IntentStore(path).load()
    assert len(again) == 1
    [kept] = again
    assert (kept.key, kept.seq, kept.tx_expiry, kept.refusals, kept.reason) == (
        lock.key,
        4,
        40,
        1,
        "timeout",
    )
    assert kept.decoded() == lock.decoded() and kept.expiry_cap == EXPIRY
    assert kept.raw == b"signed bytes"


def test_a_store_kept_before_signed_bytes_were_kept_is_read(tmp_path: Path) -> None:
    path = tmp_path / "intents.sqlite3"
    old = sqlite3.connect(path)  # the table as a version before round 61 made it
    columns = "job_id, kind, payload, made_height, expiry_cap, seq, tx_expiry, refusals"
    old.execute(f"CREATE TABLE intents ({columns}, reason, retry_at, PRIMARY KEY (job_id, kind))")
    lock = _lock()
    row = (lock.job_id, lock.kind, lock.payload, lock.made_height, EXPIRY, 4, 40, 0, "", 0)
    old.execute("INSERT INTO intents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
    old.commit()
    old.close()
    store = IntentStore(path)
    [kept] = store.load()
    assert (kept.seq, kept.raw) == (4, b"")  # reserved, bytes unknown, as before
    kept.raw = b"signed"
    store.save(kept)
    assert [i.raw for i in IntentStore(path).load()] == [b"signed"]


def test_a_kept_intent_that_does_not_decode_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "intents.sqlite3"
    store = IntentStore(path)
    bad = Intent(JOB, "settle", b"\xc1 not msgpack", 1)
    store.save(bad)
    store.save(_lock())
    assert [i.kind for i in store.load()] == ["lock"]
    assert [i.kind for i in IntentStore(path).load()] == ["lock"]


def test_only_money_transactions_are_intents() -> None:
    with pytest.raises(ValueError, match="not a money"):
        Intent.of(ledger.Transfer(pub(BOB), 1), 1)


def test_a_failed_write_is_counted_never_raised(tmp_path: Path) -> None:
    # a full disk must not stop the money transaction itself (it is still carried out)
    store = IntentStore(tmp_path / "intents.sqlite3")
    store.close()  # every write now fails
    store.save(_lock())
    store.delete(_lock().key)
    assert store.write_errors == 2
