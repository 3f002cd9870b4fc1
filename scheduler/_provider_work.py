"""What a provider tracks of each job it bid on (:class:`Work`, its :class:`WorkPhase`), and
the signed Result it delivers, with the output sealed under its one-time key."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from enum import StrEnum

from protocol import (
    Award,
    Bid,
    JobSpec,
    Outcome,
    Receipt,
    Result,
    Signed,
    Usage,
    content_hash,
    key_hash,
    output_key,
    seal_output,
    sign,
)

from ._config import ProviderConfig
from ._effects import Output

_NO_HASH = bytes(32)


class WorkPhase(StrEnum):
    """Where a provider's work on one job is (specs/marketplace.md, "Work phases")."""

    #: Our bid is out; an award may come while it lives.
    BIDDING = "bidding"
    #: An award for our bid is held: our ledger does not show the job's escrow covering it
    #: yet (our view may be a block behind the requester's). It runs once a block shows
    #: one; after ``AWARD_HOLD_BLOCKS`` blocks without, it is declined.
    AWARDED = "awarded"
    #: Awarded: the sandbox runs the job.
    RUNNING = "running"
    #: The result and the sealed output went to the requester; resent until its receipt
    #: arrives.
    DELIVERED = "delivered"
    #: The requester's plain receipt is held: the key goes (resent until the work ends),
    #: and we wait to be paid, or claim with it in the claim window. A sealed receipt
    #: waits here only until the escrow covers the award.
    RECEIPTED = "receipted"
    #: We claimed our price with the award and the receipt (at once with a sealed one).
    CLAIMED = "claimed"
    #: Finished (``Work.end`` says how); the work is forgotten.
    CLOSED = "closed"


@dataclass(slots=True)
class Work:
    """One job this provider bid on, as it tracks it (read it, do not change it)."""

    job: Signed[JobSpec]
    bid: Signed[Bid]
    #: When the requester's bid window for our latest bid ends, capped at ``MAX_PENDING_MS``
    #: after the bid: until then the bid is pending and counts as load; after it, an award
    #: is still honoured while the bid lives.
    window_end_ms: int = 0
    phase: WorkPhase = WorkPhase.BIDDING
    older: tuple[Signed[Bid], ...] = ()
    award: Signed[Award] | None = None
    started_ms: int = 0
    result: Signed[Result] | None = None
    #: The output, sealed under ``key``: what the result delivers (empty after a failed run).
    sealed: bytes = b""
    key: bytes = b""
    #: The job's escrow was seen covering our award (``scheduler._ledger.uncovered``).
    covered: bool = False
    #: The interval of the next resend (it doubles: the sealed output before the receipt,
    #: the key after a plain one), and when the key last went.
    resend_ms: int = 0
    key_sent_ms: int = 0
    #: The sealed bytes' resends so far (``_provider_delivered.MAX_OUTPUT_RESENDS``).
    resends: int = 0
    receipt: Signed[Receipt] | None = None
    #: The height we knew when we asked for our place in the escrow (as the run started),
    #: and whether our key went on it (a sealed receipt, our place reserved at the award's
    #: price).
    reserve_height: int = 0
    keyed: bool = False
    paid: int = 0
    end: str = ""
    #: While BIDDING (or AWARDED): in the provider's :class:`BidBook`; the ledger showed the
    #: job's escrow, locked by its requester and open (the bid is *funded*); the bid is
    #: counted pending.
    booked: bool = False
    funded: bool = False
    counted: bool = False
    #: While AWARDED: the blocks seen since the award without its escrow.
    held_blocks: int = 0
    #: Our estimate of the run, as the awarded bid made it: an award starts only with at
    #: least this long left before its deadline (``Provider._start_or_hold``).
    run_ms: int = 0

    @property
    def spec(self) -> JobSpec:
        return self.job.message

    @property
    def id(self) -> bytes:
        return self.job.id

    @property
    def plain(self) -> bool:
        """We hold a plain receipt (claimable only from the claim window)."""
        return self.receipt is not None and not self.receipt.message.sealed

    @property
    def key_now(self) -> bool:
        """A plain receipt gets our key before we are paid only for a job compared within
        tolerances, whose outputs must be opened before any verdict. In exact mode a
        verified winner gets a sealed receipt: a requester that sends a plain one there
        would read our output and could then settle with other payees."""
        return self.plain and self.spec.verification.mode == "tolerance"


def seal_result(
    work: Work,
    config: ProviderConfig,
    outcome: Outcome,
    output: Output | None,
    usage: Usage,
    message: str,
    now_ms: int,
) -> Signed[Result]:
    """The signed Result of the awarded run of ``work`` (``output`` when ``ok``). An output
    is sealed under its one-time key (kept in ``work``): the Result names the sealed blob
    and the key's hash. Zero hashes and size for any other outcome."""
    assert work.award is not None
    replica = work.award.message.replica
    if output is not None and outcome == "ok":
        work.key = output_key(config.key, work.id, replica, output.commitment)
        work.sealed = seal_output(work.key, output.data)
        commitment, cls = output.commitment, output.determinism_class
    else:
        commitment, cls = _NO_HASH, work.bid.message.determinism_class
    result = Result(
        job_id=work.id,
        provider=bytes(config.key.verify_key),
        replica=replica,
        outcome=outcome,
        message=message[:1024],
        output_commitment=commitment,
        output_hash=content_hash(work.sealed) if work.sealed else _NO_HASH,
        output_size=len(work.sealed),
        key_hash=key_hash(work.key) if work.key else _NO_HASH,
        determinism_class=cls,
        usage=usage,
        finished_ms=now_ms,
    )
    return sign(result, config.key, config.chain_id)


