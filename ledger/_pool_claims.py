"""The mempool's entries (:class:`PoolEntry`) and its unsequenced claims (:class:`ClaimPool`):
claims that take no sequence number (``UNSEQUENCED``, specs/ledger.md "Mempool and
ordering") are kept apart from the numbered transactions, one per sender and escrow, and
each is selected, dropped or evicted alone; and what admits an unfunded sender's numbered
claim (:func:`check_unfunded_claim`)."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field

import protocol
from protocol import Award, ProtocolError, Receipt

from ._admission import VerifiedMessages, VerifiedTx
from ._budget import fee_density, signature_checks, tx_block_bytes
from ._errors import MempoolRejected
from ._payloads import Claim
from ._state import Escrow, State


@dataclass(slots=True)
class PoolEntry:
    """A pending transaction."""

    vtx: VerifiedTx
    arrival: int
    #: How many transactions this ``(sender, seq)`` (an unsequenced claim: this
    #: ``(sender, job)``) replaced while pending.
    replaced: int = 0
    #: An unsequenced claim's last height it may apply at (its escrow's expiry, a sealed
    #: receipt's ``claim_by``); past it the claim is dropped.
    until: int = 0
    #: A claim's payout (it may pay its fee out of it).
    payout: int = 0
    #: A claim's escrow's owner, who signed its Award: the party its room and rank count
    #: against (claimant keys are free; an owner funds its locks).
    owner: bytes = b""
    #: Its fee density (``_budget.fee_density``) and its place among a block's candidates
    #: by size (``_pool_order.py``): set on creation.
    density: int = field(init=False, default=0)
    place: tuple[int, int] = field(init=False, default=(0, 0))

    def __post_init__(self) -> None:
        vtx = self.vtx
        self.density = fee_density(vtx.tx.fee, vtx.raw, vtx.payload)
        self.place = (signature_checks(vtx.payload), tx_block_bytes(vtx.raw).bit_length())

    @property
    def bucket(self) -> bytes:
        """Whose share of the pool it takes: a claim's escrow owner's, else its sender's."""
        return self.owner or self.vtx.sender

    @property
    def pledge(self) -> int:
        """What its fee takes from its sender's balance (a claim's payout pays first)."""
        return max(0, self.vtx.tx.fee - self.payout)


def job_of(vtx: VerifiedTx) -> bytes:
    assert isinstance(vtx.payload, Claim)
    return vtx.payload.job_id


