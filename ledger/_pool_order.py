"""The order in which a block takes the mempool's candidates (``Mempool.candidates``), and
the candidates it sets aside once they no longer fit the block being built.
specs/ledger.md, "Mempool and ordering".

Order. A candidate is each sender's next pending transaction, and each escrow owner's next
unsequenced claim (the claims on its escrows, the densest first, then by arrival). The
highest fee density comes first (:func:`~ledger._budget.fee_density`: the fee per share of
the block's budgets the transaction takes, the larger of its signature checks' share and
its bytes'); at equal density the block goes round robin: the candidate whose sender would
then have the fewest transactions in the block (this one included), then the fewest bytes,
then the earliest to arrive. When one is taken, its sender's following one (its owner's
next claim) becomes a candidate, ranked with that count and those bytes. Ranked by fee per
transaction, 31 settles of 64 payouts at ``min_fee + 1`` filled a block's 2,048 checks
ahead of every claim at ``min_fee`` (review round 70, F1).

Fit. Given the budget of the block being built (which the caller spends as it takes
candidates), the candidates are kept in buckets by their signature checks and by the power
of two their block bytes fall below. What is left of a block only shrinks, so a bucket
whose checks, or least possible bytes, no longer fit it is set aside whole for the rest of
the block when it comes up, without a look at its candidates: a flood of large candidates
costs one step per bucket (at most 65 × 17), not one per candidate. A candidate of a bucket
still open that does not fit (by its bytes: its checks fit) is passed over, with its
sender's later ones (they may not come before it; a claim alone); after
:data:`~ledger._budget.MAX_PASSED_OVER` such, every bucket whose largest bytes may not fit
what is left is set aside too (at most 17 times a block: the byte classes). A bucket set
aside keeps its candidates' senders' later transactions out of the block with them, and
the later claims of an owner whose claim it held (3 checks each too: a bucket of claims
is set aside only when fewer than 3 checks, or under twice their bytes, are left). So
candidates passed over never end the block while one that fits half the bytes left and
the checks left is pending (bar such claims); before, 64 settles passed over (65 checks
each) ended it with 33 checks left, every smaller candidate untried (review round 70, F1).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ._admission import VerifiedTx
from ._budget import MAX_PASSED_OVER, BlockBudget

if TYPE_CHECKING:
    from ._mempool import Mempool
    from ._pool_claims import PoolEntry
    from ._state import State

#: ``(-fee density, the sender's round: its count with this one, its bytes with this one,
#: arrival, sender (a claim: its escrow's owner), seq (a claim: -1 - its owner's place))``.
Key = tuple[int, int, int, int, bytes, int]
#: ``(signature checks, bit length of the block bytes)``.
Bucket = tuple[int, int]


def _ranked(
    e: PoolEntry, count: int, taken: int, who: bytes, seq: int
) -> tuple[tuple[Key, VerifiedTx], Bucket]:
    """``e`` as a candidate, its sender's ``count``-th after ``taken`` bytes, and its bucket."""
    vtx = e.vtx
    return ((-e.density, count, taken + len(vtx.raw), e.arrival, who, seq), vtx), e.place


