"""The requester's side of the marketplace, one machine for all of a node's jobs.

Rules (specs/marketplace.md is the full text):

- ``submit`` signs the job and asks the ledger to lock ``max_price * (redundancy +
  max_retries)``: the most that can be paid, one price per replica ever awarded.
- The job is announced at once, while the lock is on its way into a block: published on
  the topic of its capability class and sent straight to the providers the caller named.
  A bid window of ``bid_window_ms`` opens. Nothing is awarded before the lock is confirmed
  (``escrow_locked``), so a provider never works for an escrow that does not exist.
- Bids and NoBids are collected; bids keep arriving as spares after the window closes.
  The window closes early once enough answers are in (``_enough_answers``).
  At the window's end the best bids are awarded (``award_key``), one replica each, with
  one extra probation replica when every chosen provider is a newcomer. Nobody bid: the
  job fails with the providers' reasons and the escrow is refunded.
- A replica is watched: each heartbeat moves its timer; silence for
  ``heartbeat_timeout_ms`` or its deadline passing fails it, its provider is excluded, and
  it is replaced from the spare bids or by announcing again, while the replica budget
  (``redundancy + max_retries`` awards in all) lasts. A replica whose provider rejects the
  job (outcome ``rejected``: its sandbox refused it) is replaced from the spare bids only:
  when every award was rejected and no spare is left, the job fails at once with what the
  providers said. Short of replicas with none to award, the user is told (``waiting``).
- A result whose output bytes hash as announced, and whose bytes have the output
  commitment it claims (recomputed here with the injected ``commitment``), is kept; one
  whose bytes do not match its commitment is a failed replica (misbehaviour: never
  verified, paid or returned). Receipts are only for verified work: the winners of the
  verdict get theirs when the job is decided, the outvoted never do (so they cannot
  claim). When no replica is outstanding the outputs are judged: a known answer matched,
  or ``redundancy`` agreeing outputs in a strict majority (and, when an established
  provider delivered, one of them in it: newcomers on probation never outvote it),
  verifies the job; otherwise one more replica is awarded.
- Finalising settles: the winning group is paid its award prices (each payout carries the
  provider's signed Bid), the minority is attested against (and slashed, with the paid
  majority's Results as evidence), the rest of the escrow goes back. A settle pays at
  least ``redundancy`` providers (the ledger refuses a shorter one before the escrow's
  expiry); with fewer winners the escrow is refunded at its expiry and each winner claims
  with its receipt. The job's deadline, or the ledger height reaching the settle limit,
  forces a final decision with what has arrived.
- Adaptive replication (``replication = "adaptive"``): a job runs on one replica when its
  best bid is a trusted provider's (a long clean record on the ledger, never caught by
  this requester), audited with a second replica at ``audit_permille``; on ``redundancy``
  replicas otherwise; providers this requester caught are refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from protocol import (
    Award,
    Bid,
    Heartbeat,
    JobSpec,
    NoBid,
    Receipt,
    RemoteProtocolError,
    Result,
    Signed,
    VerificationPolicy,
    content_hash,
    decode,
    sign,
)

from ._config import RequesterConfig
from ._effects import (
    Attest,
    CancelTimer,
    Effect,
    JobDone,
    JobStatus,
    LockEscrow,
    Misbehaved,
    NotifyUser,
    Output,
    Payout,
    Publish,
    Refund,
    Send,
    SetTimer,
    Settle,
    Slash,
    TimerKey,
    TimerKind,
    UserEvent,
)
from ._errors import JobRejected, UnknownJob
from ._ledger import EscrowLookup, EscrowView
from ._pricing import award_key
from ._reasons import explain_no_bids
from ._requester_jobs import (
    _CORRUPT,
    _DECLINED,
    _LATE,
    _SILENT,
    _WITHHELD,
    MAX_AWARD_RESENDS,
    MAX_BIDS,
    MAX_MAJORITY_EVIDENCE,
    MAX_SILENT_ANNOUNCEMENTS,
    JobPhase,
    Replica,
    ReplicaState,
    RequesterJob,
)
from ._verification import Verdict, VerdictStatus, judge


class Requester:
    """The requester machine. Every handler takes ``now_ms`` and returns effects."""

    def __init__(self, config: RequesterConfig) -> None:
        self.config = config
        self.me = bytes(config.key.verify_key)
        self.jobs: dict[bytes, RequesterJob] = {}
        #: The latest ledger height seen (``block``).
        self.height = 0
        #: Providers outvoted in (or contradicting the known answer of) a job of ours, oldest
        #: first, at most ``caught_limit``. Adaptive replication never trusts them again and
        #: refuses their bids.
        self.caught: dict[bytes, None] = {}

    # --- the caller's API ----------------------------------------------------------

    def submit(
        self,
        spec: JobSpec,
        now_ms: int,
        *,
        providers: Sequence[bytes] = (),
        known_answer: Output | None = None,
    ) -> tuple[bytes, list[Effect]]:
        """Sign and start ``spec``. ``providers`` are those found for its class (the job
        also goes to its pubsub topic). Returns the job id and the effects."""
        asked = spec.redundancy
        if self.config.replication == "adaptive" and asked > 1:
            # The ledger refuses a settle paying fewer than the signed redundancy before the
            # escrow's expiry: sign 1, keep the budget, and ask for ``asked`` agreeing
            # results ourselves wherever the job does not run on one trusted provider.
            retries = min(64, spec.max_retries + asked - 1)
            spec = replace(spec, redundancy=1, max_retries=retries)
        job_id, effects = self._start(spec, now_ms, providers, known_answer, spot_check=False)
        self.jobs[job_id].asked = asked
        canaries = self.config.canaries
        permille = spec.verification.spot_check_permille
        if canaries and permille and self.config.rng.randrange(1000) < permille:
            canary = canaries[self.config.rng.randrange(len(canaries))]
            check = replace(
                spec,
                nonce=self.config.rng.randbytes(16),
                runtime=canary.runtime,
                model_hash=canary.model_hash,
                model_size=canary.model_size,
                inputs=canary.inputs,
                redundancy=1,
                max_retries=min(spec.max_retries, 1),
                verification=replace(spec.verification, spot_check_permille=0),
            )
            _, more = self._start(check, now_ms, providers, canary.answer, spot_check=True)
            effects += more
        return job_id, effects

    def job(self, job_id: bytes) -> RequesterJob:
        """The state of one job; :class:`UnknownJob` if this machine does not hold it."""
        try:
            return self.jobs[job_id]
        except KeyError:
            raise UnknownJob(f"no job {job_id.hex()[:16]}… here; check the job id") from None

    def may_fetch(self, job_id: bytes, provider: bytes) -> bool:
        """Whether ``provider`` may fetch the job's model and inputs now: it holds a running
        award of the job. The driver serves them sealed to that provider's key."""
        job = self.jobs.get(job_id)
        if job is None or job.phase not in (JobPhase.COLLECTING, JobPhase.EXECUTING):
            return False
        return any(r.provider == provider and r.state == ReplicaState.RUNNING for r in job.replicas)

    def forget(self, job_id: bytes) -> None:
        """Drop a closed job's state (the caller keeps what it needs from ``JobDone``)."""
        if self.job(job_id).phase != JobPhase.CLOSED:
            raise UnknownJob("only a closed job can be forgotten; wait for its escrow to close")
        del self.jobs[job_id]

    # --- events from the ledger ------------------------------------------------------

    def escrow_is_ours(self, job_id: bytes, escrow: EscrowView) -> bool:
        """Whether ``escrow`` is the lock this machine asked for: this node owns it and it
        holds the job's whole budget. Drivers call ``escrow_locked`` only then."""
        job = self.jobs.get(job_id)
        if job is None:
            return False
        return escrow.owner == self.me and escrow.locked == job.spec.max_price * job.budget

    def escrow_locked(self, job_id: bytes, now_ms: int) -> list[Effect]:
        """The job's Lock transaction is in a block: awards may be made, at once if the bid
        window is already over."""
        job = self.jobs.get(job_id)
        if job is None or job.phase != JobPhase.LOCKING:
            return []
        if job.done is not None:  # confirmed after the deadline: refunded at its expiry
            job.phase = JobPhase.SETTLING
            return []
        job.phase = JobPhase.COLLECTING
        locked = NotifyUser(job.id, UserEvent.LOCKED, "the escrow is in a block")
        if job.window_over or self._enough_answers(job):
            return [locked, *self._close_window(job, now_ms)]
        return [locked]

    def escrow_failed(self, job_id: bytes, reason: str, now_ms: int) -> list[Effect]:
        """The Lock transaction was refused (for example insufficient balance)."""
        job = self.jobs.get(job_id)
        if job is None or job.phase != JobPhase.LOCKING:
            return []
        job.phase = JobPhase.CLOSED
        done = JobDone(job.id, JobStatus.FAILED, f"escrow not locked: {reason}", None, (), None)
        job.done = done
        return [
            CancelTimer(TimerKey(TimerKind.DEADLINE, job.id)),
            CancelTimer(TimerKey(TimerKind.BIDS, job.id)),
            done,
        ]

    def escrow_closed(self, job_id: bytes, now_ms: int) -> list[Effect]:
        """The job's escrow was settled, refunded or expired on the ledger."""
        job = self.jobs.get(job_id)
        if job is None or job.phase == JobPhase.CLOSED:
            return []
        effects: list[Effect] = []
        if job.done is None:  # closed under us: decide now, there is nothing left to pay
            effects += self._finalise(job, now_ms, forced=True, ledger=False)
        job.phase = JobPhase.CLOSED
        return [*effects, NotifyUser(job.id, UserEvent.ESCROW_CLOSED, "the escrow is closed")]

    def follow_ledger(self, height: int, escrow_of: EscrowLookup, now_ms: int) -> list[Effect]:
        """A new ledger block, all of it: for each job, whether its escrow is now locked
        (``escrow_locked``) or closed (``escrow_closed``); then ``block``."""
        effects: list[Effect] = []
        for job_id, job in list(self.jobs.items()):
            escrow = escrow_of(job_id)
            if escrow is None or not self.escrow_is_ours(job_id, escrow):
                continue
            if job.phase == JobPhase.LOCKING:
                effects += self.escrow_locked(job_id, now_ms)
            if not escrow.is_open:
                effects += self.escrow_closed(job_id, now_ms)
        return effects + self.block(height, now_ms)

    def block(self, height: int, now_ms: int) -> list[Effect]:
        """A new ledger block: settle any job whose settle limit has come; refund escrows
        still open at their expiry (our settle was lost, or we were away)."""
        effects: list[Effect] = []
        self.height = max(self.height, height)
        limit = self.config.claim_window_blocks + self.config.settle_margin_blocks
        for job in list(self.jobs.values()):
            expiry = job.spec.escrow_expiry_height
            if job.phase == JobPhase.SETTLING and height >= expiry and job.refunded_at != expiry:
                job.refunded_at = expiry  # once; the ledger's answer closes the job
                effects.append(Refund(job.id))
                continue
            if job.phase not in (JobPhase.COLLECTING, JobPhase.EXECUTING):
                continue
            if height >= expiry - limit:
                effects += self._finalise(job, now_ms, forced=True)
        return effects

    # --- events from the network and timers -----------------------------------------

    def receive(self, data: bytes, now_ms: int, *, output: bytes | None = None) -> list[Effect]:
        """A message from a provider: Bid, NoBid, Heartbeat or Result (with ``output``, the
        opened output bytes, or ``None`` when they could not be opened)."""
        try:
            signed = decode(data, self.config.chain_id, Bid, NoBid, Heartbeat, Result)
        except RemoteProtocolError as e:
            return [Misbehaved(None, str(e))]
        msg = signed.message
        job = self.jobs.get(msg.job_id)
        if job is None or job.phase == JobPhase.CLOSED:
            return []
        if job.phase == JobPhase.LOCKING:
            # Announced while the lock is confirmed: only answers to the announcement.
            if isinstance(msg, Bid):
                return self._on_bid(job, signed, now_ms)
            if isinstance(msg, NoBid):
                return self._on_nobid(job, msg, now_ms)
            return []
        if job.phase == JobPhase.SETTLING:
            # Decided: only a resent result still gets its receipt again.
            resent = isinstance(msg, Result) and output is None
            return self._resend_receipt(job, signed) if resent else []
        if isinstance(msg, Bid):
            return self._on_bid(job, signed, now_ms)
        if isinstance(msg, NoBid):
            return self._on_nobid(job, msg, now_ms)
        if isinstance(msg, Heartbeat):
            return self._on_heartbeat(job, msg, now_ms)
        return self._on_result(job, signed, output, now_ms)

    def timer(self, key: TimerKey, now_ms: int) -> list[Effect]:
        """A timer this machine set has fired."""
        job = self.jobs.get(key.job_id)
        if job is None or job.phase in (JobPhase.SETTLING, JobPhase.CLOSED):
            return []
        if key.kind == TimerKind.DEADLINE:
            if job.phase == JobPhase.LOCKING:
                # Stay LOCKING: a lock confirmed later is cancelled at once.
                why = "escrow lock not confirmed in time"
                done = JobDone(job.id, JobStatus.FAILED, why, None, (), None)
                job.done = done
                return [done]
            return self._finalise(job, now_ms, forced=True)
        if key.kind == TimerKind.BIDS and job.phase == JobPhase.LOCKING:
            job.window_over = True  # awards wait for the lock
            return []
        if key.kind == TimerKind.BIDS and job.phase == JobPhase.COLLECTING:
            return self._close_window(job, now_ms)
        if key.kind == TimerKind.WATCH and key.replica < len(job.replicas):
            rep = job.replicas[key.replica]
            if rep.state == ReplicaState.COMMITTED and rep.receipt is not None:
                # Receipted: its output bytes are due. The receipt is sent again (it or the
                # bytes may have been lost) twice, half a heartbeat timeout apart, then the
                # replica fails.
                half = self.config.heartbeat_timeout_ms // 2
                if now_ms < rep.last_seen_ms + half:
                    return [SetTimer(rep.last_seen_ms + half, key)]
                if rep.nudges >= MAX_AWARD_RESENDS:
                    return self._fail(job, rep, _WITHHELD, now_ms)
                rep.nudges += 1
                rep.last_seen_ms = now_ms
                return [Send(rep.provider, rep.receipt), SetTimer(now_ms + half, key)]
            if rep.state != ReplicaState.RUNNING:
                return []
            if now_ms >= rep.deadline_ms:
                return self._fail(job, rep, _LATE, now_ms)
            if now_ms >= rep.last_seen_ms + self.config.heartbeat_timeout_ms:
                return self._fail(job, rep, _SILENT, now_ms)
            effects: list[Effect] = []
            if self._nudge_due(rep) and now_ms >= rep.next_nudge_ms:
                # No sign of life since the award: it may have been lost. Send it again.
                rep.nudges += 1
                rep.next_nudge_ms = now_ms + self.config.award_resend_ms
                effects.append(Send(rep.provider, rep.award))
            return [*effects, SetTimer(self._watch_at(rep), key)]
        return []

    # --- internals --------------------------------------------------------------------

    def _start(
        self,
        spec: JobSpec,
        now_ms: int,
        providers: Sequence[bytes],
        known: Output | None,
        *,
        spot_check: bool,
    ) -> tuple[bytes, list[Effect]]:
        if spec.requester != self.me:
            raise JobRejected("JobSpec.requester must be this node's key")
        if spec.deadline_ms <= now_ms + spec.bid_window_ms:
            raise JobRejected("deadline_ms must leave time after the bid window; extend it")
        if spec.bid_window_ms == 0:
            raise JobRejected("bid_window_ms must be positive")
        margin = self.config.claim_window_blocks + self.config.settle_margin_blocks
        if spec.escrow_expiry_height <= self.height + margin:
            raise JobRejected(
                f"escrow_expiry_height must be above {self.height + margin} (the current "
                f"height {self.height} plus {margin} blocks of settle margin and claim window)"
            )
        signed = sign(spec, self.config.key, self.config.chain_id)
        if signed.id in self.jobs:
            raise JobRejected("this exact job was already submitted; use a fresh nonce")
        job = RequesterJob(signed, tuple(dict.fromkeys(providers)), known, spot_check)
        job.asked = spec.redundancy
        self.jobs[job.id] = job
        amount = spec.max_price * job.budget
        expiry = spec.escrow_expiry_height
        claim_height = max(0, expiry - self.config.claim_window_blocks)
        lock = LockEscrow(
            job.id,
            amount,
            claim_height,
            expiry,
            spec.max_price,
            min(64, job.budget),
            signed.raw,
        )
        return job.id, [
            lock,
            SetTimer(spec.deadline_ms, TimerKey(TimerKind.DEADLINE, job.id)),
            NotifyUser(
                job.id,
                UserEvent.SPOT_CHECK if spot_check else UserEvent.SUBMITTED,
                f"locking {amount}",
            ),
            *self._announce(job, now_ms),
        ]

    def _announce(self, job: RequesterJob, now_ms: int) -> list[Effect]:
        if job.phase != JobPhase.LOCKING:
            job.phase = JobPhase.COLLECTING
        job.window_over = False
        job.answered.clear()
        job.announcements += 1
        direct = [p for p in job.providers if p not in job.excluded]
        effects: list[Effect] = []
        if job.announcements > 1 or not 0 < len(direct) < self.config.direct_only_below:
            effects.append(Publish(job.spec.requirements.capability_class, job.signed))
        effects += [Send(p, job.signed) for p in direct]
        # Each announcement after the first waits twice as long, up to 16 windows.
        window = job.spec.bid_window_ms << min(job.announcements - 1, 4)
        effects.append(SetTimer(now_ms + window, TimerKey(TimerKind.BIDS, job.id)))
        effects.append(NotifyUser(job.id, UserEvent.ANNOUNCED, f"announcement {job.announcements}"))
        return effects

    def _enough_answers(self, job: RequesterJob) -> bool:
        """Enough answers to the latest announcement to award now: every named provider not
        excluded answered and one of them bid (waiting out the window would bring nothing
        but pubsub stragglers), or ``redundancy + 1`` of them bid (a choice for every
        replica and a spare: the slowest answers are those of the busiest providers), or,
        with the escrow locked, ``redundancy`` bid and one of them is past probation. Under
        adaptive replication the last two are replaced by: the escrow is locked and a
        trusted provider bid."""
        named = [p for p in job.providers if p not in job.excluded]
        bidders = [p for p in job.answered if p in job.bids]
        if self.config.replication == "adaptive" and job.known is None:
            # A trusted bid settles the first award (alone, or audited with a spare bid):
            # award it once the escrow is locked. Without one, wait for every named
            # provider (or the window): a later answer may be a trusted provider's.
            if job.phase != JobPhase.LOCKING and any(self._trusted(p) for p in bidders):
                return True
        elif len(bidders) >= job.asked + 1:
            return True
        elif job.phase != JobPhase.LOCKING and len(bidders) >= job.asked:
            # The escrow is locked and every replica has a bid: waiting for more would
            # trade latency for price. Not when probation would want one more bid.
            veteran = self.config.probation_jobs
            if any(self.config.reputation(p).settled_jobs >= veteran for p in bidders):
                return True
        return bool(named) and job.answered.issuperset(named) and bool(bidders)

    def _close_window(self, job: RequesterJob, now_ms: int) -> list[Effect]:
        """The bid window is over (its timer, or enough answers) and the escrow is locked:
        award."""
        job.window_over = True
        job.phase = JobPhase.EXECUTING
        return [CancelTimer(TimerKey(TimerKind.BIDS, job.id)), *self._fill(job, now_ms)]

    def _answer(self, job: RequesterJob, provider: bytes, now_ms: int) -> list[Effect]:
        """Note a named provider's answer; close the window early on enough answers."""
        if provider not in job.providers or job.window_over:
            return []
        job.answered.add(provider)
        if job.phase == JobPhase.COLLECTING and self._enough_answers(job):
            return self._close_window(job, now_ms)
        return []

    def _on_bid(self, job: RequesterJob, signed: Signed[Bid], now_ms: int) -> list[Effect]:
        bid = signed.message
        if bid.price > job.spec.max_price:
            return [Misbehaved(bid.provider, "bid above the job's max_price")]
        if bid.expires_ms <= now_ms or bid.provider in job.excluded:
            return []
        if self.config.replication == "adaptive" and bid.provider in self.caught:
            return []  # caught cheating in a job of ours: its work is refused
        if any(r.provider == bid.provider for r in job.live()):
            return []
        known = job.bids.get(bid.provider)
        if known is not None and known[0].id == signed.id:
            return []  # the same bid again (re-announcement): keep when it first came
        if known is None and len(job.bids) >= MAX_BIDS:
            return []  # enough choice; a flood of keys cannot grow our memory
        job.bids[bid.provider] = (signed, now_ms)
        job.nobids.pop(bid.provider, None)
        if job.phase == JobPhase.EXECUTING:
            return self._fill(job, now_ms)  # a replica may be waiting for a bid
        return self._answer(job, bid.provider, now_ms)

    def _on_nobid(self, job: RequesterJob, nobid: NoBid, now_ms: int) -> list[Effect]:
        for rep in job.replicas:
            if rep.provider == nobid.provider and rep.state == ReplicaState.RUNNING:
                # A NoBid after an award declines it (the provider filled up meanwhile).
                return self._fail(job, rep, _DECLINED, now_ms)
        job.bids.pop(nobid.provider, None)  # its latest answer: an earlier bid is withdrawn
        if nobid.provider in job.nobids or len(job.nobids) < MAX_BIDS:
            job.nobids[nobid.provider] = nobid
        return self._answer(job, nobid.provider, now_ms)  # nothing once the window is over

    def _on_heartbeat(self, job: RequesterJob, hb: Heartbeat, now_ms: int) -> list[Effect]:
        if hb.replica >= len(job.replicas):
            return [Misbehaved(hb.provider, "heartbeat for a replica never awarded")]
        rep = job.replicas[hb.replica]
        if rep.provider != hb.provider:
            return [Misbehaved(hb.provider, "heartbeat for another provider's replica")]
        if rep.state != ReplicaState.RUNNING:
            return []
        rep.last_seen_ms = now_ms
        rep.heard = True
        return [SetTimer(self._watch_at(rep), TimerKey(TimerKind.WATCH, job.id, rep.index))]

    def _on_result(
        self, job: RequesterJob, signed: Signed[Result], output: bytes | None, now_ms: int
    ) -> list[Effect]:
        """A provider's Result: its output commitment, and the output bytes (``output``)
        once its receipt went out (or, its sender's choice, at once)."""
        res = signed.message
        if res.replica >= len(job.replicas) or job.replicas[res.replica].provider != res.provider:
            return [Misbehaved(res.provider, "result for a replica not awarded to it")]
        rep = job.replicas[res.replica]
        if rep.state in (ReplicaState.COMMITTED, ReplicaState.DELIVERED):
            if rep.result is None or rep.result.id != signed.id:
                return [Misbehaved(res.provider, "a second, different result")]
            if output is None:
                # Resent without bytes: our receipt was lost (send it again), or none is
                # due yet.
                return self._resend_receipt(job, signed)
            if rep.state == ReplicaState.DELIVERED:
                # Its bytes again: nothing to answer (a receipt would make the provider
                # send them once more).
                return []
            return self._on_output(job, rep, output, now_ms)
        if rep.state != ReplicaState.RUNNING:
            return []
        if res.outcome != "ok":
            return self._fail(job, rep, f"reported {res.outcome}: {res.message}", now_ms)
        if res.determinism_class != rep.determinism_class:
            # Judging by commitment needs the class its bid named: a result claiming another
            # one would make the job compare bytes, and receipt every result first.
            why = f"reported determinism class {res.determinism_class!r}, not its bid's"
            return [Misbehaved(res.provider, why), *self._fail(job, rep, why, now_ms)]
        rep.state = ReplicaState.COMMITTED
        rep.result = signed
        rep.output = Output(b"", res.output_commitment, res.determinism_class)
        rep.received_ms = rep.last_seen_ms = now_ms
        effects: list[Effect] = [CancelTimer(TimerKey(TimerKind.WATCH, job.id, rep.index))]
        if output is not None:
            return effects + self._on_output(job, rep, output, now_ms)
        return effects + self._progress(job, now_ms)

    def _on_output(
        self, job: RequesterJob, rep: Replica, output: bytes, now_ms: int
    ) -> list[Effect]:
        """The output bytes of a committed replica: kept when they are what its Result
        committed to."""
        assert rep.result is not None
        res = rep.result.message
        if content_hash(output) != res.output_hash:
            return [Misbehaved(res.provider, "output bytes do not match the result's hash")]
        if self.config.commitment(output) != res.output_commitment:
            # The bytes are not what the result commits to: a failed replica, never
            # verified, never paid by a settle, never handed to the user.
            return [
                Misbehaved(res.provider, _CORRUPT),
                *self._fail(job, rep, _CORRUPT, now_ms),
            ]
        rep.state = ReplicaState.DELIVERED
        rep.output = Output(output, res.output_commitment, res.determinism_class)
        effects: list[Effect] = [
            CancelTimer(TimerKey(TimerKind.WATCH, job.id, rep.index)),
            NotifyUser(job.id, UserEvent.DELIVERED, f"replica {rep.index} delivered"),
        ]
        return effects + self._progress(job, now_ms)

    def _receipt(self, job: RequesterJob, rep: Replica, now_ms: int) -> list[Effect]:
        """Sign and send the receipt of a replica whose result won, or whose output bytes
        the verdict needs (once). A committed replica's bytes are then due: watched."""
        if rep.result is None or rep.receipt is not None:
            return []
        res = rep.result.message
        receipt = Receipt(
            job_id=job.id,
            requester=self.me,
            provider=rep.provider,
            replica=rep.index,
            result_hash=rep.result.id,
            output_commitment=res.output_commitment,
            received_ms=rep.received_ms,
        )
        rep.receipt = sign(receipt, self.config.key, self.config.chain_id)
        effects: list[Effect] = [Send(rep.provider, rep.receipt)]
        if rep.state == ReplicaState.COMMITTED:
            rep.last_seen_ms = now_ms
            rep.nudges = 0
            key = TimerKey(TimerKind.WATCH, job.id, rep.index)
            effects.append(SetTimer(now_ms + self.config.heartbeat_timeout_ms // 2, key))
        return effects

    def _resend_receipt(self, job: RequesterJob, signed: Signed[Result]) -> list[Effect]:
        res = signed.message
        if res.replica < len(job.replicas):
            rep = job.replicas[res.replica]
            if rep.receipt is not None and rep.result is not None and rep.result.id == signed.id:
                return [Send(rep.provider, rep.receipt)]
        return []

    def _nudge_due(self, rep: Replica) -> bool:
        return not rep.heard and rep.nudges < MAX_AWARD_RESENDS

    def _watch_at(self, rep: Replica) -> int:
        at = min(rep.deadline_ms, rep.last_seen_ms + self.config.heartbeat_timeout_ms)
        return min(at, rep.next_nudge_ms) if self._nudge_due(rep) else at

    def _fail(self, job: RequesterJob, rep: Replica, reason: str, now_ms: int) -> list[Effect]:
        rep.state = ReplicaState.FAILED
        rep.reason = reason
        rep.output = None  # never judged
        job.bids.pop(rep.provider, None)
        if reason != _DECLINED:
            job.excluded.add(rep.provider)
        effects: list[Effect] = [
            CancelTimer(TimerKey(TimerKind.WATCH, job.id, rep.index)),
            NotifyUser(job.id, UserEvent.REPLICA_FAILED, f"replica {rep.index} {reason}"),
        ]
        return effects + self._progress(job, now_ms)

    def _verdict_inputs(self, job: RequesterJob) -> list[tuple[int, Output]]:
        """The outputs to judge: every result's commitment when they can be compared by
        commitment alone (``_by_commitment``), else the outputs whose bytes arrived."""
        if self._by_commitment(job):
            return [(r.index, r.output) for r in job.replicas if r.output is not None]
        return [
            (r.index, r.output)
            for r in job.replicas
            if r.output is not None and r.state == ReplicaState.DELIVERED
        ]

    @staticmethod
    def _by_commitment(job: RequesterJob) -> bool:
        """Whether the job's results can be judged before their bytes arrive: ``exact``
        mode with every result (and the known answer) in one determinism class, where
        equal outputs are equal commitments. Otherwise tolerances need the bytes."""
        if job.spec.verification.mode != "exact":
            return False
        classes = {r.output.determinism_class for r in job.replicas if r.output is not None}
        if job.known is not None:
            classes.add(job.known.determinism_class)
        return len(classes) <= 1

    def _compare(self, a: Output, b: Output, policy: VerificationPolicy) -> bool:
        if policy.mode == "exact" and a.determinism_class == b.determinism_class:
            return a.commitment == b.commitment
        return self.config.compare(a, b, policy)

    def _judge(self, job: RequesterJob) -> Verdict:
        verdict = judge(
            self._verdict_inputs(job),
            required=self._required(job),
            policy=job.spec.verification,
            compare=self._compare,
            known=job.known,
        )
        if verdict.status == VerdictStatus.VERIFIED and job.known is None:
            # Probation: newcomers never outvote an established provider of the job; a
            # majority of newcomers against one is a disagreement (more replicas, or no pay).
            veteran = self._veteran_replicas(job)
            delivered = {i for i, _ in self._verdict_inputs(job)}
            if veteran & delivered and not veteran & set(verdict.accepted):
                return Verdict(VerdictStatus.DISAGREE, (), (), None)
        return verdict

    def _required(self, job: RequesterJob) -> int:
        """Agreeing results that verify the job: the signed redundancy under fixed
        replication; under adaptive, 1 while the job runs on one trusted provider (every
        delivered result a trusted provider's), else what was decided at the first award
        (``max(2, asked)``)."""
        if self.config.replication != "adaptive":
            return job.spec.redundancy
        if job.solo:
            if all(r.trusted for r in job.replicas if r.output is not None):
                return 1
            return max(2, job.asked)
        return job.required or max(2, job.asked)

    def _trusted(self, provider: bytes) -> bool:
        """Adaptive replication: whether a job may run on ``provider`` alone."""
        if provider in self.caught:
            return False
        rep = self.config.reputation(provider)
        config = self.config
        return (
            rep.settled_jobs >= config.trusted_jobs
            and rep.score_permille >= config.trusted_score_permille
            and rep.stake >= config.trusted_stake
            and rep.failures <= config.trusted_max_failures
        )

    def _catch(self, provider: bytes) -> None:
        """Remember a provider caught with a wrong result (bounded, oldest forgotten)."""
        self.caught.pop(provider, None)
        self.caught[provider] = None
        while len(self.caught) > max(0, self.config.caught_limit):
            del self.caught[next(iter(self.caught))]

    def _veteran_replicas(self, job: RequesterJob) -> set[int]:
        """Replicas of providers past probation (``probation_jobs`` settled jobs)."""
        rep, probation = self.config.reputation, self.config.probation_jobs
        return {r.index for r in job.replicas if rep(r.provider).settled_jobs >= probation}

    def _progress(self, job: RequesterJob, now_ms: int) -> list[Effect]:
        """After a replica changed: decide, or top the replicas up."""
        if any(r.state == ReplicaState.RUNNING for r in job.replicas):
            return self._fill(job, now_ms)  # replace failed ones while others run
        effects: list[Effect] = []
        if not self._by_commitment(job):
            # Compared within tolerances: every result's bytes are needed first. Its
            # receipt goes out now (the bytes follow it), verified or not.
            waiting = [r for r in job.replicas if r.state == ReplicaState.COMMITTED]
            for r in waiting:
                effects += self._receipt(job, r, now_ms)
            if waiting:
                return effects
        verdict = self._judge(job)
        if verdict.status == VerdictStatus.VERIFIED:
            winners = [job.replicas[i] for i in verdict.accepted]
            if all(w.state == ReplicaState.DELIVERED for w in winners):
                return self._finalise(job, now_ms, forced=False)
            # Verified by commitment: receipts, then every winner's bytes (a winner whose
            # bytes do not come, or do not match, fails and the verdict is taken again).
            for w in winners:
                effects += self._receipt(job, w, now_ms)
            return effects
        delivered = len(self._verdict_inputs(job))
        if verdict.status == VerdictStatus.TOO_FEW:
            need = max(1, (1 if job.known else self._required(job)) - len(verdict.accepted))
        else:  # DISAGREE: one more replica can make a majority
            need = 1
        job.target = max(job.target, delivered + need)
        effects += self._fill(job, now_ms)
        if (
            verdict.status == VerdictStatus.TOO_FEW
            and job.done is None
            and not any(r.state == ReplicaState.RUNNING for r in job.replicas)
        ):
            # Waiting for more replicas: fetch the bytes of what agrees so far (receipts
            # first), so that a deadline finalising short still has an output to hand over.
            for i in verdict.accepted:
                if job.replicas[i].state == ReplicaState.COMMITTED:
                    effects += self._receipt(job, job.replicas[i], now_ms)
        return effects

    def _candidates(self, job: RequesterJob, now_ms: int) -> list[Signed[Bid]]:
        """Usable bids, best first (``award_key``). In ``exact`` mode, bids in the
        determinism class of the first live replica (or of the best bid) come first, so
        that replicas can be compared bit for bit."""
        spec = job.spec
        awarded = {r.provider for r in job.live()}
        bids = [
            s
            for p, (s, _) in job.bids.items()
            if p not in awarded and p not in job.excluded and s.message.expires_ms > now_ms
        ]
        rep = self.config.reputation
        bids.sort(
            key=lambda s: award_key(
                s.message, rep(s.message.provider), spec.max_price, now_ms, spec.deadline_ms
            )
        )
        if spec.verification.mode == "exact" and bids:
            live = job.live()
            anchor = live[0].determinism_class if live else bids[0].message.determinism_class
            bids.sort(key=lambda s: s.message.determinism_class != anchor)  # stable
        return bids

    def _fill(self, job: RequesterJob, now_ms: int) -> list[Effect]:
        """Award spare bids until ``target`` replicas are live or the budget is spent;
        announce again, or finalise, when that is not possible."""
        if job.phase in (JobPhase.LOCKING, JobPhase.COLLECTING):
            return []  # the window's end (with the escrow locked) will fill
        effects: list[Effect] = []
        candidates = self._candidates(job, now_ms)
        if not job.live():
            candidates, job.target = self._initial_order(job, candidates)
        while len(job.live()) < job.target and job.can_award() and candidates:
            effects += self._award(job, candidates.pop(0), now_ms)
        if len(job.live()) >= job.target or any(
            r.state == ReplicaState.RUNNING for r in job.replicas
        ):
            return effects + self._tell_short(job)
        # Short of replicas and nothing running.
        if not job.can_award() or job.rejections():
            # Every award rejected and no spare bid left: the job, not a provider, is the
            # problem (their admission refused it); end it now with what they said.
            return effects + self._finalise_short(job, now_ms)
        # Announce again when awards were made before, when nobody answered at all (lost
        # announcements; a few times), or when every answer was "busy"; other refusals
        # are final.
        silent = not job.nobids and job.announcements < MAX_SILENT_ANNOUNCEMENTS
        busy = bool(job.nobids) and all(nb.reason == "busy" for nb in job.nobids.values())
        again = job.replicas or silent or busy  # a busy network may free up: wait for it
        if again and now_ms + 2 * job.spec.bid_window_ms < job.spec.deadline_ms:
            return effects + self._tell_short(job) + self._announce(job, now_ms)
        return effects + self._finalise_short(job, now_ms)

    def _finalise_short(self, job: RequesterJob, now_ms: int) -> list[Effect]:
        """No replica left to award: finalise with what arrived. Results accepted short of
        the redundancy (paid as unverified work) have their bytes fetched first: their
        receipts go out, and the job is finalised when the bytes arrive or fail to."""
        verdict = self._judge(job)
        accepted = [job.replicas[i] for i in verdict.accepted]
        if verdict.status == VerdictStatus.TOO_FEW and not any(
            r.state == ReplicaState.DELIVERED for r in accepted
        ):
            effects: list[Effect] = []
            for r in accepted:
                if r.state == ReplicaState.COMMITTED:
                    effects += self._receipt(job, r, now_ms)
            if effects or any(r.state == ReplicaState.COMMITTED for r in accepted):
                return effects
        return self._finalise(job, now_ms, forced=True)

    def _tell_short(self, job: RequesterJob) -> list[Effect]:
        """``waiting``, once per number of live replicas, when the job has fewer than it
        needs, more may be awarded and no bid is left to award."""
        live = len(job.live())
        if live >= job.target or not job.can_award() or job.told_short == live:
            return []
        job.told_short = live
        cls = job.spec.requirements.capability_class
        detail = f"{live} of {job.target} replicas found; waiting for more contributors of {cls}"
        return [NotifyUser(job.id, UserEvent.WAITING, detail)]

    def _initial_order(
        self, job: RequesterJob, candidates: list[Signed[Bid]]
    ) -> tuple[list[Signed[Bid]], int]:
        """The first awards: the best ``redundancy`` bids, with a probation replica
        (``_with_probation``); adaptive replication decides its own."""
        spec = job.spec
        if self.config.replication == "adaptive" and job.known is None:
            return self._adaptive_order(job, candidates)
        return self._with_probation(job, candidates, spec.redundancy)

    def _with_probation(
        self, job: RequesterJob, candidates: list[Signed[Bid]], n: int
    ) -> tuple[list[Signed[Bid]], int]:
        """The best ``n`` bids, plus one probation replica when every one of them is a
        newcomer: the best established provider if one bid (newcomers never outvote it),
        else the next bid when fewer than two were chosen; while the budget allows it."""
        rep = self.config.reputation
        probation = self.config.probation_jobs
        chosen, rest = candidates[:n], candidates[n:]
        if not chosen or job.budget <= n:
            return candidates, n
        if any(rep(s.message.provider).settled_jobs >= probation for s in chosen):
            return candidates, n
        veterans = [s for s in rest if rep(s.message.provider).settled_jobs >= probation]
        if veterans:
            rest.remove(veterans[0])
            return [*chosen, veterans[0], *rest], n + 1
        if len(chosen) < 2 and rest:
            return candidates, n + 1
        return candidates, n

    def _adaptive_order(
        self, job: RequesterJob, candidates: list[Signed[Bid]]
    ) -> tuple[list[Signed[Bid]], int]:
        """Adaptive replication's first awards: the best trusted bid first when there is
        one, alone (``solo``) unless an audit is drawn (``audit_permille``: a second replica,
        two agreeing results); with no trusted bid, the best ``max(2, asked)`` bids and as
        many agreeing results (one replica is for trusted providers only)."""
        trusted = [s for s in candidates if self._trusted(s.message.provider)]
        job.solo = False
        if not trusted:
            # Newcomers alone get an established provider's probation replica, as under
            # fixed replication: two colluding newcomers never decide a job one bid for.
            job.required = max(2, job.asked)
            return self._with_probation(job, candidates, job.required)
        first = trusted[0]
        order = [first, *(s for s in candidates if s is not first)]
        if self.config.rng.randrange(1000) >= self.config.audit_permille:
            job.solo = True
            job.required = 1
            return order, 1
        job.required = max(2, job.asked)
        return order, job.required

    def _award(self, job: RequesterJob, signed_bid: Signed[Bid], now_ms: int) -> list[Effect]:
        bid = signed_bid.message
        received = job.bids[bid.provider][1]
        run = max(0, bid.est_finish_ms - received)
        deadline = min(job.spec.deadline_ms, now_ms + run + self.config.replica_grace_ms)
        index = len(job.replicas)
        award = Award(
            job_id=job.id,
            requester=self.me,
            provider=bid.provider,
            replica=index,
            price=bid.price,
            deadline_ms=deadline,
            bid_hash=signed_bid.id,
        )
        signed = sign(award, self.config.key, self.config.chain_id)
        rep = Replica(index, bid.provider, signed, deadline, now_ms, bid.determinism_class)
        rep.bid = signed_bid.raw
        rep.trusted = self.config.replication == "adaptive" and self._trusted(bid.provider)
        rep.next_nudge_ms = now_ms + self.config.award_resend_ms
        job.replicas.append(rep)
        return [
            Send(bid.provider, signed),
            SetTimer(self._watch_at(rep), TimerKey(TimerKind.WATCH, job.id, index)),
            NotifyUser(job.id, UserEvent.AWARDED, f"replica {index} at {bid.price}"),
        ]

    def _finalise(
        self, job: RequesterJob, now_ms: int, *, forced: bool, ledger: bool = True
    ) -> list[Effect]:
        """Decide the job with what has arrived, pay, attest, and settle or refund."""
        verdict = self._judge(job)
        by_index = {r.index: r for r in job.replicas}
        effects: list[Effect] = [
            CancelTimer(TimerKey(TimerKind.DEADLINE, job.id)),
            CancelTimer(TimerKey(TimerKind.BIDS, job.id)),
        ]
        for r in job.replicas:
            if r.state == ReplicaState.RUNNING:
                effects.append(CancelTimer(TimerKey(TimerKind.WATCH, job.id, r.index)))
        paid: list[Payout] = []
        output: Output | None = None
        report = None
        status = JobStatus.FAILED
        pays = verdict.status == VerdictStatus.VERIFIED or (
            forced and verdict.status == VerdictStatus.TOO_FEW
        )
        winners = [by_index[i] for i in verdict.accepted] if pays else []
        arrived = [w for w in winners if w.state == ReplicaState.DELIVERED]
        if arrived:
            verified = verdict.status == VerdictStatus.VERIFIED
            status = JobStatus.VERIFIED if verified else JobStatus.UNVERIFIED
            reason = f"{len(winners)} of {len(self._verdict_inputs(job))} results agree"
            if job.known is not None:
                reason += " with the known answer"
            output = arrived[0].output
            paid = [Payout(w.provider, w.award.message.price, w.bid) for w in arrived]
            for w in arrived:  # receipts only for verified (or, forced, accepted) work
                effects += self._receipt(job, w, now_ms)
            effects += [Attest(job.id, w.provider, True, "verified", ()) for w in winners]
            effects += self._punish(job, verdict, [by_index[i] for i in verdict.rejected], winners)
        elif winners:
            # Judged by commitment, but no winner's bytes came: nothing to hand over, and
            # nothing settled; the winners holding receipts may claim.
            held = [w for w in winners if w.receipt is not None]
            reason = f"{len(winners)} results agree but no output arrived in time"
            if held:
                reason += f" ({len(held)} providers hold receipts and may claim)"
            effects += [Attest(job.id, w.provider, False, _WITHHELD, ()) for w in held]
        elif not job.replicas:
            report = explain_no_bids(job.nobids.values(), len(job.providers))
            reason = f"no bids: {report.primary}"
        elif job.known is not None and verdict.rejected:
            reason = "every result contradicts the known answer"
            effects += self._punish(job, verdict, [by_index[i] for i in verdict.rejected], [])
        elif verdict.status == VerdictStatus.DISAGREE:
            reason = "results disagree and no majority formed within the retry budget"
        elif said := job.rejections():
            (first, _), *_ = Counter(said).most_common(1)
            providers = len({r.provider for r in job.replicas})
            reason = f"rejected by every provider awarded it ({providers}): {first}"
        else:
            reason = "no result arrived in time"
        for r in job.replicas:
            if r.state == ReplicaState.FAILED and r.reason in (_SILENT, _LATE, _CORRUPT, _WITHHELD):
                effects.append(Attest(job.id, r.provider, False, r.reason, ()))
        if ledger:
            job.phase = JobPhase.SETTLING
            claims_open = job.spec.escrow_expiry_height - self.config.claim_window_blocks
            payouts = tuple(p for p in paid if p.amount > 0)
            if self.height < claims_open and len(payouts) >= job.spec.redundancy:
                effects.append(Settle(job.id, payouts))
            elif status == JobStatus.FAILED:
                # Too late to settle (claims may be landing), or fewer payees than the
                # redundancy (the ledger refuses such a settle before expiry: the providers
                # holding receipts claim): refunded at expiry, never earlier (an empty
                # settle before expiry could take work providers may still claim for).
                expiry = job.spec.escrow_expiry_height
                reason += f"; the escrow is refunded at its expiry, block {expiry}"
            # else: the winners hold receipts and claim; the rest is refunded at expiry.
        done = JobDone(job.id, status, reason, output, tuple(paid), report)
        job.done = done
        effects.append(done)
        return effects

    def _punish(
        self, job: RequesterJob, verdict: Verdict, losers: list[Replica], winners: list[Replica]
    ) -> list[Effect]:
        """Attest against (and, for a known answer, slash) each provider in the minority,
        with its signed result and the winners' as evidence. A slash goes only with the
        Results of at least two paid winners: the ledger slashes on nothing less (a known
        answer alone is not evidence a replica can check)."""
        effects: list[Effect] = []
        won = tuple(w.result for w in winners if w.result is not None)[:MAX_MAJORITY_EVIDENCE]
        for r in losers:
            if r.result is None:
                continue
            self._catch(r.provider)
            evidence = (r.result, *won)
            if len(won) < 2:
                pass  # nothing the ledger could check: the attestation below only
            elif job.known is not None:
                why = "contradicts the known answer"
                effects.append(Slash(job.id, r.provider, why, evidence, job.known.commitment))
            elif self.config.slash_outvoted and verdict.reference is not None:
                why = "outvoted by the majority"
                ref = verdict.reference.commitment
                effects.append(Slash(job.id, r.provider, why, evidence, ref))
            effects.append(Attest(job.id, r.provider, False, "outvoted", evidence))
        return effects


def default_policy() -> VerificationPolicy:
    """Exact comparison, no spot checks: the policy of a plain deterministic job."""
    return VerificationPolicy(mode="exact", rtol_e9=0, atol_e9=0, spot_check_permille=0)
