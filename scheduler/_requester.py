"""The requester's side of the marketplace, one machine for all of a node's jobs: its
event handlers, which take ``now_ms`` and return effects, and the job's progress from
announcement to decision. Its parts, plain functions: ``_requester_awards`` (opening,
announcing, awarding, watching), ``_requester_policy`` (replication: which bids, how many
replicas and agreeing results), ``_requester_verdict`` (judging) and ``_requester_settle``
(receipts, the final decision, payment). Rules (specs/marketplace.md is the full text):

- Nothing is awarded before the escrow lock is confirmed (``escrow_locked``), so a
  provider never works for an escrow that does not exist.
- Bids and NoBids are collected; bids keep arriving as spares after the window closes,
  which closes early once enough answers are in. At the window's end the best bids are
  awarded, one replica each. Nobody bid: the job fails with the providers' reasons.
- A failed replica's provider is excluded, and the replica is replaced from the spare
  bids or by announcing again, while the replica budget (``redundancy + max_retries``
  awards in all) lasts. A declined award is not counted and its provider may bid again,
  once; past ``budget`` declines by keys with no settled job, such keys are awarded
  after every established provider, oldest bid first (``newcomers_last``). A replica
  whose provider rejects the job (outcome ``rejected``: its sandbox refused it) is
  replaced from the spare bids only: when every award was rejected and no spare is left,
  the job fails at once with what the providers said.
  Short of replicas with none to award, the user is told (``waiting``). Once an
  established provider was awarded, newcomers alone never decide the job (probation:
  ``_requester_policy.veterans_short``, ``_requester_verdict``).
- A result whose output bytes hash as announced, and whose bytes have the output
  commitment it claims (recomputed here with the injected ``commitment``), is kept; one
  whose bytes do not match its commitment is a failed replica (misbehaviour: never
  verified, paid or returned). When no replica is outstanding the outputs are judged: a
  verified job is decided once its winners' bytes are in; otherwise one more replica is
  awarded. The job's deadline, or the ledger height reaching the settle limit, forces a
  decision with what has arrived.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol import (
    Bid,
    Heartbeat,
    JobSpec,
    NoBid,
    RemoteProtocolError,
    Result,
    Signed,
    Unseal,
    decode,
)

from ._config import RequesterConfig
from ._effects import (
    CancelTimer,
    Effect,
    JobDone,
    JobStatus,
    Misbehaved,
    NotifyUser,
    Output,
    Refund,
    SetTimer,
    TimerKey,
    TimerKind,
    UserEvent,
)
from ._errors import JobRejected, UnknownJob
from ._ledger import EscrowLookup, EscrowView
from ._requester_awards import (
    canary_for,
    fill,
    jittered,
    open_job,
    watch,
    watch_at,
)
from ._requester_exchange import (
    awaits_output,
    holds_award,
    issue_receipt,
    keys_pending,
    open_output,
    resend_receipt,
    runs_award,
    take_result,
    take_sealed,
)
from ._requester_jobs import (
    _CORRUPT,
    _DECLINED,
    _NO_PLACE,
    _WITHHELD,
    MAX_BIDS,
    MAX_DEADLINE_MS,
    SEALED,
    JobPhase,
    Replica,
    ReplicaState,
    RequesterJob,
    awarded,
)
from ._requester_policy import catch, drop_failed_audit, required, spec_to_sign
from ._requester_settle import finalise, finalise_short, force
from ._requester_verdict import (
    by_commitment,
    judge_job,
    probation_outcome,
    verdict_inputs,
    window_may_close,
)
from ._verification import VerdictStatus


class Requester:
    """The requester machine. Every handler takes ``now_ms`` and returns effects."""

    def __init__(self, config: RequesterConfig) -> None:
        self.config = config
        self.me = bytes(config.key.verify_key)
        self.jobs: dict[bytes, RequesterJob] = {}
        #: The latest ledger height seen (``block``).
        self.height = 0
        #: Providers outvoted in (or contradicting the known answer of) a job of ours, or
        #: whose output did not open to their commitment or never came after our receipt,
        #: oldest first, at most ``caught_limit``. Their bids are refused under every
        #: replication (``_on_bid``, ``candidates``); adaptive never trusts them again.
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
        spec = spec_to_sign(spec, self.config)
        signed_spec = jittered(spec, self.config)
        job_id, effects = self._start(
            signed_spec, now_ms, providers, known_answer, spot_check=False
        )
        self.jobs[job_id].asked = asked
        canary = canary_for(spec, self.config)
        if canary is not None:
            check, answer = canary
            canary_id, more = self._start(check, now_ms, providers, answer, spot_check=True)
            self.jobs[canary_id].asked = asked  # awarded as its job (``award_known``)
            # announced before or after the job, at random: not always second
            effects = more + effects if self.config.rng.randrange(2) else effects + more
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
        return runs_award(self.jobs.get(job_id), provider)

    def expects_output(self, job_id: bytes, provider: bytes, replica: int) -> bool:
        """Whether a Result's sealed output from ``provider`` for ``replica`` would be taken
        now (:meth:`receive` ignores it otherwise). The driver opens a sealed output only
        then: opening costs a decryption of up to a market frame, which a stranger's
        Result for a job it was never awarded must not buy."""
        return awaits_output(self.jobs.get(job_id), provider, replica)

    def awarded_to(self, provider: bytes) -> bool:
        """Whether ``provider`` holds an award (not failed) of a job of ours that is not
        closed: only such a peer sends a Result with its output, a market request far
        larger than any other (the driver takes those from it alone)."""
        return any(holds_award(job, provider) for job in self.jobs.values())

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
            # (a settle paying fewer than the job's redundancy before expiry is refused)
            job.phase = JobPhase.SETTLING
            expiry = job.spec.escrow_expiry_height
            why = (
                f"locked after the job failed; the escrow is refunded at its expiry, block {expiry}"
            )
            return [NotifyUser(job.id, UserEvent.LOCKED, why)]
        job.phase = JobPhase.COLLECTING
        locked = NotifyUser(job.id, UserEvent.LOCKED, "the escrow is in a block")
        if job.window_over or window_may_close(job, self.config, self.caught):
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
            job.note_places(escrow)
            effects += self.keys_published(job_id, escrow, now_ms)
            if not escrow.is_open:
                effects += self.escrow_closed(job_id, now_ms)
        return effects + self.block(height, now_ms)

    def keys_published(self, job_id: bytes, escrow: EscrowView, now_ms: int) -> list[Effect]:
        """The job's escrow as a block left it: keys that providers holding our receipts
        published with their claims open the outputs they sealed (the Unseal that follows
        a claim may be lost, or never come)."""
        job = self.jobs.get(job_id)
        if job is None:
            return []
        effects: list[Effect] = []
        for rep in job.replicas:
            if (
                rep.state == ReplicaState.COMMITTED
                and rep.receipt is not None
                and job.phase in (JobPhase.COLLECTING, JobPhase.EXECUTING)
            ):
                key = escrow.unsealed_by(rep.provider)
                if key:
                    effects += self._on_key(job, rep, key, now_ms)
        return effects

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
            if height >= expiry - limit:  # a claim may still land: R16B-4, R17B-3
                effects += self._force(job, now_ms, height, settle_limit=True)
        return effects

    # --- events from the network and timers -----------------------------------------

    def receive(self, data: bytes, now_ms: int, *, output: bytes | None = None) -> list[Effect]:
        """A message from a provider: Bid, NoBid, Heartbeat, Result (with ``output``, its
        sealed output bytes as they came, ``None`` when none came) or Unseal."""
        try:
            signed = decode(data, self.config.chain_id, Bid, NoBid, Heartbeat, Result, Unseal)
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
            return resend_receipt(job, signed) if isinstance(msg, Result) else []
        if isinstance(msg, Bid):
            return self._on_bid(job, signed, now_ms)
        if isinstance(msg, NoBid):
            return self._on_nobid(job, msg, now_ms)
        if isinstance(msg, Heartbeat):
            return self._on_heartbeat(job, msg, now_ms)
        if isinstance(msg, Unseal):
            return self._on_unseal(job, msg, now_ms)
        return self._on_result(job, signed, output, now_ms)

    def timer(self, key: TimerKey, now_ms: int) -> list[Effect]:
        """A timer this machine set has fired."""
        job = self.jobs.get(key.job_id)
        if job is None or job.phase in (JobPhase.SETTLING, JobPhase.CLOSED):
            return []
        if key.kind == TimerKind.DEADLINE:
            if job.phase == JobPhase.LOCKING:
                # Stay LOCKING: a lock confirmed later is refunded at its expiry.
                why = "escrow lock not confirmed in time"
                done = JobDone(job.id, JobStatus.FAILED, why, None, (), None)
                job.done = done
                return [done]
            return self._force(job, now_ms, self.height, settle_limit=False)
        if key.kind == TimerKind.BIDS and job.phase == JobPhase.LOCKING:
            job.window_over = True  # awards wait for the lock
            return []
        if key.kind == TimerKind.BIDS and job.phase == JobPhase.COLLECTING:
            return self._close_window(job, now_ms)
        if key.kind == TimerKind.WATCH and key.replica < len(job.replicas):
            rep = job.replicas[key.replica]
            failed, effects = watch(rep, key, now_ms, self.config, self.height)
            if failed == _WITHHELD and job.no_place_for(rep.provider):
                failed = _NO_PLACE  # it could never be paid, so its key never came: no blame
            return self._fail(job, rep, failed, now_ms) if failed else effects
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
        if spec.max_price < 1:
            # A lock of 0 is no escrow, and every bid (at least 1) would be above it.
            raise JobRejected("max_price must be at least 1 micro-credit")
        if spec.deadline_ms > now_ms + MAX_DEADLINE_MS:
            raise JobRejected(
                f"deadline_ms is more than {MAX_DEADLINE_MS // 3_600_000} h ahead "
                "(providers refuse such jobs as misbehaviour); shorten it"
            )
        # Never our own provider: it would not bid (or its bid is ignored), so waiting
        # for its answer would hold the bid window open for nothing.
        providers = [p for p in providers if p != self.me]
        job, effects = open_job(
            spec, now_ms, providers, known, spot_check, self.config, self.me, self.height
        )
        if job.id in self.jobs:
            raise JobRejected("this exact job was already submitted; use a fresh nonce")
        self.jobs[job.id] = job
        return job.id, effects

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
        if job.phase == JobPhase.COLLECTING and window_may_close(job, self.config, self.caught):
            return self._close_window(job, now_ms)
        return []

    def _on_bid(self, job: RequesterJob, signed: Signed[Bid], now_ms: int) -> list[Effect]:
        bid = signed.message
        if bid.provider == self.me:
            # Our own provider's: the ledger never lets an escrow pay its owner, so the
            # replica could never be paid (its claim refused, its key never sent).
            return []
        if bid.price > job.spec.max_price:
            return [Misbehaved(bid.provider, "bid above the job's max_price")]
        if bid.expires_ms <= now_ms or bid.provider in job.excluded:
            return []
        if bid.provider in self.caught:  # caught in a job of ours: no more awards (R6-3)
            if len(job.caught_bidders) < MAX_BIDS:
                job.caught_bidders.add(bid.provider)
            return self._answer(job, bid.provider, now_ms)  # it answered; nothing kept
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
        rep = awarded(job, hb.replica, hb.provider)
        if rep is None:
            return [Misbehaved(hb.provider, "heartbeat for a replica not awarded to it")]
        if rep.state != ReplicaState.RUNNING:
            return []
        rep.last_seen_ms = now_ms
        rep.heard = True
        return [SetTimer(watch_at(rep, self.config), TimerKey(TimerKind.WATCH, job.id, rep.index))]

    def _on_result(
        self, job: RequesterJob, signed: Signed[Result], output: bytes | None, now_ms: int
    ) -> list[Effect]:
        """A provider's Result: its output commitment, and its output sealed (``output``)."""
        res = signed.message
        rep = awarded(job, res.replica, res.provider)
        if rep is None:
            return [Misbehaved(res.provider, "result for a replica not awarded to it")]
        if rep.state in (ReplicaState.COMMITTED, ReplicaState.DELIVERED):
            if rep.result is None or rep.result.id != signed.id:
                return [Misbehaved(res.provider, "a second, different result")]
            if output is not None and rep.state == ReplicaState.COMMITTED and not rep.sealed:
                # The sealed bytes we waited for: the receipt wanted for them goes now.
                effects = take_sealed(rep, output)
                if rep.sealed and rep.want:
                    sealed = rep.want == SEALED
                    return effects + self._receipt(job, rep, now_ms, sealed=sealed)
                return effects
            # Resent: our receipt was lost (send it again), or none is due yet.
            return resend_receipt(job, signed)
        if rep.state != ReplicaState.RUNNING:
            return []
        failed, effects = take_result(job, rep, signed, now_ms)
        if failed:
            return effects + self._fail(job, rep, failed, now_ms)
        if output is not None:
            effects += take_sealed(rep, output)
        return effects + self._progress(job, now_ms)

    def _on_unseal(self, job: RequesterJob, msg: Unseal, now_ms: int) -> list[Effect]:
        """A provider's key for the sealed output of its result."""
        rep = awarded(job, msg.replica, msg.provider)
        if rep is None:
            return [Misbehaved(msg.provider, "a key for a replica not awarded to it")]
        if rep.state != ReplicaState.COMMITTED or rep.result is None:
            return []  # opened already, or failed
        if rep.result.id != msg.result_hash:
            return [Misbehaved(msg.provider, "a key for another result")]
        return self._on_key(job, rep, msg.key, now_ms)

    def _on_key(self, job: RequesterJob, rep: Replica, key: bytes, now_ms: int) -> list[Effect]:
        """The key of a committed replica's sealed output (its Unseal, or its claim read
        from the ledger): the output opened (``open_output``)."""
        if not rep.sealed:
            return []  # its sealed bytes have not come: the key waits with its sender
        failed, effects = open_output(job, rep, key, self.config)
        if failed:
            return effects + self._fail(job, rep, failed, now_ms)
        if rep.state != ReplicaState.DELIVERED:
            return effects
        return effects + self._progress(job, now_ms)

    def _receipt(
        self, job: RequesterJob, rep: Replica, now_ms: int, *, sealed: bool = False
    ) -> list[Effect]:
        return issue_receipt(job, rep, now_ms, self.config, self.me, self.height, sealed=sealed)

    def _fail(self, job: RequesterJob, rep: Replica, reason: str, now_ms: int) -> list[Effect]:
        rep.state = ReplicaState.FAILED
        rep.reason = reason
        rep.output = None  # never judged
        rep.sealed = b""
        job.bids.pop(rep.provider, None)
        again = any(
            r is not rep and r.provider == rep.provider and r.reason == _DECLINED
            for r in job.replicas
        )
        if reason != _DECLINED or again:  # a provider may decline once and bid again
            job.excluded.add(rep.provider)
        if reason == _CORRUPT or (reason == _WITHHELD and self.config.replication == "adaptive"):
            # Bytes that miss its commitment: caught, as an outvoted one. A withheld key
            # may be a network fault (a partition): caught only where trust is at stake.
            catch(rep.provider, self.config, self.caught)
        effects: list[Effect] = [
            CancelTimer(TimerKey(TimerKind.WATCH, job.id, rep.index)),
            NotifyUser(job.id, UserEvent.REPLICA_FAILED, f"replica {rep.index} {reason}"),
        ]
        return effects + self._progress(job, now_ms)

    def _progress(self, job: RequesterJob, now_ms: int) -> list[Effect]:
        """After a replica changed: decide, or top the replicas up."""
        if job.overdue:  # past the deadline, or finalising short: nothing more is awarded
            return [] if keys_pending(job) else self._finalise(job, now_ms, forced=True)
        if any(r.state == ReplicaState.RUNNING for r in job.replicas):
            return self._fill(job, now_ms)  # replace failed ones while others run
        effects: list[Effect] = []
        if not by_commitment(job):
            # Compared within tolerances: every result's bytes are needed first. Its
            # receipt goes out now (the bytes follow it), verified or not.
            waiting = [r for r in job.replicas if r.state == ReplicaState.COMMITTED]
            for r in waiting:
                effects += self._receipt(job, r, now_ms)
            if waiting:
                return effects
        verdict = judge_job(job, self.config)
        if verdict.status != VerdictStatus.VERIFIED and drop_failed_audit(
            job, self.config, now_ms, self.caught
        ):
            verdict = judge_job(job, self.config)  # as the job would be unaudited
        if verdict.status == VerdictStatus.VERIFIED:
            winners = [job.replicas[i] for i in verdict.accepted]
            if all(w.state == ReplicaState.DELIVERED for w in winners):
                return self._finalise(job, now_ms, forced=False)
            # Verified by commitment: sealed receipts (each winner claims with its own at
            # once, publishing its key), then every winner's output (a winner whose key
            # does not come, or whose output does not match, fails and the verdict is
            # taken again).
            for w in winners:
                effects += self._receipt(job, w, now_ms, sealed=True)
            return effects
        delivered = len(verdict_inputs(job))
        if verdict.status == VerdictStatus.TOO_FEW:
            need = max(1, (1 if job.known else required(job, self.config)) - len(verdict.accepted))
        else:  # DISAGREE: one more replica can make a majority
            need = 1
        job.target = max(job.target, delivered + need)
        effects += self._fill(job, now_ms)
        # Waiting for more replicas, nothing is receipted: a sealed receipt is claimable at
        # once, and one sent here paid a lone cheat for a wrong output before anything was
        # compared, keeping it paid (and so beyond a slash) after later replicas outvoted
        # it (round 29, K4). A job that ends short receipts what agrees then, once it awards
        # nothing more: at its deadline (``receipts_at_deadline``) or finalising short
        # (``finalise_short``, overdue from then on: round 30, L1); results judged by bytes
        # got their plain receipts above.
        return effects

    def _fill(self, job: RequesterJob, now_ms: int) -> list[Effect]:
        """Award spare bids until ``target`` replicas are live (``fill``); finalise when
        none is left to award."""
        effects, short = fill(job, now_ms, self.config, self.me, self.caught)
        if short and drop_failed_audit(job, self.config, now_ms, self.caught, final=True):
            return effects + self._progress(job, now_ms)  # judged as it would be unaudited
        return effects + self._finalise_short(job, now_ms) if short else effects

    def _force(
        self, job: RequesterJob, now_ms: int, height: int, *, settle_limit: bool
    ) -> list[Effect]:
        """The deadline or the settle limit came (``force``): wait for keys, or decide."""
        at = (self.config, self.me, self.caught, height)
        effects, decide = force(job, now_ms, *at, settle_limit=settle_limit)
        return effects + self._finalise(job, now_ms, forced=True) if decide else effects

    def _finalise(
        self, job: RequesterJob, now_ms: int, *, forced: bool, ledger: bool = True
    ) -> list[Effect]:
        """Decide the job with what has arrived, pay, attest, and settle or refund; a job
        whose newcomers agree with no established provider in it is told why, unpaid
        (``probation_outcome``)."""
        at = (self.config, self.me, self.caught, self.height)
        effects = finalise(job, now_ms, *at, forced=forced, ledger=ledger)
        return probation_outcome(job, self.config, effects, ledger=ledger)

    def _finalise_short(self, job: RequesterJob, now_ms: int) -> list[Effect]:
        """No replica left to award: finalise with what arrived (``finalise_short``)."""
        effects = finalise_short(job, now_ms, self.config, self.me, self.caught, self.height)
        return probation_outcome(job, self.config, effects, ledger=True)
