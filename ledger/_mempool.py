"""The mempool: validated pending transactions, ordered by fee for the next block.

Every transaction is verified once, on entry (signature, chain, payload). A transaction is
refused if it is a duplicate, a replay (its seq is below the sender's next), expired, below
the minimum fee, more than ``max_ahead`` ahead of the sender's sequence (which also bounds
the transactions one account has pending), valid for more than ``max_expiry_ahead`` blocks,
or if the pool is full of higher fees. Only a *funded* sender is admitted: a genesis
coordinator, or an account whose balance pays the fee and which holds something (balance
or stake); an unfunded account only with a claim that the escrow's owner signed for it
(at most the escrow's ``max_payees`` such claims pending per escrow). So keys that never
received credits cannot fill the pool. A second transaction with the same
``(sender, seq)`` replaces the first only with a strictly higher fee. Block selection
takes the highest fee first among each sender's next transaction (so a sender's
transactions stay in sequence order), ties in arrival order.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import protocol
from protocol import Award, ProtocolError

from ._errors import ExpiredTransaction, FeeTooLow, MempoolRejected, SequenceError
from ._payloads import Claim
from ._rules import VerifiedTx, verify_tx
from ._state import State

#: Most transactions of one account pending (its sequence numbers next .. next + this - 1).
MAX_AHEAD = 64
#: Most blocks ahead of the chain's height a pending transaction may stay valid.
MAX_EXPIRY_AHEAD = 1_000


@dataclass(slots=True)
class _Entry:
    vtx: VerifiedTx
    arrival: int


@dataclass(slots=True)
class Mempool:
    """Pending transactions for one chain. Pure: the caller passes the current state."""

    chain_id: str
    max_size: int = 20_000
    max_ahead: int = MAX_AHEAD
    max_expiry_ahead: int = MAX_EXPIRY_AHEAD
    _by_sender: dict[bytes, dict[int, _Entry]] = field(default_factory=dict)
    _ids: set[bytes] = field(default_factory=set)
    #: Pending claims from unfunded senders, by job id: their transaction ids.
    _unfunded_claims: dict[bytes, set[bytes]] = field(default_factory=dict)
    _arrivals: int = 0

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, tx_id: bytes) -> bool:
        return tx_id in self._ids

    def add(self, raw: bytes, state: State) -> VerifiedTx:
        """Verify and admit ``raw``; raises a :class:`TransactionRejected` if refused."""
        vtx = verify_tx(raw, self.chain_id)
        self.add_verified(vtx, state)
        return vtx

    def add_verified(self, vtx: VerifiedTx, state: State) -> None:
        tx = vtx.tx
        if vtx.id in self._ids:
            raise MempoolRejected("transaction is already in the mempool")
        next_seq = state.next_seq(tx.sender)
        if tx.seq < next_seq:
            raise SequenceError(
                f"sequence number {tx.seq} was already used (a replay); next is {next_seq}"
            )
        if tx.seq >= next_seq + self.max_ahead:
            raise MempoolRejected(
                f"sequence number {tx.seq} is more than {self.max_ahead} ahead of {next_seq}"
            )
        if tx.expiry_height <= state.height:
            raise ExpiredTransaction(
                f"transaction expired at height {tx.expiry_height}; the chain is at {state.height}"
            )
        if tx.expiry_height > state.height + self.max_expiry_ahead:
            raise MempoolRejected(
                f"transaction is valid until height {tx.expiry_height}, more than "
                f"{self.max_expiry_ahead} blocks ahead of the chain's {state.height}"
            )
        if tx.fee < state.genesis.min_fee:
            raise FeeTooLow(f"fee {tx.fee} is below the minimum fee {state.genesis.min_fee}")
        claim_job = self._admit_sender(vtx, state)
        queue = self._by_sender.setdefault(tx.sender, {})
        old = queue.get(tx.seq)
        if old is not None and tx.fee <= old.vtx.tx.fee:
            raise MempoolRejected(
                f"a transaction with sequence number {tx.seq} is already pending; "
                "replace it only with a higher fee"
            )
        if old is None and len(self._ids) >= self.max_size:
            victim = self._lowest_fee()
            if victim is None or victim.vtx.tx.fee >= tx.fee:
                raise MempoolRejected("the mempool is full; retry later or raise the fee")
            self.remove(victim.vtx)
            queue = self._by_sender.setdefault(tx.sender, {})
        if old is not None:
            self._forget(old.vtx)
        self._arrivals += 1
        queue[tx.seq] = _Entry(vtx, self._arrivals)
        self._ids.add(vtx.id)
        if claim_job is not None:
            self._unfunded_claims.setdefault(claim_job, set()).add(vtx.id)

    def _admit_sender(self, vtx: VerifiedTx, state: State) -> bytes | None:
        """Refuse an unfunded sender (see the module's rules); returns the job id when the
        transaction is admitted as an unfunded sender's claim."""
        tx = vtx.tx
        if state.is_coordinator(tx.sender):
            return None
        account = state.account(tx.sender)
        if tx.fee > account.balance:
            raise MempoolRejected(f"balance {account.balance} cannot pay the fee {tx.fee}")
        if account.balance > 0 or account.stake > 0:
            return None
        p = vtx.payload
        if not isinstance(p, Claim):
            raise MempoolRejected("the sender's account holds no credits; fund it first")
        e = state.escrow(p.job_id)
        if e is None or not e.is_open or tx.sender in e.claimed:
            raise MempoolRejected("an unfunded account may only claim from an open escrow")
        try:
            award = protocol.decode(p.award, state.chain_id, Award).message
        except ProtocolError:
            raise MempoolRejected("an unfunded claim needs the escrow owner's Award") from None
        if award.requester != e.owner or award.provider != tx.sender or award.job_id != p.job_id:
            raise MempoolRejected("an unfunded claim needs the escrow owner's Award for it")
        if len(self._unfunded_claims.get(p.job_id, ())) >= e.max_payees:
            raise MempoolRejected("this escrow already has as many claims pending as payees")
        return p.job_id

    def _forget(self, vtx: VerifiedTx) -> None:
        self._ids.discard(vtx.id)
        if isinstance(vtx.payload, Claim):
            pending = self._unfunded_claims.get(vtx.payload.job_id)
            if pending is not None:
                pending.discard(vtx.id)
                if not pending:
                    del self._unfunded_claims[vtx.payload.job_id]

    def _lowest_fee(self) -> _Entry | None:
        entries = [e for q in self._by_sender.values() for e in q.values()]
        return min(entries, key=lambda e: (e.vtx.tx.fee, -e.arrival), default=None)

    def remove(self, vtx: VerifiedTx) -> None:
        queue = self._by_sender.get(vtx.sender)
        if queue is None:
            return
        entry = queue.get(vtx.tx.seq)
        if entry is not None and entry.vtx.id == vtx.id:
            del queue[vtx.tx.seq]
            self._forget(vtx)
        if not queue:
            del self._by_sender[vtx.sender]

    def select(self, state: State, limit: int) -> list[VerifiedTx]:
        """Up to ``limit`` candidates for the next block, highest fee first, each sender's
        in sequence order starting at its next sequence number."""
        heap: list[tuple[int, int, bytes, int]] = []
        for sender, queue in self._by_sender.items():
            seq = state.next_seq(sender)
            e = queue.get(seq)
            if e is not None:
                heap.append((-e.vtx.tx.fee, e.arrival, sender, seq))
        heapq.heapify(heap)
        out: list[VerifiedTx] = []
        while heap and len(out) < limit:
            _, _, sender, seq = heapq.heappop(heap)
            queue = self._by_sender[sender]
            out.append(queue[seq].vtx)
            nxt = queue.get(seq + 1)
            if nxt is not None:
                heapq.heappush(heap, (-nxt.vtx.tx.fee, nxt.arrival, sender, seq + 1))
        return out

    def prune(self, state: State) -> list[VerifiedTx]:
        """Drop what ``state`` made stale (applied or replayed seqs, expired); returns the
        expired ones that had not been replaced (their senders should hear of it)."""
        expired: list[VerifiedTx] = []
        for sender in list(self._by_sender):
            queue = self._by_sender[sender]
            next_seq = state.next_seq(sender)
            for seq in list(queue):
                e = queue[seq]
                if seq < next_seq or e.vtx.tx.expiry_height <= state.height:
                    del queue[seq]
                    self._forget(e.vtx)
                    if seq >= next_seq:
                        expired.append(e.vtx)
            if not queue:
                del self._by_sender[sender]
        return expired