@dataclass(slots=True)
class ClaimPool:
    """Pending unsequenced claims: each sender's by job id, each escrow owner's by
    transaction id, and how many each escrow has."""

    _by_sender: dict[bytes, dict[bytes, PoolEntry]] = field(default_factory=dict)
    _by_owner: dict[bytes, dict[bytes, PoolEntry]] = field(default_factory=dict)
    #: Each owner's eviction candidates, ``(fee, -arrival, tx_id)``: the cheapest, then
    #: latest, on top; an item no longer pending is stale, dropped when met. Scanning an
    #: owner's share for it cost an admission to a full pool 20 ms with 20,000 claims on one
    #: owner's escrows (round 15, R15-1).
    _cheapest: dict[bytes, list[tuple[int, int, bytes]]] = field(default_factory=dict)
    _per_escrow: dict[bytes, int] = field(default_factory=dict)
    #: What the claims pending on each escrow would pay, in all.
    _payouts: dict[bytes, int] = field(default_factory=dict)
    _count: int = 0

    def __len__(self) -> int:
        return self._count

    def of(self, sender: bytes) -> dict[bytes, PoolEntry]:
        """``sender``'s pending claims by job id (do not change it)."""
        return self._by_sender.get(sender, {})

    def of_owner(self, owner: bytes) -> dict[bytes, PoolEntry]:
        """The pending claims on ``owner``'s escrows by transaction id (do not change it)."""
        return self._by_owner.get(owner, {})

    def cheapest_of(self, owner: bytes) -> PoolEntry | None:
        """The lowest-fee (of those, the latest) pending claim on ``owner``'s escrows."""
        owned = self._by_owner.get(owner)
        heap = self._cheapest.get(owner)
        while owned and heap:
            entry = owned.get(heap[0][2])
            if entry is not None:
                return entry
            heapq.heappop(heap)
        return None

    def at(self, job_id: bytes) -> int:
        """How many claims of ``job_id``'s escrow are pending."""
        return self._per_escrow.get(job_id, 0)

    def paying(self, job_id: bytes) -> int:
        """What the claims pending on ``job_id``'s escrow would pay, in all."""
        return self._payouts.get(job_id, 0)

    def find(self, sender: bytes, tx_id: bytes) -> PoolEntry | None:
        """The pending claim ``tx_id`` of ``sender``, if it still is."""
        for entry in self.of(sender).values():
            if entry.vtx.id == tx_id:
                return entry
        return None

    def entries(self) -> Iterator[tuple[bytes, PoolEntry]]:
        for sender, mine in self._by_sender.items():
            for entry in mine.values():
                yield sender, entry

    def add(self, entry: PoolEntry) -> None:
        job = job_of(entry.vtx)
        self._by_sender.setdefault(entry.vtx.sender, {})[job] = entry
        owned = self._by_owner.setdefault(entry.owner, {})
        owned[entry.vtx.id] = entry
        heap = self._cheapest.setdefault(entry.owner, [])
        heapq.heappush(heap, (entry.vtx.tx.fee, -entry.arrival, entry.vtx.id))
        if len(heap) > 2 * len(owned) + 64:
            heap[:] = [(e.vtx.tx.fee, -e.arrival, i) for i, e in owned.items()]
            heapq.heapify(heap)
        self._per_escrow[job] = self._per_escrow.get(job, 0) + 1
        self._payouts[job] = self._payouts.get(job, 0) + entry.payout
        self._count += 1

    def remove(self, vtx: VerifiedTx) -> PoolEntry | None:
        """Take ``vtx`` out; its entry if it was pending."""
        job = job_of(vtx)
        mine = self._by_sender.get(vtx.sender)
        entry = mine.get(job) if mine is not None else None
        if mine is None or entry is None or entry.vtx.id != vtx.id:
            return None
        del mine[job]
        if not mine:
            del self._by_sender[vtx.sender]
        owned = self._by_owner[entry.owner]
        del owned[vtx.id]
        if not owned:
            del self._by_owner[entry.owner]
            del self._cheapest[entry.owner]
        self._count -= 1
        left = self._per_escrow[job] - 1
        if left:
            self._per_escrow[job] = left
            self._payouts[job] -= entry.payout
        else:
            del self._per_escrow[job]
            del self._payouts[job]
        return entry

    def queues(self) -> Iterator[Iterator[PoolEntry]]:
        """For each escrow owner, the pending claims on its escrows, the highest fee density
        first (``_budget.fee_density``), then in the order they arrived: the block's round
        robin takes one round of them at a time, as of any one sender's transactions
        (claimant keys are free, escrows are not: review round 14, R14-2; by arrival
        alone, a fee-10 claim behind a fee-0 one of the same owner's ranked last: round 15,
        R15-3)."""
        for owned in self._by_owner.values():
            if len(owned) == 1:
                yield iter(owned.values())
            else:
                yield iter(sorted(owned.values(), key=lambda e: (-e.density, e.arrival)))

    def stale(self, state: State) -> list[tuple[PoolEntry, str | None]]:
        """The claims ``state`` made stale, taken out: applied ones (their sender is
        among the escrow's claimants) with no reason, those past their expiry, their
        window or their escrow's close with the reason their senders should hear."""
        gone: list[tuple[PoolEntry, str | None]] = []
        for sender, entry in list(self.entries()):
            e = state.escrow(job_of(entry.vtx))
            why = None
            if e is not None and sender in e.claimed:
                pass
            elif entry.vtx.tx.expiry_height <= state.height:
                why = f"expired at height {entry.vtx.tx.expiry_height} before it was in a block"
            elif e is None or not e.claimable_by(sender):
                why = "its escrow was closed before the claim was in a block"
            elif entry.until <= state.height:
                why = f"its claim window ended at height {entry.until}"
            else:
                continue
            self.remove(entry.vtx)
            gone.append((entry, why))
        return gone


def check_unfunded_claim(
    p: Claim, e: Escrow, sender: bytes, state: State, known: VerifiedMessages
) -> None:
    """Refuse an unfunded sender's claim that the next block's claim rule would refuse
    (``_rules.py``, ``_check_claim``), its Award and Receipt included: such a claim takes a
    place that costs its sender nothing, so junk ones (a genuine Award with any receipt)
    must not fill the escrow's ``max_payees`` places and keep a real claim out. Two
    signature checks, one more than a transfer's admission."""
    try:
        award = known.decode(p.award, state.chain_id, Award)
        receipt = known.decode(p.receipt, state.chain_id, Receipt)
    except ProtocolError:
        raise MempoolRejected(
            "an unfunded claim needs the escrow owner's signed Award and Receipt"
        ) from None
    if not (
        award.requester == receipt.requester == e.owner
        and award.provider == receipt.provider == sender
        and award.job_id == receipt.job_id == p.job_id
        and award.replica == receipt.replica
    ):
        raise MempoolRejected(
            "an unfunded claim needs the escrow owner's Award and Receipt for it (this job, "
            "this sender, one replica)"
        )
    if protocol.key_hash(p.key) != receipt.key_hash:
        raise MempoolRejected("a claim must reveal the key its receipt names")
    height = state.height + 1  # the earliest block that could take it
    if receipt.sealed and receipt.claim_by < height:
        raise MempoolRejected(
            f"the sealed receipt is claimable up to height {receipt.claim_by} (its claim_by); "
            f"the next block is {height}"
        )
    if not receipt.sealed and height < e.claim_height:
        raise MempoolRejected(f"claims open at height {e.claim_height}; the next block is {height}")
    if height >= e.expiry_height:
        raise MempoolRejected(f"escrow expired at height {e.expiry_height}; claims are closed")
