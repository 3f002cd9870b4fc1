"""The mempool: validated pending transactions, ordered by fee for the next block.

Every transaction is verified once, on entry (signature, chain, payload). A transaction is
refused if it is a duplicate, a replay (its seq is below the sender's next), expired, below
the minimum fee, more than ``max_ahead`` ahead of the sender's sequence (which also bounds
the transactions one account has pending), valid for more than ``max_expiry_ahead`` blocks,
too large for a block alone (``_budget.py``), or if the pool is full of higher fees. Only
a *funded* sender is admitted: a genesis coordinator, or an account whose balance pays
the fees of all its pending transactions with this one and which holds something (balance
or stake); an unfunded account only with a claim that the escrow's owner signed for it (at
most the escrow's ``max_payees`` such claims pending per escrow). So keys that never
received credits cannot fill the pool, and an account cannot pledge more fees than it holds.

No gaps: a sender's pending sequence numbers always run without a hole from its next on
the chain. A transaction is admitted only at the sender's next sequence number, one past
its highest pending, or at a pending one (a second transaction with the same
``(sender, seq)`` replaces the first only with a strictly higher fee); a later one is
refused (:class:`SequenceGap`: the sender submits it again once the ones before it are
in). A transaction that leaves the pool without entering a block (dropped when the block
is made, expired) takes its sender's later ones with it (:data:`DROPPED_BEHIND`), and a
full pool evicts only the last pending transaction of a sender. So everything pending can
be selected in turn: nothing waits behind a hole until its expiry, holding a place it never
pays for.

Block selection takes the highest fee first among each sender's next transaction (so a
sender's transactions stay in sequence order), ties in arrival order. The eviction
candidates (each sender's last pending transaction) are kept in a heap with lazy deletion,
so a submission refused by a full pool costs its signature check and a heap look-up.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import protocol
from protocol import Award, ProtocolError

from ._budget import fits_a_block
from ._errors import ExpiredTransaction, FeeTooLow, MempoolRejected, SequenceError, SequenceGap
from ._payloads import Claim
from ._rules import VerifiedTx, verify_tx
from ._state import State

#: Most transactions of one account pending (its sequence numbers next .. next + this - 1).
MAX_AHEAD = 64
#: Most blocks ahead of the chain's height a pending transaction may stay valid.
MAX_EXPIRY_AHEAD = 1_000
#: How the reason of a transaction dropped with an earlier one of its sender begins (the
#: wire carries only the text): it did nothing wrong, and may be signed again.
DROPPED_BEHIND = "dropped behind sequence number"


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
    #: Each sender's pending transactions by sequence number (a run with no hole).
    _by_sender: dict[bytes, dict[int, _Entry]] = field(default_factory=dict)
    _ids: set[bytes] = field(default_factory=set)
    #: Pending claims from unfunded senders, by job id: their transaction ids.
    _unfunded_claims: dict[bytes, set[bytes]] = field(default_factory=dict)
    #: Eviction candidates: ``(fee, -arrival, sender, seq, tx_id)`` of each sender's last
    #: pending transaction; an item no longer pending or no longer last is stale, skipped
    #: when met (whatever becomes a sender's last is pushed again then).
    _tails: list[tuple[int, int, bytes, int, bytes]] = field(default_factory=list)
    _arrivals: int = 0
    #: Transactions evicted for a higher fee since the caller last took them (its senders
    #: should hear of it: :meth:`take_evicted`).
    _evicted: list[VerifiedTx] = field(default_factory=list)

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
        if not fits_a_block(vtx.raw, vtx.payload, self.chain_id):
            # (the payload limits keep every transaction far below both budgets today)
            raise MempoolRejected(
                "the transaction is over a block's byte or signature-check budget alone: "
                "it could never be in a block; split it"
            )
        queue = self._by_sender.get(tx.sender, {})
        old = queue.get(tx.seq)
        if old is not None and tx.fee <= old.vtx.tx.fee:
            raise MempoolRejected(
                f"a transaction with sequence number {tx.seq} is already pending; "
                "replace it only with a higher fee"
            )
        claim_job = self._admit_sender(vtx, state, queue, old)
        if old is None:
            following = next_seq  # the sequence number after the sender's pending run
            while following in queue:
                following += 1
            if tx.seq != following:  # after the other checks: only this one is worth a retry
                raise SequenceGap(
                    f"sequence number {tx.seq} {SequenceGap.TEXT}: the sender's next is "
                    f"{following}; submit that one first"
                )
        if old is None and len(self._ids) >= self.max_size:
            victim = self._lowest_tail()
            if victim is None or victim.vtx.tx.fee >= tx.fee or victim.vtx.sender == tx.sender:
                # (a sender's own last one is not evicted for its next: that leaves a gap)
                raise MempoolRejected("the mempool is full; retry later or raise the fee")
            self.remove(victim.vtx)  # the last of its sender's: nothing follows it
            self._evicted.append(victim.vtx)
        if old is not None:
            self._forget(old.vtx)
        self._arrivals += 1
        entry = _Entry(vtx, self._arrivals)
        queue = self._by_sender.setdefault(tx.sender, queue)
        queue[tx.seq] = entry
        self._ids.add(vtx.id)
        if tx.seq + 1 not in queue:
            self._push_tail(entry)
        if claim_job is not None:
            self._unfunded_claims.setdefault(claim_job, set()).add(vtx.id)

    def take_evicted(self) -> list[VerifiedTx]:
        """The transactions evicted for higher fees since the last call."""
        evicted, self._evicted = self._evicted, []
        return evicted

    def _admit_sender(
        self, vtx: VerifiedTx, state: State, queue: dict[int, _Entry], old: _Entry | None
    ) -> bytes | None:
        """Refuse an unfunded sender, or one whose balance does not pay the fees of all
        its pending transactions with this one (``old``, which this one replaces, aside);
        returns the job id when the transaction is admitted as an unfunded sender's claim."""
        tx = vtx.tx
        if state.is_coordinator(tx.sender):
            return None
        account = state.account(tx.sender)
        if tx.fee > account.balance:
            raise MempoolRejected(f"balance {account.balance} cannot pay the fee {tx.fee}")
        pledged = sum(e.vtx.tx.fee for e in queue.values()) - (old.vtx.tx.fee if old else 0)
        if pledged + tx.fee > account.balance:
            raise MempoolRejected(
                f"balance {account.balance} cannot pay the fee {tx.fee} on top of the fees "
                f"{pledged} of the sender's {len(queue)} pending transactions"
            )
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

    def _push_tail(self, entry: _Entry) -> None:
        """``entry`` is now its sender's last pending transaction: an eviction candidate.
        The heap is rebuilt from the live candidates when stale items outnumber them."""
        tx = entry.vtx.tx
        heapq.heappush(self._tails, (tx.fee, -entry.arrival, tx.sender, tx.seq, entry.vtx.id))
        if len(self._tails) > 2 * len(self._by_sender) + 64:
            self._tails = [
                (e.vtx.tx.fee, -e.arrival, sender, seq, e.vtx.id)
                for sender, queue in self._by_sender.items()
                for seq, e in queue.items()
                if seq + 1 not in queue
            ]
            heapq.heapify(self._tails)

    def _lowest_tail(self) -> _Entry | None:
        """The lowest fee among each sender's last pending transaction (of those, the
        latest to arrive); stale heap items on top are dropped on the way."""
        while self._tails:
            _, _, sender, seq, tx_id = self._tails[0]
            queue = self._by_sender.get(sender, {})
            entry = queue.get(seq)
            if entry is not None and entry.vtx.id == tx_id and seq + 1 not in queue:
                return entry
            heapq.heappop(self._tails)
        return None

    def remove(self, vtx: VerifiedTx) -> list[VerifiedTx]:
        """Remove ``vtx`` and, since they would wait behind its hole, its sender's later
        pending transactions; returns those later ones (nothing if ``vtx`` is not pending)."""
        queue = self._by_sender.get(vtx.sender)
        if queue is None:
            return []
        entry = queue.get(vtx.tx.seq)
        if entry is None or entry.vtx.id != vtx.id:
            return []
        later: list[VerifiedTx] = []
        seq = vtx.tx.seq
        while seq in queue:
            gone = queue.pop(seq)
            self._forget(gone.vtx)
            if gone is not entry:
                later.append(gone.vtx)
            seq += 1
        below = queue.get(vtx.tx.seq - 1)
        if below is not None:
            self._push_tail(below)  # its sender's last now
        if not queue:
            del self._by_sender[vtx.sender]
        return later

    def select(self, state: State, limit: int) -> list[VerifiedTx]:
        """Up to ``limit`` candidates for the next block, highest fee first, each sender's
        in sequence order starting at its next sequence number."""
        return list(itertools.islice(self.candidates(state), limit))

    def candidates(self, state: State) -> Iterator[VerifiedTx]:
        """Every candidate in the order :meth:`select` gives, made as they are taken (the
        block builder takes them until the block is full, whatever it refuses on the way;
        the pool must not change meanwhile)."""
        heap: list[tuple[int, int, bytes, int]] = []
        for sender, queue in self._by_sender.items():
            seq = state.next_seq(sender)
            e = queue.get(seq)
            if e is not None:
                heap.append((-e.vtx.tx.fee, e.arrival, sender, seq))
        heapq.heapify(heap)
        while heap:
            _, _, sender, seq = heapq.heappop(heap)
            queue = self._by_sender[sender]
            yield queue[seq].vtx
            nxt = queue.get(seq + 1)
            if nxt is not None:
                heapq.heappush(heap, (-nxt.vtx.tx.fee, nxt.arrival, sender, seq + 1))

    def prune(self, state: State) -> list[tuple[VerifiedTx, str]]:
        """Drop what ``state`` made stale: applied or replayed seqs silently; expired ones,
        and each sender's later ones behind them, with the reason their senders should
        hear (returned, in sequence order)."""
        dropped: list[tuple[VerifiedTx, str]] = []
        for sender in list(self._by_sender):
            queue = self._by_sender[sender]
            next_seq = state.next_seq(sender)
            for seq in [s for s in queue if s < next_seq]:
                self._forget(queue.pop(seq).vtx)
            seq = next_seq
            while seq in queue and queue[seq].vtx.tx.expiry_height > state.height:
                seq += 1
            if queue and len(queue) != seq - next_seq:  # an expired one (or a hole) at seq
                first = queue.get(seq)
                if first is not None:
                    expiry = first.vtx.tx.expiry_height
                    why = f"expired at height {expiry} before it was in a block"
                    dropped.append((first.vtx, why))
                    behind = f"{DROPPED_BEHIND} {seq}, which {why}"
                    dropped += [(v, behind) for v in self.remove(first.vtx)]
                else:
                    behind = f"{DROPPED_BEHIND} {seq}, which is not pending"
                    for s in sorted(s for s in queue if s > seq):
                        dropped.append((queue.pop(s).vtx, behind))
                        self._forget(dropped[-1][0])
                    if seq - 1 in queue:
                        self._push_tail(queue[seq - 1])
            if not queue:
                self._by_sender.pop(sender, None)
        return dropped
