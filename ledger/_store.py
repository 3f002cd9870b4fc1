"""The on-disk ledger: SQLite (stdlib ``sqlite3``), WAL, ``synchronous=FULL``.

A block, the state leaves it changed, its history index rows and the new height are
written in one SQLite transaction, so after a crash at any point (``kill -9`` included) the
store reopens at the height of the last committed block, with exactly that block's state.

Tables::

    meta(key TEXT PRIMARY KEY, value)        genesis (encoded), height
    blocks(height INTEGER PRIMARY KEY, id BLOB, raw BLOB)
    leaves(key BLOB PRIMARY KEY, value BLOB) the state, one row per leaf
    txindex(account BLOB, height INTEGER, idx INTEGER)   who a transaction concerns
    proofs(height INTEGER, first BLOB, second BLOB)      equivocation proofs

A :class:`LedgerStore` belongs to one thread (sqlite3's rule); a driver that is not
single-threaded runs it on a thread of its own (the daemon's ``node.ledger.StoreThread``).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import protocol
from protocol import Signed

from ._apply import apply_block
from ._block import MAX_BLOCK_BYTES, Block, EquivocationProof
from ._errors import ChainVerificationError, LedgerError, StoreError
from ._genesis import Genesis
from ._state import State, check_invariants

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS blocks(height INTEGER PRIMARY KEY, id BLOB NOT NULL, raw BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS leaves(key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS txindex(
    account BLOB NOT NULL, height INTEGER NOT NULL, idx INTEGER NOT NULL,
    PRIMARY KEY(account, height, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS proofs(
    height INTEGER NOT NULL, first BLOB NOT NULL, second BLOB NOT NULL,
    PRIMARY KEY(height, first, second));
"""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One transaction concerning an account."""

    height: int
    index: int
    raw: bytes


class LedgerStore:
    """A ledger database on one thread. Open with :meth:`open`."""

    def __init__(
        self, conn: sqlite3.Connection, genesis: Genesis, state: State, path: Path | None = None
    ) -> None:
        self._conn = conn
        self.genesis = genesis
        self.state = state
        #: The database file (named in write errors).
        self.path = path

    # --- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, genesis: Genesis | None = None) -> LedgerStore:
        """Open (or, given a genesis, create) the ledger at ``path``.

        Raises :class:`StoreError` if there is no ledger and no genesis, if the stored
        genesis differs from ``genesis``, or if the stored state is inconsistent.
        """
        path = Path(path)
        if genesis is None and not path.exists():
            raise StoreError(f"no ledger at {path}; initialise it with a genesis first")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the ledger database {path}: {exc}") from None
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='genesis'").fetchone()
            if row is None:
                if genesis is None:
                    raise StoreError(f"{path} holds no ledger; initialise it with a genesis")
                state = State.from_genesis(genesis)
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO meta VALUES('genesis', ?)", (genesis.encode(),))
                conn.execute("INSERT INTO meta VALUES('height', 0)")
                conn.executemany("INSERT INTO leaves VALUES(?, ?)", list(state.leaves()))
                conn.execute("COMMIT")
                return cls(conn, genesis, state, path)
            stored = Genesis.decode(row[0])
            if genesis is not None and stored != genesis:
                raise StoreError(
                    f"{path} holds chain {stored.chain_id!r} with another genesis; use "
                    "another data directory or the matching genesis"
                )
            state = cls._load_state(conn, stored)
            return cls(conn, stored, state, path)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"the ledger database {path} is unusable: {exc}") from None
        except BaseException:
            conn.close()
            raise

    @staticmethod
    def _load_state(conn: sqlite3.Connection, genesis: Genesis) -> State:
        try:
            (height,) = conn.execute("SELECT value FROM meta WHERE key='height'").fetchone()
            if height == 0:
                last = genesis.hash()
                expected_root = State.from_genesis(genesis).root
            else:
                row = conn.execute("SELECT raw FROM blocks WHERE height=?", (height,)).fetchone()
                if row is None:
                    raise StoreError(f"the ledger's block {height} is missing; it is corrupt")
                block = protocol.decode(row[0], genesis.chain_id, Block, max_bytes=MAX_BLOCK_BYTES)
                last = block.id
                expected_root = block.message.state_root
            leaves = conn.execute("SELECT key, value FROM leaves").fetchall()
        except (sqlite3.Error, TypeError, protocol.ProtocolError) as exc:
            raise StoreError(f"the ledger database is unreadable: {exc}") from None
        state = State.from_leaves(genesis, last, leaves)
        if state.height != height or state.root != expected_root:
            raise StoreError(
                f"stored state does not match block {height}'s state root: the database "
                "was altered or is corrupt"
            )
        return state

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing ---------------------------------------------------------------------

    @property
    def height(self) -> int:
        return self.state.height

    def commit(self, block: Signed[Block], state: State) -> None:
        """Persist ``block`` and the state after it, atomically and durably.

        ``state`` must be the result of applying ``block`` to the current state.
        """
        if state.height != self.state.height + 1 or block.message.height != state.height:
            raise StoreError(
                f"cannot store block {block.message.height} on top of height {self.height}"
            )
        rows = list(state.touched_leaves().items())
        index = [
            (acct, state.height, i)
            for i, accounts in enumerate(state.tx_accounts)
            for acct in accounts
        ]
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT INTO blocks VALUES(?, ?, ?)", (state.height, block.id, block.raw)
                )
                conn.executemany("INSERT OR REPLACE INTO leaves VALUES(?, ?)", rows)
                conn.executemany("DELETE FROM leaves WHERE key=?", [(k,) for k in state.removed])
                conn.executemany("INSERT OR IGNORE INTO txindex VALUES(?, ?, ?)", index)
                conn.execute("UPDATE meta SET value=? WHERE key='height'", (state.height,))
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        except sqlite3.Error as exc:
            raise StoreError(_write_failure(self.path, state.height, exc)) from None
        self.state = state

    def apply_and_commit(self, raw_block: bytes) -> State:
        """Validate ``raw_block`` against the stored state, then persist it."""
        from ._apply import decode_block

        signed = decode_block(raw_block, self.genesis)
        new = apply_block(self.state, signed)
        self.commit(signed, new)
        return new

    def add_proof(self, proof: EquivocationProof) -> None:
        try:
            self._conn.execute(
                "INSERT OR IGNORE INTO proofs VALUES(?, ?, ?)",
                (proof.height, proof.first, proof.second),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"could not record an equivocation proof: {exc}") from None

    # --- reading ---------------------------------------------------------------------

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[int]:
        """Read inside one SQLite read transaction and yield the height it sees.

        Another process (the running daemon) may commit blocks meanwhile; every read made
        inside the ``with`` sees the database as it was at its first read, so a block list,
        the leaves and the height always belong together.
        """
        conn = self._conn
        try:
            conn.execute("BEGIN")
            (height,) = conn.execute("SELECT value FROM meta WHERE key='height'").fetchone()
        except sqlite3.Error as exc:
            _rollback(conn)
            raise StoreError(f"the ledger database is unreadable: {exc}") from None
        try:
            yield int(height)
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("COMMIT")

    def block(self, height: int) -> bytes | None:
        row = self._conn.execute("SELECT raw FROM blocks WHERE height=?", (height,)).fetchone()
        return None if row is None else bytes(row[0])

    def blocks_from(self, height: int, limit: int, max_bytes: int | None = None) -> list[bytes]:
        """Up to ``limit`` blocks from ``height`` on; with ``max_bytes``, none read past the
        first that brings them to it (a 10-byte request for 256 blocks read up to 240 MiB
        to answer with 3: review round 16, A4)."""
        out: list[bytes] = []
        size = 0
        rows = self._conn.execute(
            "SELECT raw FROM blocks WHERE height>=? ORDER BY height LIMIT ?", (height, limit)
        )
        try:
            for (raw,) in rows:
                out.append(bytes(raw))
                size += len(raw)
                if max_bytes is not None and size >= max_bytes:
                    break
        finally:
            rows.close()
        return out

    def iter_blocks(self) -> Iterator[bytes]:
        height = 1
        while True:
            batch = self.blocks_from(height, 256)
            if not batch:
                return
            yield from batch
            height += len(batch)

    def recent_blocks(self, count: int) -> dict[int, bytes]:
        rows = self._conn.execute(
            "SELECT height, raw FROM blocks ORDER BY height DESC LIMIT ?", (count,)
        ).fetchall()
        return {h: bytes(r) for h, r in rows}

    def proofs(self) -> list[EquivocationProof]:
        rows = self._conn.execute(
            "SELECT height, first, second FROM proofs ORDER BY height"
        ).fetchall()
        return [EquivocationProof(h, bytes(a), bytes(b)) for h, a, b in rows]

    def history(self, account: bytes, limit: int = 100) -> list[HistoryEntry]:
        """The latest ``limit`` transactions concerning ``account``, newest first."""
        rows = self._conn.execute(
            "SELECT height, idx FROM txindex WHERE account=? ORDER BY height DESC, idx DESC "
            "LIMIT ?",
            (account, limit),
        ).fetchall()
        out = []
        for height, idx in rows:
            raw = self.block(height)
            if raw is None:
                continue
            txs: Any = protocol.unpack(raw, max_bytes=MAX_BLOCK_BYTES)[2][4]
            out.append(HistoryEntry(height, idx, bytes(txs[idx])))
        return out

    def stored_leaves(self) -> dict[bytes, bytes]:
        rows = self._conn.execute("SELECT key, value FROM leaves").fetchall()
        return {bytes(k): bytes(v) for k, v in rows}


#: SQLite's result code for "database or disk is full" (``SQLITE_FULL``).
_SQLITE_FULL = 13


def _rollback(conn: sqlite3.Connection) -> None:
    """Undo an open transaction after a failed write, never hiding the failure's cause.

    On some errors (``SQLITE_FULL``, ``SQLITE_IOERR``, ...) SQLite has already rolled the
    transaction back itself, and an explicit ``ROLLBACK`` would fail with "no transaction
    is active", replacing the real error; a rollback that fails for another reason is
    dropped too: the error being raised is the one that says what went wrong.
    """
    if not conn.in_transaction:
        return
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


def _write_failure(path: Path | None, height: int, exc: sqlite3.Error) -> str:
    """What a failed block write says: ``disk full: <path>: ...`` when the disk is full."""
    where = str(path) if path is not None else "the ledger database"
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_FULL:
        return f"disk full: {where}: could not write block {height}: {exc}"
    return f"could not write block {height} to {where}: {exc}"


#: How many of the newest blocks :func:`check_head` decodes and checks the signature of
#: (the hash links of all blocks are checked). Measured on a 10,000-block chain (one
#: transfer in every other block), on a busy 2-core machine: the links of all blocks take
#: about 55 ms, with the newest 64 signatures 63 ms; every signature would be 0.9-1.3 s.
HEAD_SIGNED_BLOCKS = 64


def check_head(store: LedgerStore, signed: int = HEAD_SIGNED_BLOCKS) -> None:
    """Check the stored chain without replaying it: that no stored block was altered.

    Every block's id (BLAKE2b-256 of its bytes) must be the id stored beside it and the
    ``prev_hash`` of the block after it (block 1's is the genesis hash), with no height
    missing up to the stored height; the newest ``signed`` blocks must also decode, carry
    their height and be signed by a genesis coordinator. Changing any byte of a block, a
    transaction's amount say, changes its id: the next block's link breaks, or, for the
    newest, its signature. The newest block's state root was compared with the stored
    state when the store opened. What this does not see, a validly signed chain with a
    wrong transition, is :func:`verify_chain`'s.

    Raises :class:`ChainVerificationError` naming the first bad block.
    """
    from ._apply import decode_block

    genesis = store.genesis
    top = store.height
    prev = genesis.hash()
    expected = 1
    try:
        cursor = store._conn.execute(
            "SELECT height, id, raw FROM blocks WHERE height<=? ORDER BY height", (top,)
        )
        for height, stored_id, raw in cursor:
            raw = bytes(raw)
            if height != expected:
                raise ChainVerificationError(f"the ledger's block {expected} is missing")
            block_id = protocol.content_hash(raw)
            if block_id != bytes(stored_id):
                raise ChainVerificationError(
                    f"stored block {height} was altered: its bytes do not hash to its id"
                )
            try:
                if height > top - signed:
                    block = decode_block(raw, genesis)
                    link, claimed = block.message.prev_hash, block.message.height
                else:
                    body = protocol.unpack(raw, max_bytes=MAX_BLOCK_BYTES, check_types=False)[2]
                    link, claimed = bytes(body[1]), body[0]
            except (LedgerError, protocol.ProtocolError, TypeError, IndexError) as exc:
                raise ChainVerificationError(f"stored block {height} was altered: {exc}") from None
            if claimed != height:
                raise ChainVerificationError(f"stored block {height} says it is block {claimed}")
            if link != prev:
                raise ChainVerificationError(
                    f"stored block {height} does not link to block {height - 1}: one of them "
                    "was altered"
                )
            prev = block_id
            expected += 1
    except sqlite3.Error as exc:
        raise StoreError(f"the ledger database is unreadable: {exc}") from None
    if expected != top + 1:
        raise ChainVerificationError(f"the ledger's block {expected} is missing")


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What :func:`verify_chain` checked."""

    chain_id: str
    height: int
    blocks: int
    transactions: int
    state_root: bytes
    minted: int
    burned: int
    fees: int
    accounts: int
    escrows: int
    proofs: int


def replay(genesis: Genesis, blocks: Iterator[bytes] | list[bytes]) -> State:
    """The state after applying ``blocks`` to the genesis (raises on any invalid block)."""
    state = State.from_genesis(genesis)
    for raw in blocks:
        state = apply_block(state, raw)
    return state


def verify_chain(store: LedgerStore) -> VerifyReport:
    """Replay the stored chain from genesis, checking every signature, hash link, state root
    and invariant, and compare the result with the stored state.

    Raises :class:`ChainVerificationError` describing the first failure.
    """
    genesis = store.genesis
    state = State.from_genesis(genesis)
    txs = 0
    # One read snapshot: a running daemon may append blocks while this replays.
    with store.snapshot() as height:
        for raw in store.iter_blocks():
            try:
                state = apply_block(state, raw)
            except LedgerError as exc:
                raise ChainVerificationError(
                    f"stored block {state.height + 1} is invalid: {exc}"
                ) from None
            txs += len(protocol.unpack(raw, max_bytes=MAX_BLOCK_BYTES)[2][4])
            check_invariants(state)
        if state.height != height:
            raise ChainVerificationError(
                f"replay reached height {state.height} but the store says {height}"
            )
        stored = store.stored_leaves()
        proofs = len(store.proofs())
    replayed = dict(state.leaves())
    if stored != replayed:
        diff = sorted(set(stored.items()) ^ set(replayed.items()))
        raise ChainVerificationError(
            f"stored state differs from the replay in {len(diff)} leaves "
            f"(first key {diff[0][0].hex()})"
        )
    return VerifyReport(
        chain_id=genesis.chain_id,
        height=state.height,
        blocks=state.height,
        transactions=txs,
        state_root=state.root,
        minted=state.minted,
        burned=state.burned,
        fees=state.fees,
        accounts=sum(1 for _ in state.accounts()),
        escrows=sum(1 for _ in state.escrows()),
        proofs=proofs,
    )
