"""``ledger.check_head``: the start-up check that no stored block was altered (issue 18).

Every block's hash against its stored id and the next block's link, the newest blocks'
signatures; a changed byte anywhere in the chain is found without a replay."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import ledger
import protocol

from .helpers import ALICE, BOB, Chain

HEIGHT = 100


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ledger.LedgerStore]:
    chain = Chain.new()
    chain.ok(chain.transfer(ALICE, BOB, 500_250))
    chain.until(HEIGHT)
    with ledger.LedgerStore.open(tmp_path / "l.sqlite3", chain.state.genesis) as store:
        for raw in chain.blocks:
            store.apply_and_commit(raw)
        yield store


def flip(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1 :]


def rewrite(store: ledger.LedgerStore, height: int, raw: bytes, *, with_id: bool) -> None:
    conn = store._conn
    conn.execute("UPDATE blocks SET raw=? WHERE height=?", (raw, height))
    if with_id:
        conn.execute("UPDATE blocks SET id=? WHERE height=?", (protocol.content_hash(raw), height))


def test_an_intact_chain_passes_at_every_depth(store: ledger.LedgerStore) -> None:
    for signed in (1, ledger.HEAD_SIGNED_BLOCKS, HEIGHT, 10**6):
        ledger.check_head(store, signed)


def test_a_changed_amount_deep_in_the_chain_is_found(store: ledger.LedgerStore) -> None:
    raw = store.block(1)
    assert raw is not None and HEIGHT - 1 > ledger.HEAD_SIGNED_BLOCKS  # below the signed
    altered = raw.replace(protocol.pack(500_250), protocol.pack(9_500_250))
    assert altered != raw
    rewrite(store, 1, altered, with_id=False)
    with pytest.raises(ledger.ChainVerificationError, match="block 1 was altered"):
        ledger.check_head(store)
    rewrite(store, 1, altered, with_id=True)  # its id too: block 2's link breaks
    with pytest.raises(ledger.ChainVerificationError, match="block 2 does not link to block 1"):
        ledger.check_head(store)


def test_a_rewritten_newest_block_fails_its_signature(store: ledger.LedgerStore) -> None:
    raw = store.block(HEIGHT)
    assert raw is not None
    rewrite(store, HEIGHT, flip(raw, len(raw) - 80), with_id=True)
    with pytest.raises(ledger.ChainVerificationError, match=f"block {HEIGHT} was altered"):
        ledger.check_head(store)


def test_a_missing_or_renumbered_block_is_found(store: ledger.LedgerStore) -> None:
    raw = store.block(50)
    assert raw is not None
    store._conn.execute("DELETE FROM blocks WHERE height=50")
    with pytest.raises(ledger.ChainVerificationError, match="block 50 is missing"):
        ledger.check_head(store)
    store._conn.execute("INSERT INTO blocks VALUES(50, ?, ?)", (protocol.content_hash(raw), raw))
    ledger.check_head(store)
    store._conn.execute("DELETE FROM blocks WHERE height=?", (HEIGHT,))
    with pytest.raises(ledger.ChainVerificationError, match=f"block {HEIGHT} is missing"):
        ledger.check_head(store)


def test_blocks_are_read_up_to_a_byte_budget(store: ledger.LedgerStore) -> None:
    # A block fetch answers with 3 full blocks at most: it reads no further than the first
    # block past its budget (a 10-byte request for 256 read them all: round 16, A4).
    every = store.blocks_from(1, 256)
    assert len(every) == HEIGHT
    one = len(every[0])
    budget = sum(len(b) for b in every[:5])
    got = store.blocks_from(1, 256, budget)
    assert got == every[:5]
    assert store.blocks_from(1, 256, 1) == every[:1] and one > 1
