"""A block write that fails for want of space says so (issue 15).

SQLite rolls a transaction back itself on ``SQLITE_FULL``; the store's own ``ROLLBACK``
then used to fail with "cannot rollback - no transaction is active" and replace the real
error. The disk is made full with ``PRAGMA max_page_count`` (the same ``SQLITE_FULL`` a
full file system gives), and for real with a small tmpfs where the tests may mount one."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

import ledger

from ..tmpfs import tmpfs as _tmpfs
from .helpers import ALICE, BOB, Chain


def _chain(blocks: int) -> Chain:
    chain = Chain.new()
    for _ in range(blocks):
        chain.ok(chain.transfer(ALICE, BOB, 1_000))
    return chain


def _fill_pages(store: ledger.LedgerStore) -> None:
    """Let the database grow by no page more."""
    conn = store._conn
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count={pages}")


def test_a_full_database_names_the_cause_and_keeps_the_last_good_height(tmp_path: Path) -> None:
    chain = _chain(40)
    path = tmp_path / "l.sqlite3"
    with ledger.LedgerStore.open(path, chain.state.genesis) as store:
        store.apply_and_commit(chain.blocks[0])
        # the WAL must be checkpointed for page_count to be the whole file
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _fill_pages(store)
        with pytest.raises(ledger.StoreError) as raised:
            for raw in chain.blocks[1:]:
                store.apply_and_commit(raw)
        message = str(raised.value)
        assert message.startswith(f"disk full: {path}: could not write block ")
        assert "database or disk is full" in message
        assert "no transaction is active" not in message
        stuck = store.height
        assert stuck >= 1
        # space comes back: the same block is written, the store goes on
        store._conn.execute("PRAGMA max_page_count=1073741823")
        for raw in chain.blocks[stuck:]:
            store.apply_and_commit(raw)
        assert store.height == len(chain.blocks)
    with ledger.LedgerStore.open(path) as again:
        assert again.height == len(chain.blocks)
        ledger.verify_chain(again)


def test_a_full_file_system_names_the_cause(tmp_path: Path) -> None:
    chain = _chain(30)
    with _tmpfs(tmp_path / "small", "2m") as disk:
        path = disk / "l.sqlite3"
        with ledger.LedgerStore.open(path, chain.state.genesis) as store:
            store.apply_and_commit(chain.blocks[0])
            filler = disk / "filler"
            with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
                for _ in range(1 << 16):  # far more than the tmpfs holds
                    f.write(b"\0" * 4096)
            failure: ledger.StoreError | None = None
            for raw in chain.blocks[1:]:
                try:
                    store.apply_and_commit(raw)
                except ledger.StoreError as exc:
                    failure = exc
                    break
            assert failure is not None, "the filled tmpfs took every block"
            assert "no transaction is active" not in str(failure)
            assert str(failure).startswith(f"disk full: {path}: "), str(failure)
            stuck = store.height
            filler.unlink()
            for raw in chain.blocks[stuck:]:
                store.apply_and_commit(raw)
            assert store.height == len(chain.blocks)
