"""What a requester holds about its jobs: a job's phase, each award (replica) of it and
its state, and the bounds on both. The :class:`~scheduler.Requester` machine changes them;
callers read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from protocol import Award, Bid, JobSpec, NoBid, Receipt, Result, Signed

from ._effects import JobDone, Output
from ._ledger import EscrowView


class JobPhase(StrEnum):
    """Where a requester's job is (specs/marketplace.md, "Job phases")."""

    #: Announced; the escrow lock is on its way into a block. Nothing is awarded yet.
    LOCKING = "locking"
    #: The escrow is locked and a bid window is open.
    COLLECTING = "collecting"
    #: Replicas are awarded and watched.
    EXECUTING = "executing"
    #: Decided; the settlement (or the refund at expiry) is on its way.
    SETTLING = "settling"
    #: The escrow is closed on the ledger.
    CLOSED = "closed"


class ReplicaState(StrEnum):
    """Where one award of a job is (specs/marketplace.md, "Replica states")."""

    RUNNING = "running"
    #: Its Result arrived: the output commitment, not yet the output bytes (they follow the
    #: receipt; specs/marketplace.md, "Fair exchange").
    COMMITTED = "committed"
    DELIVERED = "delivered"
    FAILED = "failed"


# Why a replica failed, when it counts against the provider.
_SILENT = "went silent"
_LATE = "missed its deadline"
_CORRUPT = "delivered output bytes that do not match its commitment"
_WITHHELD = "withheld its output after the receipt"
#: A sealed receipt's key comes with its holder's claim, in a block, or, where its place
#: is reserved in the escrow, at once: the receipt names the last height that claim may
#: land at (``claim_by``), this many blocks after the height it was signed at, and the
#: replica is not failed as withholding it before that block. A reserved provider that
#: sent its key waits for our settle until ``CLAIM_MARGIN_BLOCKS`` before it, then claims.
KEY_DUE_BLOCKS = 8
#: The kinds of receipt a replica may be wanted for (``Replica.want``).
SEALED = "sealed"
PLAIN = "plain"
# A declined award costs nothing: the provider may bid again, the budget is not used.
_DECLINED = "declined the award"
#: A declined award whose provider reserved its place in the escrow first (it counts).
_DECLINED_RESERVED = "declined the award after reserving its place"
#: A replica whose key never came while the escrow had no place left for its provider
#: (others took every one: it could be neither reserved nor paid). Not its fault.
_NO_PLACE = "no place was left for it in the escrow"
#: An audit's output set aside: the two disagreed and no established provider was left
#: to decide between them (``_requester_policy.drop_failed_audit``).
_SET_ASIDE = "its audit disagreed and nobody was left to decide: set aside"
# A replica whose provider refused the job itself (its sandbox's admission): the failure
# reason a Result with outcome ``rejected`` gives ("reported <outcome>: <message>").
_REJECTED = "reported rejected: "
#: Award replica indexes are one byte on the wire.
MAX_AWARDS = 256
#: Announcements of a job nobody answers before it fails with ``no_response``.
MAX_SILENT_ANNOUNCEMENTS = 3
#: Times an award with no sign of life is sent again.
MAX_AWARD_RESENDS = 2
#: Winners' Results sent as slash evidence, those holding the most first: three, which with
#: the offender's make the four a report carries. The coordinator makes witnesses of the
#: two of them (``ledger.MIN_MAJORITY``, the fewest the ledger takes, since its slash takes
#: no more than the least any witness holds) that the escrow paid and that hold the most
#: by its own reckoning when the slash lands.
WITNESSES = 3
#: Blocks ahead at which the requester reckons what a winner holds, ranking witnesses:
#: unbonding released before then may be gone when the slash lands (the settle's block,
#: the report, and a coordinator's 32 blocks of flight at most).
WITNESS_HORIZON_BLOCKS = 40
#: Bids (and NoBids) kept per job.
MAX_BIDS = 256
#: The latest deadline a job may have, after its submission: an hour short of what
#: providers take (``MAX_DEADLINE_AHEAD_MS``, 24 h; past it they count the announcement as
#: misbehaviour), for clocks that disagree.
MAX_DEADLINE_MS = 23 * 3_600_000


@dataclass(slots=True)
class Replica:
    """One award of a job to one provider, as the requester tracks it."""

    index: int
    provider: bytes
    award: Signed[Award]
    deadline_ms: int
    last_seen_ms: int
    determinism_class: str
    state: ReplicaState = ReplicaState.RUNNING
    reason: str = ""
    result: Signed[Result] | None = None
    output: Output | None = None
    receipt: Signed[Receipt] | None = None
    received_ms: int = 0
    #: Its output as it came with the Result, sealed under the provider's one-time key.
    sealed: bytes = b""
    #: When it was awarded.
    awarded_ms: int = 0
    #: The receipt the verdict wants for it (``SEALED`` or ``PLAIN``), signed once
    #: ``sealed`` is held ("" while none is wanted).
    want: str = ""
    #: The provider's signed Bid the award answered (wire bytes): a settle carries it.
    bid: bytes = b""
    #: Its provider was trusted when it was awarded (adaptive replication).
    trusted: bool = False
    #: Its provider was established (past probation) when it was awarded: it stays so for
    #: the job while its stake stays bonded (``scheduler._requester_policy.veteran``).
    established: bool = False
    heard: bool = False
    nudges: int = 0
    next_nudge_ms: int = 0

    @property
    def set_aside(self) -> bool:
        """Not judged: one of an audit's two outputs that nobody could decide between
        (``_SET_ASIDE``)."""
        return self.reason == _SET_ASIDE


