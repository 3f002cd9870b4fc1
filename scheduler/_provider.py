"""The provider's side of the marketplace, one machine for all of a node's work.

Rules (specs/marketplace.md is the full text):

- An announcement (a signed JobSpec, from pubsub or sent directly; copies are merged) is
  matched against the node (``match``): a mismatch answers a NoBid with its reason, a match
  a Bid priced by ``bid_price`` with an estimated finish, valid ``bid_window_ms +
  bid_validity_ms``. A bid that expires without an award is recorded as lost.
- Announcements are bounded (specs/daemon.md, "Provider bounds on announcements"): one
  with a bid window over ``MAX_BID_WINDOW_MS``, a deadline more than
  ``MAX_DEADLINE_AHEAD_MS`` ahead or an escrow expiry more than
  ``MAX_ESCROW_AHEAD_BLOCKS`` ahead of the best height known (``note_head``) is refused
  unanswered (``Misbehaved``); our own node's announcements are not bid on (an escrow
  never pays its owner); a bid counts as pending load for at most ``MAX_PENDING_MS``; one
  requester's pending bids count as load for others' announcements up to half the open-bid
  capacity, and bids for jobs with no escrow on the ledger, from all requesters together,
  up to that same half; such bids (and awards held) are at most ``MAX_UNFUNDED_BIDS``,
  past which a requester never seen locking is answered ``busy``, and one seen locking too
  past ``MAX_UNFUNDED_BIDS_PER_FUNDER`` of its own or ``MAX_UNFUNDED_BIDS_ALL`` in all; at
  most ``MAX_ANSWERED`` answered announcements are remembered. Bids are counted as they
  come and go (``BidBook``), never scanned per announcement.
- An Award for our bid is accepted while a slot is free (``max_concurrency``), and runs
  (``RunJob``) only once the ledger shows the job's escrow covering it: until then it is
  held (AWARDED) for ``AWARD_HOLD_BLOCKS`` blocks, then declined. Heartbeats go out
  ``first_heartbeat_ms`` after the award (a run that delivers sooner sends none) and every
  ``heartbeat_interval_ms`` after that. A full node declines with a NoBid ``busy``, which
  the requester treats as a declined award.
- ``job_finished`` sends the signed Result with the output sealed under a one-time key
  (``protocol.seal_output``; the Result names the sealed bytes' hash and the key's), and
  resends both at doubling intervals from ``result_resend_ms`` until the requester's
  Receipt arrives or the job's deadline passes. The key goes only for a Receipt bound to
  that Result, and only once the ledger shows the job's escrow able to pay the award by
  claim (``ProviderConfig.escrow_of``, and each block). A *sealed* receipt (a verified
  winner's) is claimed at once (``ClaimWithReceipt`` with the key, which the claim
  publishes on the ledger; only while its ``claim_by`` can still be met and is not
  absurdly far: else the requester misbehaved and the work ends), and the requester reads
  the key from the claim's block; a *plain* one (whose bytes the verification needs)
  gets the key at once, resent at doubling intervals until the work ends. So a requester
  reads no output it did not receipt, nor a verified winner's before the winner is paid
  (specs/marketplace.md, "Fair exchange"). A run past the award's deadline is aborted: the
  requester has replaced it.
- Delivered work whose escrow the ledger does not show is dropped ``NO_ESCROW_GRACE_MS``
  after the job's deadline.
- With a plain Receipt held, the provider waits for the ledger: paid or closed ends the
  job. If the escrow is still open once the claim window (the last
  ``claim_window_blocks`` before the escrow's expiry height) has opened, the provider
  claims its price with the award and the receipt (whether or not the job's deadline has
  passed: an escrow expiring before it left a plain receipt never claimed, round 71, F2).
"""

from __future__ import annotations

from collections import deque

from protocol import (
    Award,
    Heartbeat,
    JobSpec,
    NoBid,
    Outcome,
    Receipt,
    RemoteProtocolError,
    Signed,
    Unseal,
    Usage,
    content_hash,
    decode,
    sign,
)

