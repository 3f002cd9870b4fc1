"""How a full mempool (:class:`._mempool.Mempool`) makes room: the eviction candidates
(each sender's last numbered transaction, every unsequenced claim) in a heap by fee and
arrival, and the bytes each share holds (a sender's transactions with the unsequenced
claims on its escrows) in a heap by size. Functions of the pool, bound as its methods
(specs/ledger.md, "Mempool and ordering")."""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from ._admission import UNSEQUENCED, VerifiedTx
from ._errors import MempoolRejected
from ._pool_claims import PoolEntry as _Entry

if TYPE_CHECKING:
    from ._mempool import Mempool


def make_room(pool: Mempool, vtx: VerifiedTx, old: _Entry | None, bucket: bytes = b"") -> None:
    """Evict until ``vtx`` fits the pool's count and bytes (``old``, which it replaces,
    aside), or refuse it. Each eviction is the last pending transaction of its sender
    (nothing follows it, so no gap) or an unsequenced claim, never one of ``vtx``'s own
    sender's. ``bucket``: whose share ``vtx`` takes (an unsequenced claim's escrow
    owner; default its sender)."""
    size = len(vtx.raw)
    freed = len(old.vtx.raw) if old is not None else 0
    while (old is None and len(pool._ids) >= pool.max_size) or (
        pool._bytes - freed + size > pool.max_bytes
    ):
        victim = pool._victim_for(vtx, size - freed, bucket or vtx.sender)
        if victim is None:
            raise MempoolRejected("the mempool is full; retry later or raise the fee")
        pool.remove(victim.vtx)
        pool._evicted.append(victim.vtx)


def victim_for(pool: Mempool, vtx: VerifiedTx, growth: int, bucket: bytes) -> _Entry | None:
    """What ``vtx`` may evict: the lowest-fee last pending transaction if its fee is
    lower; else, among the share holding the most bytes (a sender's transactions with
    the unsequenced claims on its escrows), its last numbered one or its latest claim,
    if it pays no more than ``vtx`` and that share is more than ``vtx``'s (``bucket``'s)
    would be with it."""
    tx = vtx.tx
    lowest = pool._lowest_tail()
    if lowest is not None and lowest.vtx.tx.fee < tx.fee and lowest.vtx.sender != tx.sender:
        return lowest
    hog = pool._biggest_sender()
    if hog is None or hog == bucket:
        return None
    if pool._sender_bytes[hog] <= pool._sender_bytes.get(bucket, 0) + growth:
        return None
    queue = pool._by_sender.get(hog, {})
    cheapest = pool._claims.cheapest_of(hog)
    lasts = [
        *([cheapest] if cheapest is not None else []),
        *([queue[max(queue)]] if queue else []),
    ]
    lasts = [e for e in lasts if e.vtx.sender != tx.sender]
    if not lasts:
        return None
    last = min(lasts, key=lambda e: (e.vtx.tx.fee, -e.arrival))
    return last if last.vtx.tx.fee <= tx.fee else None


def count_bytes(pool: Mempool, sender: bytes, delta: int) -> None:
    pool._bytes += delta
    held = pool._sender_bytes.get(sender, 0) + delta
    if held:
        pool._sender_bytes[sender] = held
        heapq.heappush(pool._hogs, (-held, sender))
        if len(pool._hogs) > 2 * len(pool._sender_bytes) + 64:
            pool._hogs = [(-b, s) for s, b in pool._sender_bytes.items()]
            heapq.heapify(pool._hogs)
    else:
        pool._sender_bytes.pop(sender, None)


def biggest_sender(pool: Mempool) -> bytes | None:
    """The sender holding the most pending bytes; stale heap items on top are dropped."""
    while pool._hogs:
        held, sender = pool._hogs[0]
        if pool._sender_bytes.get(sender) == -held:
            return sender
        heapq.heappop(pool._hogs)
    return None


def push_tail(pool: Mempool, entry: _Entry) -> None:
    """``entry`` is now its sender's last pending transaction, or is an unsequenced
    claim: an eviction candidate. The heap is rebuilt from the live candidates when
    stale items outnumber them."""
    tx = entry.vtx.tx
    heapq.heappush(pool._tails, (tx.fee, -entry.arrival, tx.sender, tx.seq, entry.vtx.id))
    if len(pool._tails) > 2 * (len(pool._by_sender) + len(pool._claims)) + 64:
        pool._tails = [
            (e.vtx.tx.fee, -e.arrival, sender, seq, e.vtx.id)
            for sender, queue in pool._by_sender.items()
            for seq, e in queue.items()
            if seq + 1 not in queue
        ]
        pool._tails += [
            (e.vtx.tx.fee, -e.arrival, sender, UNSEQUENCED, e.vtx.id)
            for sender, e in pool._claims.entries()
        ]
        heapq.heapify(pool._tails)


def lowest_tail(pool: Mempool) -> _Entry | None:
    """The lowest fee among each sender's last pending transaction and the unsequenced
    claims (of those, the latest to arrive); stale heap items on top are dropped on
    the way."""
    while pool._tails:
        _, _, sender, seq, tx_id = pool._tails[0]
        if seq == UNSEQUENCED:
            entry = pool._claims.find(sender, tx_id)
            if entry is not None:
                return entry
        else:
            queue = pool._by_sender.get(sender, {})
            entry = queue.get(seq)
            if entry is not None and entry.vtx.id == tx_id and seq + 1 not in queue:
                return entry
        heapq.heappop(pool._tails)
    return None