class BidBook:
    """The provider's open bids, counted as they change, so that an announcement costs the
    same however many bids are open (specs/daemon.md, "Provider bounds on announcements").

    Per requester, its *pending* bids (the bid window may still be open: until
    ``Work.window_end_ms``), funded and not; their sums, with each requester's funded ones
    capped at ``share``; and the open bids (BIDDING, pending or not) for jobs with no
    escrow seen (and the awards held for theirs), which the provider bounds. Every BIDDING
    :class:`Work` goes in with :meth:`add` and out with :meth:`drop` (once it runs, or is
    gone); :meth:`expire` ends the pending time."""

    def __init__(self, share: int) -> None:
        self.share = share
        #: requester -> [funded, unfunded] pending bids
        self.by_requester: dict[bytes, list[int]] = {}
        self.funded = 0
        self.funded_capped = 0
        self.unfunded = 0
        #: Open bids, and awards held, for jobs whose escrow the ledger has not shown; and
        #: per requester (only requesters with one).
        self.unfunded_open = 0
        self._unfunded_open_of: dict[bytes, int] = {}
        self._ends: list[tuple[int, bytes]] = []

    def add(self, work: Work) -> None:
        """``work`` is a new bid (``funded`` set as the ledger shows its job now)."""
        work.booked = True
        if not work.funded:
            self._open(work, 1)
        self.renew(work)

    def renew(self, work: Work) -> None:
        """``work`` bid again (a re-announcement): pending until its new window's end."""
        if not work.counted:
            self._count(work, 1)
        heapq.heappush(self._ends, (work.window_end_ms, work.id))

    def fund(self, work: Work) -> None:
        """The ledger now shows ``work``'s escrow, locked by its requester and open."""
        if work.funded or not work.booked:
            return
        if work.counted:
            self._count(work, -1)
            work.funded = True
            self._count(work, 1)
        else:
            work.funded = True
        self._open(work, -1)

    def awarded(self, work: Work) -> None:
        """``work`` is awarded: no longer pending. It stays in the book (an award held
        for its escrow counts among the unfunded) until :meth:`drop`."""
        if work.booked and work.counted:
            self._count(work, -1)

    def drop(self, work: Work) -> None:
        """``work`` leaves the book: it runs, or it is lost, refused, declined or its job
        ended."""
        if not work.booked:
            return
        work.booked = False
        if work.counted:
            self._count(work, -1)
        if not work.funded:
            self._open(work, -1)

    def expire(self, now_ms: int, work: dict[bytes, Work]) -> None:
        """Bids whose window ended by ``now_ms`` are no longer pending."""
        ends = self._ends
        while ends and ends[0][0] <= now_ms:
            end, job_id = heapq.heappop(ends)
            w = work.get(job_id)
            if w is not None and w.booked and w.counted and w.window_end_ms == end:
                self._count(w, -1)

    def reshare(self, share: int) -> None:
        """The share changed (the node's slots were reconfigured): recount the capped sum."""
        if share != self.share:
            self.share = share
            self.funded_capped = sum(min(f, share) for f, _ in self.by_requester.values())

    def pending_of(self, requester: bytes) -> tuple[int, int]:
        """``requester``'s pending bids: (funded, unfunded)."""
        counts = self.by_requester.get(requester)
        return (counts[0], counts[1]) if counts is not None else (0, 0)

    def unfunded_open_of(self, requester: bytes) -> int:
        """``requester``'s open bids (and awards held) for jobs with no escrow seen."""
        return self._unfunded_open_of.get(requester, 0)

    def _open(self, work: Work, n: int) -> None:
        who = work.spec.requester
        self.unfunded_open += n
        left = self._unfunded_open_of.get(who, 0) + n
        if left:
            self._unfunded_open_of[who] = left
        else:
            del self._unfunded_open_of[who]

    def _count(self, work: Work, n: int) -> None:
        who = work.spec.requester
        counts = self.by_requester.setdefault(who, [0, 0])
        if work.funded:
            before = min(counts[0], self.share)
            counts[0] += n
            self.funded += n
            self.funded_capped += min(counts[0], self.share) - before
        else:
            counts[1] += n
            self.unfunded += n
        if counts == [0, 0]:
            del self.by_requester[who]
        work.counted = n > 0


def remember_latest(seen: dict[bytes, None], key: bytes, limit: int) -> None:
    """Put ``key`` last in ``seen``, which keeps the latest ``limit`` (oldest dropped)."""
    seen.pop(key, None)
    while len(seen) >= limit:
        del seen[next(iter(seen))]
    seen[key] = None