from . import _provider_bids, _provider_delivered, _provider_receipt
from ._config import ProviderConfig
from ._effects import (
    AbortJob,
    CancelTimer,
    ClaimWithReceipt,
    Deliver,
    Effect,
    Misbehaved,
    NotifyUser,
    Output,
    ReservePlace,
    RunJob,
    Send,
    SetTimer,
    TimerKey,
    TimerKind,
    UserEvent,
)
from ._errors import UnknownJob
from ._ledger import EscrowLookup, EscrowView, uncovered
from ._provider_delivered import MAX_OUTPUT_RESEND_MS as MAX_OUTPUT_RESEND_MS
from ._provider_receipt import CLAIM_BY_SLACK_BLOCKS as CLAIM_BY_SLACK_BLOCKS
from ._provider_receipt import CLAIM_MARGIN_BLOCKS as CLAIM_MARGIN_BLOCKS
from ._provider_receipt import RESERVE_WAIT_BLOCKS as RESERVE_WAIT_BLOCKS
from ._provider_work import BidBook, Work, WorkPhase, seal_result
from ._reasons import BidOutcome, IdleReport, Seen, why_no_jobs

#: An award runs only once the ledger shows its escrow covering it; one whose escrow our
#: view does not show is held for this many blocks (it may be a block behind the
#: requester's), then declined.
AWARD_HOLD_BLOCKS = 2
#: Delivered work whose escrow the ledger does not show is dropped this long after the
#: job's deadline (nothing can pay it; its sealed output is not kept for ever).
NO_ESCROW_GRACE_MS = 60_000


