"""The coordinator's block producer, as a state machine driven by the caller's clock.

``submit`` admits a transaction to the mempool against the current state. ``tick(now_ms)``
produces the next block once ``interval_ms`` has passed since the last one (empty blocks
too: heights are the ledger's clock, and escrow windows count in heights), returning a
:class:`Commit` for the driver to persist and announce, a :class:`TxDropped` for each
admitted transaction that will never be in a block, and a :class:`SetTimer` for the next
tick. Each transaction's signature, and those of the signed messages it carries (a
settle's Bids, ...), are verified once, on entry to the mempool: making the block does not
check them again (a replica applying it does).

A transaction refused when the block is made (an overdraft: balances are checked then,
not on admission) is dropped and reported. An unsequenced claim goes alone. A sequenced
transaction's sender's later pending transactions would
wait behind the gap it leaves, holding places they never pay for: they are dropped with
it, each reported with a reason beginning :data:`~ledger._mempool.DROPPED_BEHIND` (they did
nothing wrong; the sender signs them again after filling the gap). So are those behind a
transaction that expired unapplied. The refused one's id is remembered by the mempool
(``Mempool.refused_at_block``): its same signed bytes are not admitted again. A block
that would break a ledger invariant is never made: the transaction that breaks it is
refused (``InvariantBroken``) and the fault kept for the driver (:meth:`Producer.take_faults`).
"""

from __future__ import annotations

import functools

import nacl.signing

from ._admission import VerifiedTx
from ._apply import produce_block
from ._effects import Commit, Effect, SetTimer, TxDropped
from ._errors import LedgerError
from ._mempool import DROPPED_BEHIND, Mempool
from ._state import State


class Producer:
    """Orders transactions into signed blocks for one coordinator key."""

    def __init__(
        self,
        key: nacl.signing.SigningKey,
        state: State,
        *,
        interval_ms: int,
        now_ms: int,
        mempool: Mempool | None = None,
        empty_blocks: bool = True,
    ) -> None:
        if bytes(key.verify_key) not in state.genesis.coordinators:
            raise LedgerError("this key is not a coordinator in the genesis; it cannot produce")
        if interval_ms <= 0:
            raise LedgerError("the block interval must be positive")
        self.key = key
        self.state = state
        self.interval_ms = interval_ms
        self.mempool = mempool if mempool is not None else Mempool(state.chain_id)
        self.empty_blocks = empty_blocks
        self.next_block_ms = now_ms + interval_ms
        self.rejected = 0
        self._dropped: list[TxDropped] = []
        self._faults: list[str] = []

    def submit(self, raw: bytes) -> VerifiedTx:
        """Admit a transaction; raises a :class:`TransactionRejected` if refused. One it
        evicts from a full mempool is reported dropped (with the next block's drops)."""
        vtx = self.mempool.add(raw, self.state)
        for gone in self.mempool.take_evicted():
            reason = (
                "evicted from the full mempool (by a higher fee, or at equal fee from the "
                "sender holding the most of it); retry later or raise the fee"
            )
            self._dropped.append(TxDropped(gone.sender, gone.tx.seq, gone.id, reason))
        return vtx

    def tick(self, now_ms: int) -> list[Effect]:
        """Produce a block if it is time; always say when to tick next."""
        if now_ms < self.next_block_ms:
            return [SetTimer(self.next_block_ms)]
        effects: list[Effect] = []
        if self.empty_blocks or len(self.mempool):
            effects.append(self.produce())
            effects += self.take_dropped()
        self.next_block_ms = max(self.next_block_ms + self.interval_ms, now_ms + 1)
        effects.append(SetTimer(self.next_block_ms))
        return effects

    def produce(self) -> Commit:
        """Produce the next block now from the mempool."""
        # Taken until the block is full: those it refuses (and their senders' later ones,
        # refused for the gap) take no room, so a pool full of chains whose first
        # transaction fails is emptied in one block, not ``max_block_txs`` at a time.
        produced = produce_block(
            self.state, self.key, functools.partial(self.mempool.candidates, self.state)
        )
        self._faults += produced.faults
        gapped: set[bytes] = set()  # senders with a transaction refused in this block
        for vtx, exc in produced.rejected:
            if vtx.unsequenced:  # it holds no sequence number: it leaves no gap
                self.rejected += 1
                self.mempool.refused_at_block(vtx, str(exc))
                self.mempool.remove(vtx)
                self._dropped.append(TxDropped(vtx.sender, vtx.tx.seq, vtx.id, str(exc)))
                continue
            if vtx.sender in gapped:
                continue  # refused for the gap before it: dropped with that one below
            gapped.add(vtx.sender)
            self.rejected += 1
            self.mempool.refused_at_block(vtx, str(exc))
            self._dropped.append(TxDropped(vtx.sender, vtx.tx.seq, vtx.id, str(exc)))
            behind = f"{DROPPED_BEHIND} {vtx.tx.seq}, which was refused: {exc}"
            for later in self.mempool.remove(vtx):
                self._dropped.append(TxDropped(later.sender, later.tx.seq, later.id, behind))
        self.state = produced.state
        for vtx, reason in self.mempool.prune(self.state):
            self._dropped.append(TxDropped(vtx.sender, vtx.tx.seq, vtx.id, reason))
        return Commit(produced.block, produced.state)

    def take_faults(self) -> list[str]:
        """The ledger invariants found broken while making blocks since the last call, each
        with what was done about it (``produce_block``): a fault in the rules, for the
        driver to report loudly."""
        faults, self._faults = self._faults, []
        return faults

    def take_dropped(self) -> list[TxDropped]:
        """The drops since the last call (``tick`` returns them as effects)."""
        dropped, self._dropped = self._dropped, []
        return dropped
