"""The mempool's entries (:class:`PoolEntry`) and its unsequenced claims (:class:`ClaimPool`):
claims that take no sequence number (``UNSEQUENCED``, specs/ledger.md "Mempool and
ordering") are kept apart from the numbered transactions, one per sender and escrow, and
each is selected, dropped or evicted alone."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ._admission import VerifiedTx
from ._payloads import Claim
from ._state import State


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

    @property
    def pledge(self) -> int:
        """What its fee takes from its sender's balance (a claim's payout pays first)."""
        return max(0, self.vtx.tx.fee - self.payout)


def job_of(vtx: VerifiedTx) -> bytes:
    assert isinstance(vtx.payload, Claim)
    return vtx.payload.job_id


@dataclass(slots=True)
class ClaimPool:
    """Pending unsequenced claims: each sender's by job id, and how many each escrow has."""

    _by_sender: dict[bytes, dict[bytes, PoolEntry]] = field(default_factory=dict)
    _per_escrow: dict[bytes, int] = field(default_factory=dict)
    _count: int = 0

    def __len__(self) -> int:
        return self._count

    def of(self, sender: bytes) -> dict[bytes, PoolEntry]:
        """``sender``'s pending claims by job id (do not change it)."""
        return self._by_sender.get(sender, {})

    def at(self, job_id: bytes) -> int:
        """How many claims of ``job_id``'s escrow are pending."""
        return self._per_escrow.get(job_id, 0)

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
        self._per_escrow[job] = self._per_escrow.get(job, 0) + 1
        self._count += 1

    def remove(self, vtx: VerifiedTx) -> bool:
        """Take ``vtx`` out; whether it was pending."""
        job = job_of(vtx)
        mine = self._by_sender.get(vtx.sender)
        entry = mine.get(job) if mine is not None else None
        if mine is None or entry is None or entry.vtx.id != vtx.id:
            return False
        del mine[job]
        if not mine:
            del self._by_sender[vtx.sender]
        self._count -= 1
        left = self._per_escrow[job] - 1
        if left:
            self._per_escrow[job] = left
        else:
            del self._per_escrow[job]
        return True

    def ranked(self) -> Iterator[tuple[PoolEntry, int, int]]:
        """Each pending claim with its sender's round among its claims, by arrival, and
        the bytes its sender's claims take with it (the block's round robin)."""
        for mine in self._by_sender.values():
            taken = 0
            for count, entry in enumerate(sorted(mine.values(), key=lambda e: e.arrival), 1):
                taken += len(entry.vtx.raw)
                yield entry, count, taken

    def stale(self, state: State) -> list[tuple[VerifiedTx, str | None]]:
        """The claims ``state`` made stale, taken out: applied ones (their sender is
        among the escrow's claimants) with no reason, those past their expiry, their
        window or their escrow's close with the reason their senders should hear."""
        gone: list[tuple[VerifiedTx, str | None]] = []
        for sender, entry in list(self.entries()):
            e = state.escrow(job_of(entry.vtx))
            why = None
            if e is not None and sender in e.claimed:
                pass
            elif entry.vtx.tx.expiry_height <= state.height:
                why = f"expired at height {entry.vtx.tx.expiry_height} before it was in a block"
            elif e is None or not e.is_open:
                why = "its escrow was closed before the claim was in a block"
            elif entry.until <= state.height:
                why = f"its claim window ended at height {entry.until}"
            else:
                continue
            self.remove(entry.vtx)
            gone.append((entry.vtx, why))
        return gone