class _Buckets:
    """The candidates in buckets, each a heap by :data:`Key`, and a heap of the buckets'
    heads (stale entries skipped when met: a head that is no longer its bucket's)."""

    def __init__(
        self, room: BlockBudget | None, first: list[tuple[tuple[Key, VerifiedTx], Bucket]]
    ) -> None:
        """``first``: the candidates to begin with (:func:`_ranked`)."""
        self.room = room
        self.buckets: dict[Bucket, list[tuple[Key, VerifiedTx]]] = {}
        for item, b in first:
            self.buckets.setdefault(b, []).append(item)
        for heap in self.buckets.values():
            heapq.heapify(heap)
        self.heads: list[tuple[Key, Bucket]] = [(h[0][0], b) for b, h in self.buckets.items()]
        heapq.heapify(self.heads)
        self.closed: set[Bucket] = set()
        #: Byte classes above this are closed (the sweep after passed-over candidates): a
        #: bucket of theirs made later, as an owner's claims come up one at a time, stays
        #: closed (each claim too large was looked at: review round 72, R72-2).
        self.max_bits = 64
        self.passed_over = 0

    def push(self, e: PoolEntry, count: int, taken: int, who: bytes, seq: int) -> None:
        """Make ``e`` a candidate, its sender's ``count``-th, after ``taken`` bytes."""
        item, b = _ranked(e, count, taken, who, seq)
        if b in self.closed or b[1] > self.max_bits:
            return  # it cannot fit this block, nor can its sender's later ones
        heap = self.buckets.setdefault(b, [])
        heapq.heappush(heap, item)
        if heap[0] is item:
            heapq.heappush(self.heads, (item[0], b))

    def pop(self) -> tuple[Key, VerifiedTx, bool] | None:
        """The best candidate of the buckets still open, and whether it fits; None when
        none is left."""
        room = self.room
        while self.heads:
            key, b = heapq.heappop(self.heads)
            heap = self.buckets.get(b)
            if heap is None or heap[0][0] != key:
                continue  # stale
            if room is not None:
                checks_left, bytes_left = room.room()
                if b[0] > checks_left or 1 << (b[1] - 1) > bytes_left:
                    self._close(b)
                    continue
            _, vtx = heapq.heappop(heap)
            if heap:
                heapq.heappush(self.heads, (heap[0][0], b))
            else:
                del self.buckets[b]
            fits = room is None or room.fits(vtx.raw, vtx.payload)
            if not fits:
                self._passed_over(room)
            return key, vtx, fits
        return None

    def _close(self, b: Bucket) -> None:
        self.buckets.pop(b, None)
        self.closed.add(b)

    def _passed_over(self, room: BlockBudget | None) -> None:
        self.passed_over += 1
        if self.passed_over < MAX_PASSED_OVER or room is None:
            return
        self.passed_over = 0
        _, bytes_left = room.room()
        # a class's largest bytes, (1 << bits) - 1, may not fit: closed, made or not
        self.max_bits = min(self.max_bits, (bytes_left + 1).bit_length() - 1)
        for b in [b for b in self.buckets if b[1] > self.max_bits]:
            self._close(b)


def candidates(pool: Mempool, state: State, room: BlockBudget | None) -> Iterator[VerifiedTx]:
    """``pool``'s candidates for the next block in order (the module's docstring); with
    ``room``, only those that fit it when they come up (the caller spends it)."""
    first = []
    for sender, queue in pool._by_sender.items():
        seq = state.next_seq(sender)
        e = queue.get(seq)
        if e is not None:
            first.append(_ranked(e, 1, 0, sender, seq))
    # The unsequenced claims on an escrow owner's escrows take their rounds among
    # themselves, each owner's first a candidate and its next pushed when one is taken
    # or passed over (``seq`` here: -1 - the owner's place in ``claims``).
    claims: list[Iterator[PoolEntry]] = []
    for queued in pool._claims.queues():
        e = next(queued)
        first.append(_ranked(e, 1, 0, e.bucket, -1 - len(claims)))
        claims.append(queued)
    order = _Buckets(room, first)
    while (popped := order.pop()) is not None:
        (_, count, taken, _, who, seq), vtx, fits = popped
        if fits:
            yield vtx
        if seq < 0:  # a claim: passed over alone, its owner's next comes up in its place
            following = next(claims[-1 - seq], None)
            if following is not None:
                nth, before = (count + 1, taken) if fits else (count, taken - len(vtx.raw))
                order.push(following, nth, before, who, seq)
            continue
        if not fits:
            continue  # its sender's later ones may not come before it
        nxt = pool._by_sender[who].get(seq + 1)
        if nxt is not None:
            order.push(nxt, count + 1, taken, who, seq + 1)