@dataclass(slots=True)
class RequesterJob:
    """Everything the requester holds about one job (read it, do not change it)."""

    signed: Signed[JobSpec]
    providers: tuple[bytes, ...]
    known: Output | None
    spot_check: bool
    phase: JobPhase = JobPhase.LOCKING
    #: The bid window of the latest announcement has ended (possibly early).
    window_over: bool = False
    #: Named providers that answered (Bid or NoBid) the latest announcement.
    answered: set[bytes] = field(default_factory=set)
    bids: dict[bytes, tuple[Signed[Bid], int]] = field(default_factory=dict)
    nobids: dict[bytes, NoBid] = field(default_factory=dict)
    excluded: set[bytes] = field(default_factory=set)
    replicas: list[Replica] = field(default_factory=list)
    #: The escrow's places as the last block showed them (providers paid or reserved),
    #: and how many it has.
    places: frozenset[bytes] = frozenset()
    max_payees: int = 0
    target: int = 0
    announcements: int = 0
    done: JobDone | None = None
    refunded_at: int = -1
    #: Live replicas when the user was last told the job waits for more (``waiting``).
    told_short: int = -1
    #: The redundancy the caller asked for (the signed spec's, except under adaptive
    #: replication, which signs 1 so that a one-replica job can settle).
    asked: int = 0
    #: Why the job failed with outputs in (its audit disagreed and nobody could decide:
    #: both set aside, ``_requester_policy.drop_failed_audit``); empty otherwise.
    disputed: str = ""
    #: Agreeing results that verify the job, set at the first awards: adaptive's, or 2
    #: for a job of redundancy 1 audited under fixed (``_requester_policy.fixed_audit``).
    required: int = 0
    #: Adaptive: the job runs on one trusted provider (while every result is a trusted one).
    solo: bool = False
    #: Established providers that had bid (or held an award) when the first awards were
    #: chosen, the most counted (``_requester_policy.veteran_bidders``): with two, an
    #: agreement needs two of their outputs. Counted then, not as bids come later, so a
    #: verdict once given stays given.
    veterans: int = 0
    #: Providers whose bids were refused because this requester caught them (R6-3): when
    #: no other bid came, the user is told so rather than "no bids".
    caught_bidders: set[bytes] = field(default_factory=set)
    #: Outputs compared by the injected comparison (tolerance, or classes that differ),
    #: by their commitments and classes: a verdict taken again as bids come compares
    #: nothing twice (a stranger's Bid cost a decode and compare of the outputs in,
    #: review rounds 58 and 59, F3). At most one entry per pair of the job's outputs.
    compared: dict[tuple[bytes, str, bytes, str], bool] = field(default_factory=dict)
    #: The deadline came while a verified winner's key was on its way with its claim, or
    #: the job is finalising short and its accepted results' keys are on their way: the
    #: job is decided once no such key is pending (or at the settle limit), and nothing
    #: more is awarded.
    overdue: bool = False

    @property
    def spec(self) -> JobSpec:
        return self.signed.message

    @property
    def id(self) -> bytes:
        return self.signed.id

    @property
    def budget(self) -> int:
        return self.spec.redundancy + self.spec.max_retries

    @property
    def award_known(self) -> Output | None:
        """The known answer as the awarding rules see it: none for a spot check's canary.
        A canary is awarded exactly as its job would be (when its window ends, how many
        replicas, which class, which providers): awarded as a known-answer job, its window
        closed in the block that locked it while its job's ran to its end, and an
        established provider told the two apart 100 times in 100, right on every canary
        and wrong on every job (review round 62, F2). Its answer judges its outputs only
        (``known``)."""
        return None if self.spot_check else self.known

    def note_places(self, escrow: EscrowView) -> None:
        """The escrow's places as a block shows them. A declined award whose provider
        reserved its place (and holds no later award of the job, which would count)
        counts against the budget from now on: its price is held in the escrow until the
        expiry, and uncounted, keys doing so used up the escrow a decline at a time, the
        replicas after them neither reservable nor payable."""
        self.places, self.max_payees = escrow.places, escrow.max_payees
        for rep in self.replicas:
            if rep.reason != _DECLINED or not escrow.reserved_for(rep.provider):
                continue
            if any(r.provider == rep.provider and r.reason != _DECLINED for r in self.replicas):
                continue
            rep.reason = _DECLINED_RESERVED
            self.excluded.add(rep.provider)

    def no_place_for(self, provider: bytes) -> bool:
        """Whether others hold every place of the escrow (as the last block showed it):
        ``provider`` could be neither reserved nor paid (keys reserving theirs after
        declining, say)."""
        full = self.max_payees > 0 and len(self.places) >= self.max_payees
        return full and provider not in self.places

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.state != ReplicaState.FAILED]

    def used(self) -> int:
        """Awards that count against the budget (declined ones do not)."""
        return sum(1 for r in self.replicas if r.reason != _DECLINED)

    def can_award(self) -> bool:
        return self.used() < self.budget and len(self.replicas) < MAX_AWARDS

    def rejections(self) -> list[str]:
        """What the providers said, when every award of the job was rejected by its
        provider (outcome ``rejected``); else nothing."""
        if not self.replicas or not all(r.reason.startswith(_REJECTED) for r in self.replicas):
            return []
        return [r.reason.removeprefix(_REJECTED) for r in self.replicas]


def awarded(job: RequesterJob, replica: int, provider: bytes) -> Replica | None:
    """Replica ``replica`` of ``job`` if it was awarded to ``provider`` (a message naming
    any other is not that provider's to send)."""
    if replica >= len(job.replicas) or job.replicas[replica].provider != provider:
        return None
    return job.replicas[replica]