class Provider:
    """The provider machine. Every handler takes ``now_ms`` and returns effects."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.me = bytes(config.key.verify_key)
        self.work: dict[bytes, Work] = {}
        self.draining = False
        self.history: deque[Seen] = deque(maxlen=config.history_limit)
        # job id -> (answered at, deadline, bid window): copies are dropped before decoding
        self._answered: dict[bytes, tuple[int, int, int]] = {}
        #: The last block height seen; the highest head the node heard of (``note_head``),
        #: which is above ``height`` while the node's ledger catches up.
        self.height = 0
        self.head = 0
        # Counted as they change, so that an announcement costs the same however much work
        # is held: the running replicas, the open bids, and the requesters seen locking.
        self._running: set[bytes] = set()
        self._bids = BidBook(self.max_pending_per_requester)
        self._funders: dict[bytes, None] = {}
        #: Delivered work (``_provider_delivered``): each requester's count, and the sealed
        #: bytes held for resends (job id -> size, oldest first) with their total.
        self._unreceipted: dict[bytes, dict[bytes, int]] = {}  # requester -> job -> when
        self._held: dict[bytes, int] = {}
        self._held_bytes = 0

    # --- queries ----------------------------------------------------------------------

    @property
    def active(self) -> int:
        """Replicas accepted and not yet finished."""
        return len(self._running)

    @property
    def bidding(self) -> int:
        """Bids open (sent, not yet awarded or expired)."""
        return sum(1 for w in self.work.values() if w.phase == WorkPhase.BIDDING)

    pending = _provider_bids.pending
    load_for = _provider_bids.load_for
    _priced_load = _provider_bids.priced_load
    _counted = _provider_bids.counted

    @property
    def max_pending_per_requester(self) -> int:
        """Half the open-bid capacity (at least one)."""
        return max(1, self.config.max_concurrency * max(1, self.config.overbook) // 2)

    def why_no_jobs(self, now_ms: int, window_ms: int = 3_600_000) -> IdleReport:
        """Why this node has not been getting jobs lately (see :func:`why_no_jobs`)."""
        return why_no_jobs(list(self.history), now_ms, window_ms)

    def get(self, job_id: bytes) -> Work:
        try:
            return self.work[job_id]
        except KeyError:
            raise UnknownJob(f"no work for job {job_id.hex()[:16]}… on this node") from None

    def note_head(self, head: int) -> None:
        """The best chain height the node heard of (its ledger's sources' head): bounds
        that count from the chain's height use it while our own blocks lag behind."""
        self.head = max(self.head, head)

    def set_draining(self, draining: bool) -> None:
        """A draining node answers every announcement with NoBid ``shutting_down``."""
        self.draining = draining

    # --- events -----------------------------------------------------------------------

    def receive(self, data: bytes, now_ms: int) -> list[Effect]:
        """A JobSpec announcement, an Award or a Receipt."""
        # A job id is the hash of the signed JobSpec: a copy of an announcement (pubsub and
        # direct) is recognised before paying for its signature check.
        maybe_job = content_hash(data)
        last = self._answered.get(maybe_job)
        if last is not None and now_ms - last[0] < last[2]:
            return []  # a copy of an announcement we just answered
        work = self.work.get(maybe_job)
        if work is not None and work.phase != WorkPhase.BIDDING:
            return []  # an announcement of a job we already hold
        try:
            signed = decode(data, self.config.chain_id, JobSpec, Award, Receipt)
        except RemoteProtocolError as e:
            return [Misbehaved(None, str(e))]
        msg = signed.message
        if isinstance(msg, JobSpec):
            return self._on_announce(signed, now_ms)
        if isinstance(msg, Award):
            return self._on_award(signed, now_ms)
        return self._on_receipt(signed, now_ms)

    def job_finished(
        self,
        job_id: bytes,
        now_ms: int,
        *,
        outcome: Outcome,
        output: Output | None,
        usage: Usage,
        message: str = "",
    ) -> list[Effect]:
        """The sandbox run of ``job_id`` ended (``output`` is required when ``ok``)."""
        work = self.work.get(job_id)
        if work is None or work.phase != WorkPhase.RUNNING or work.award is None:
            return []  # aborted meanwhile
        if outcome == "ok" and output is None:
            outcome, message = "crashed", "the run reported ok without an output"
        self._running.discard(job_id)
        work.result = seal_result(work, self.config, outcome, output, usage, message, now_ms)
        deliver = Deliver(work.spec.requester, work.result, work.sealed)
        effects: list[Effect] = [CancelTimer(TimerKey(TimerKind.HEARTBEAT, job_id)), deliver]
        if not work.sealed:
            return effects + self._close(work, f"run ended: {outcome}")
        return effects + self._delivered(work, now_ms)

    def timer(self, key: TimerKey, now_ms: int) -> list[Effect]:
        """A timer this machine set has fired."""
        work = self.work.get(key.job_id)
        if work is None:
            return []
        if key.kind == TimerKind.BID and work.phase == WorkPhase.BIDDING:
            self._record(work, BidOutcome.LOST, now_ms)
            self._bids.drop(work)
            del self.work[work.id]
            return []
        if (
            key.kind == TimerKind.HEARTBEAT
            and work.phase in (WorkPhase.AWARDED, WorkPhase.RUNNING)
            and work.award is not None
        ):
            award = work.award.message
            if work.phase == WorkPhase.AWARDED:
                if now_ms >= award.deadline_ms:
                    return self._decline(work, "no escrow on the ledger by its deadline", now_ms)
                progress = 0  # held for its escrow: alive, not started
            elif now_ms >= award.deadline_ms:
                return [AbortJob(work.id), *self._close(work, "missed the award's deadline")]
            else:
                span = max(1, award.deadline_ms - work.started_ms)
                progress = min(999, 1000 * (now_ms - work.started_ms) // span)
            beat = Heartbeat(work.id, self.me, award.replica, progress, now_ms)
            return [
                Send(work.spec.requester, sign(beat, self.config.key, self.config.chain_id)),
                SetTimer(now_ms + self.config.heartbeat_interval_ms, key),
            ]
        if key.kind == TimerKind.RESEND and work.result is not None:
            if work.phase == WorkPhase.DELIVERED:
                return self._resend(work, key, now_ms)
            if work.phase == WorkPhase.RECEIPTED and work.key_now and work.covered:
                # Past the deadline too: a plain receipt's holder owes its key until the
                # work ends (paid, escrow closed or expired), resent at doubling intervals.
                work.resend_ms = min(2 * work.resend_ms, MAX_OUTPUT_RESEND_MS)
                work.key_sent_ms = now_ms
                return [self._unseal(work), SetTimer(now_ms + work.resend_ms, key)]
        return []

    def follow_ledger(self, height: int, escrow_of: EscrowLookup, now_ms: int) -> list[Effect]:
        """A new ledger block, all of it: for each job we work on, what its escrow paid us
        since (``paid``) and whether it closed (``escrow_closed``); then ``block``."""
        effects: list[Effect] = []
        self.height = max(self.height, height)
        for job_id in list(self.work):
            work = self.work[job_id]
            escrow = escrow_of(job_id)
            if work.phase == WorkPhase.AWARDED:
                effects += self._start_or_hold(work, escrow, now_ms, block=True)
                continue
            if escrow is None:
                if (
                    work.phase in (WorkPhase.DELIVERED, WorkPhase.RECEIPTED, WorkPhase.CLAIMED)
                    and now_ms >= work.spec.deadline_ms + NO_ESCROW_GRACE_MS
                ):
                    # Nothing can pay it: its sealed output is not kept until a far expiry.
                    effects += self._close(work, "no escrow on the ledger by the deadline")
                continue
            requester = work.spec.requester
            if work.phase == WorkPhase.BIDDING and escrow.is_open and escrow.owner == requester:
                self._bids.fund(work)
                self._funder(requester)
            if work.phase in (WorkPhase.RUNNING, WorkPhase.DELIVERED, WorkPhase.RECEIPTED):
                effects += self._check_escrow(work, escrow, now_ms)
                if job_id not in self.work:
                    continue
            paid = escrow.paid_to(self.me)
            if paid > work.paid:
                effects += self.paid(job_id, paid - work.paid, now_ms)
                if job_id not in self.work:
                    continue
            if work.phase == WorkPhase.RECEIPTED and work.covered and not work.plain:
                effects += self._sealed(work, escrow, now_ms)
            if escrow.is_open:
                continue
            if work.phase in (WorkPhase.RECEIPTED, WorkPhase.CLAIMED) and escrow.claimable_by(
                self.me
            ):
                continue  # settled without paying us: our reserved price waits for our claim
            effects += self.escrow_closed(job_id, now_ms)
        return effects + self.block(height, now_ms)

    def block(self, height: int, now_ms: int) -> list[Effect]:
        """A new ledger block: claim with receipts where the requester left the escrow open."""
        effects: list[Effect] = []
        self.height = max(self.height, height)
        window = self.config.claim_window_blocks
        for work in list(self.work.values()):
            expiry = work.spec.escrow_expiry_height
            if height >= expiry and work.phase in (
                WorkPhase.DELIVERED,
                WorkPhase.RECEIPTED,
                WorkPhase.CLAIMED,
            ):
                effects += self._close(work, "escrow expired")
            elif work.phase == WorkPhase.RECEIPTED and not work.plain:
                effects += self._sealed_due(work)
            elif (
                work.phase == WorkPhase.RECEIPTED
                and work.plain
                and height >= expiry - window
                and work.award is not None
                and work.receipt is not None
            ):
                work.phase = WorkPhase.CLAIMED
                effects.append(ClaimWithReceipt(work.id, work.award, work.receipt, work.key))
                effects.append(NotifyUser(work.id, UserEvent.CLAIMED, "requester silent; claiming"))
        for job_id, (_, deadline, _) in list(self._answered.items()):
            if deadline < now_ms:
                del self._answered[job_id]
        return effects

    def paid(self, job_id: bytes, amount: int, now_ms: int) -> list[Effect]:
        """The ledger paid us ``amount`` from the job's escrow (a settlement or our claim)."""
        work = self.work.get(job_id)
        if work is None:
            return []
        work.paid += amount
        effects: list[Effect] = [NotifyUser(job_id, UserEvent.PAID, str(amount))]
        if work.phase == WorkPhase.RUNNING:  # paid before it ran out (a settle): its run ends
            effects.append(AbortJob(job_id))
        price = work.award.message.price if work.award is not None else 0
        sealed = work.receipt is not None and work.receipt.message.sealed
        if work.receipt is not None and work.key and work.paid >= price and not sealed:
            # Paid our award's price by a settle: the requester gets the key now. Paid by
            # the claim of a sealed receipt, the key is in the claim's block, which the
            # requester reads (``keys_published``): an Unseal would be one more message
            # per job, the cost that bounds the marketplace (specs/marketplace.md).
            effects.append(self._unseal(work))
        return effects + self._close(work, "paid")

    def escrow_closed(self, job_id: bytes, now_ms: int) -> list[Effect]:
        """The job's escrow closed; whatever we were not paid by now we never will be."""
        work = self.work.get(job_id)
        if work is None:
            return []
        if work.phase == WorkPhase.RUNNING:
            # Nothing can pay the run now: it ends, its slot free (left going, it held the
            # slot to its end or its award's deadline: the mutation run of round 62).
            why = "the job's escrow closed while it ran, without paying us"
            return [AbortJob(job_id), *self._close(work, why)]
        if work.phase == WorkPhase.AWARDED:
            return self._decline(work, "the job's escrow is closed", now_ms)
        if work.phase == WorkPhase.BIDDING:  # the job ended without us
            self._record(work, BidOutcome.LOST, now_ms)
            self._bids.drop(work)
            del self.work[job_id]
            return [CancelTimer(TimerKey(TimerKind.BID, job_id))]
        return self._close(work, "paid" if work.paid else "escrow closed without paying us")

    # --- internals --------------------------------------------------------------------

    def _record(self, work: Work, outcome: BidOutcome, now_ms: int) -> None:
        spec = work.spec
        self.history.append(Seen(work.id, now_ms, outcome, spec.max_price, work.bid.message.price))

    def _close(self, work: Work, end: str) -> list[Effect]:
        self._left_delivered(work)
        self._bids.drop(work)
        self._running.discard(work.id)
        work.phase = WorkPhase.CLOSED
        work.end = end
        del self.work[work.id]
        return [
            CancelTimer(TimerKey(TimerKind.HEARTBEAT, work.id)),
            CancelTimer(TimerKey(TimerKind.RESEND, work.id)),
            NotifyUser(work.id, UserEvent.CLOSED, end),
        ]

    # --- announcements: _provider_bids.py ------------------------------------------------

    _on_announce = _provider_bids.on_announce
    _funded = _provider_bids.funded
    _funder = _provider_bids.funder

    def _decline(self, work: Work, detail: str, now_ms: int) -> list[Effect]:
        """Decline an award (or the bid it would name): NoBid ``busy``, work dropped."""
        cfg = self.config
        nobid = NoBid(work.id, self.me, "busy", detail, cfg.price_floor)
        self._record(work, BidOutcome.DECLINED, now_ms)
        self._bids.drop(work)
        del self.work[work.id]
        return [
            Send(work.spec.requester, sign(nobid, cfg.key, cfg.chain_id)),
            CancelTimer(TimerKey(TimerKind.BID, work.id)),
            CancelTimer(TimerKey(TimerKind.HEARTBEAT, work.id)),
        ]

    def _on_award(self, signed: Signed[Award], now_ms: int) -> list[Effect]:
        award = signed.message
        work = self.work.get(award.job_id)
        if work is None:
            if award.provider != self.me:
                return [Misbehaved(award.requester, "award for another provider")]
            # Our bid expired (recorded lost): say so, so the requester replaces us at once.
            cfg = self.config
            why = "no live bid for this award"
            nobid = NoBid(award.job_id, self.me, "busy", why, cfg.price_floor)
            return [Send(award.requester, sign(nobid, cfg.key, cfg.chain_id))]
        if work.award is not None:
            return (
                []
                if work.award.id == signed.id
                else [Misbehaved(award.requester, "a second award for one job")]
            )
        bid = next((b for b in (work.bid, *work.older) if b.id == award.bid_hash), None)
        if (
            bid is None
            or award.provider != self.me
            or award.requester != work.spec.requester
            or award.price != bid.message.price
        ):
            return [Misbehaved(award.requester, "award does not match our bid")]
        if now_ms > bid.message.expires_ms:
            return self._decline(work, "the bid had expired", now_ms)
        # Our estimate of the run, as the bid was made: its est_finish is the bid's time,
        # the window and the run; its expiry the bid's time, the window and the validity.
        run_ms = bid.message.est_finish_ms - bid.message.expires_ms + self.config.bid_validity_ms
        if award.deadline_ms - now_ms < run_ms:
            # An honest award leaves at least our estimate from its arrival (and a grace
            # past it). One that ends sooner would be aborted unpaid at our next heartbeat,
            # its slot freed for the next such award: a requester kept every slot running
            # work it never paid for (review round 62, F1). Measured from the award's
            # arrival, not from our estimated finish: an award made late, near the bid's
            # expiry, with its deadline at that finish left a run a few milliseconds
            # (round 64, R64-1). Clock skew cancels: the requester's deadline is its own
            # time of the award plus our estimate's remainder as it received the bid.
            why = "the award leaves less time than our estimate of the run"
            return self._decline(work, why, now_ms)
        if self.active >= self.config.max_concurrency:
            return self._decline(work, f"all {self.config.max_concurrency} slots in use", now_ms)
        unpaid = self._unreceipted_full(award.requester, now_ms)
        if unpaid:
            return self._decline(work, unpaid, now_ms)
        self._bids.awarded(work)  # no longer pending; one with no escrow still counts
        work.phase = WorkPhase.AWARDED
        work.award = signed
        work.run_ms = run_ms
        # The first heartbeat waits a little: a short run delivers before it is due, and its
        # result tells the requester all a heartbeat would (one message less per job).
        first = min(self.config.first_heartbeat_ms, self.config.heartbeat_interval_ms)
        beat = SetTimer(now_ms + first, TimerKey(TimerKind.HEARTBEAT, work.id))
        started = self._start_or_hold(work, self.config.escrow_of(work.id), now_ms, block=False)
        if work.id not in self.work:
            return started  # declined
        return [CancelTimer(TimerKey(TimerKind.BID, work.id)), *started, beat]

    def _start_or_hold(
        self, work: Work, escrow: EscrowView | None, now_ms: int, *, block: bool
    ) -> list[Effect]:
        """An award runs only on an escrow the ledger shows covering it: no lock means no
        claim could ever pay the work. None yet: held until ``AWARD_HOLD_BLOCKS`` blocks
        (``block``: this is one) showed none, then declined. One that cannot pay the award
        is the requester's misbehaviour: declined."""
        assert work.award is not None
        award = work.award.message
        if escrow is None:
            if block:
                work.held_blocks += 1
            if work.held_blocks < AWARD_HOLD_BLOCKS:
                return []
            why = f"no escrow on the ledger for this award after {AWARD_HOLD_BLOCKS} blocks"
            return self._decline(work, why, now_ms)
        if not escrow.is_open:
            return self._decline(work, "the job's escrow is closed", now_ms)
        if escrow.paid_to(self.me):
            # the ledger pays a provider once an escrow: a run more could never be paid
            # (one payment bought a requester unpaid runs, each closed "paid" as it ran,
            # its slot freed while the sandbox kept running it: review round 56, F1)
            return self._decline(work, "this job's escrow paid us already", now_ms)
        why = uncovered(escrow, work.spec, award.price, self.config.claim_window_blocks)
        if why:
            blame = Misbehaved(work.spec.requester, f"escrow {why}")
            return [blame, *self._decline(work, f"the escrow {why}", now_ms)]
        places = escrow.places
        if self.me not in places and len(places) >= escrow.max_payees:
            # Every place is paid or reserved (keys that reserved theirs and declined, say):
            # nothing could pay our run. Not the requester's doing, so no blame.
            return self._decline(work, "no place is left for us in the job's escrow", now_ms)
        if award.deadline_ms - now_ms < work.run_ms:
            # Checked again as it starts: held for its escrow, an award started when the
            # escrow came, whatever time was left, and a requester timing its lock had the
            # run aborted unpaid (review round 65, H3).
            why = "the award's time left, once its escrow came, is less than our estimate"
            return self._decline(work, why, now_ms)
        if self.active >= self.config.max_concurrency:
            return self._decline(work, f"all {self.config.max_concurrency} slots in use", now_ms)
        self._bids.drop(work)
        work.phase = WorkPhase.RUNNING
        work.started_ms = now_ms
        self._running.add(work.id)
        self._funder(work.spec.requester)
        self._record(work, BidOutcome.WON, now_ms)
        # Our place on the ledger while we run: with it there our key goes on the Receipt.
        work.reserve_height = self.height
        return [RunJob(work.job, work.award), ReservePlace(work.id, work.award)]

    _on_receipt = _provider_receipt.on_receipt
    _delivered = _provider_delivered.delivered
    _left_delivered = _provider_delivered.left_delivered
    _unreceipted_full = _provider_delivered.unreceipted_full
    _resend = _provider_delivered.resend
    _claim_by_ok = _provider_receipt.claim_by_ok

    def _check_escrow(self, work: Work, escrow: EscrowView | None, now_ms: int) -> list[Effect]:
        """Send the held output bytes once the job's escrow covers our award: the receipt
        is only worth what a claim on that escrow pays. An escrow that cannot pay the award
        ends the work (the requester misbehaved); none yet: the bytes wait for a block."""
        if work.covered or work.award is None or escrow is None or not escrow.is_open:
            return []  # none yet: wait; closed: ``escrow_closed`` ends the work
        price = work.award.message.price
        why = uncovered(escrow, work.spec, price, self.config.claim_window_blocks)
        if why:
            effects: list[Effect] = [Misbehaved(work.spec.requester, f"escrow {why}")]
            if work.phase == WorkPhase.RUNNING:
                effects.append(AbortJob(work.id))
            return effects + self._close(work, f"the escrow {why}")
        work.covered = True
        return self._redeem(work, now_ms)

    def _redeem(self, work: Work, now_ms: int) -> list[Effect]:
        """What a receipt held on a covering escrow gets: with a sealed one, our key at once
        on our reserved place, else our claim (its key is in the claim's block: ``_sealed``);
        with a plain one, the key now (resent at doubling intervals until the work ends)."""
        if work.phase != WorkPhase.RECEIPTED or work.receipt is None or work.award is None:
            return []
        if not work.plain:
            return self._sealed(work, self.config.escrow_of(work.id), now_ms)
        if not work.key_now:
            return []  # a plain receipt in exact mode: the key once paid, or with our claim
        work.resend_ms = self.config.result_resend_ms
        work.key_sent_ms = now_ms
        return [
            self._unseal(work),
            SetTimer(now_ms + work.resend_ms, TimerKey(TimerKind.RESEND, work.id)),
        ]

    _sealed = _provider_receipt.sealed
    _sealed_due = _provider_receipt.sealed_due
    _claim_near = _provider_receipt.claim_near
    _claim = _provider_receipt.claim

    def _unseal(self, work: Work) -> Send:
        assert work.result is not None
        res = work.result.message
        unseal = Unseal(work.id, self.me, res.replica, work.result.id, work.key)
        return Send(work.spec.requester, sign(unseal, self.config.key, self.config.chain_id))
