"""A requester's job on its way to replicas: opening it (the escrow lock), announcing it,
awarding bids, and watching each award (specs/marketplace.md, "Job phases"). Plain
functions of a job, the requester's configuration and what they read; the
:class:`~scheduler.Requester` machine calls them and decides what follows.

- ``open_job`` checks and signs a JobSpec and asks the ledger to lock ``max_price *
  (redundancy + max_retries)``: the most that can be paid, one price per replica ever
  awarded. The job is announced at once, while the lock is on its way into a block.
- An announcement is published on the topic of the job's capability class and sent
  straight to the providers the caller named (a first one to fewer than
  ``direct_only_below`` of them goes to them alone), and opens a bid window of
  ``bid_window_ms`` (each announcement after the first waits twice as long, up to 16
  windows).
- ``fill`` awards spare bids until the job's replicas are live, and says when none is left
  to award (the job is then finalised short) or announces it again.
- An award's deadline is its bid's estimated run time plus ``replica_grace_ms``, within the
  job's deadline. A replica is watched: silence for ``heartbeat_timeout_ms`` or its
  deadline passing fails it; an award with no sign of life is sent again. A receipted
  replica's output bytes are due: the receipt is sent again, then the replica fails (a
  sealed receipt's not before the ledger is at its ``claim_by``: a claim can land until
  then, and never after).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from protocol import Award, Bid, JobSpec, Signed, sign

from ._config import RequesterConfig
from ._effects import (
    Effect,
    LockEscrow,
    NotifyUser,
    Output,
    Publish,
    Send,
    SetTimer,
    TimerKey,
    TimerKind,
    UserEvent,
)
from ._errors import JobRejected
from ._requester_jobs import (
    _LATE,
    _SILENT,
    _WITHHELD,
    MAX_AWARD_RESENDS,
    MAX_SILENT_ANNOUNCEMENTS,
    JobPhase,
    Replica,
    ReplicaState,
    RequesterJob,
)
from ._requester_policy import Caught, established, initial_order, trusted
from ._requester_verdict import offers


def open_job(
    spec: JobSpec,
    now_ms: int,
    providers: Sequence[bytes],
    known: Output | None,
    spot_check: bool,
    config: RequesterConfig,
    me: bytes,
    height: int,
) -> tuple[RequesterJob, list[Effect]]:
    """Check and sign ``spec`` (:class:`JobRejected` when it cannot run); the new job and
    its first effects: the escrow lock, the deadline's timer, the first announcement."""
    if spec.requester != me:
        raise JobRejected("JobSpec.requester must be this node's key")
    if spec.deadline_ms <= now_ms + spec.bid_window_ms:
        raise JobRejected("deadline_ms must leave time after the bid window; extend it")
    if spec.bid_window_ms == 0:
        raise JobRejected("bid_window_ms must be positive")
    margin = config.claim_window_blocks + config.settle_margin_blocks
    if spec.escrow_expiry_height <= height + margin:
        raise JobRejected(
            f"escrow_expiry_height must be above {height + margin} (the current "
            f"height {height} plus {margin} blocks of settle margin and claim window)"
        )
    signed = sign(spec, config.key, config.chain_id)
    job = RequesterJob(signed, tuple(dict.fromkeys(providers)), known, spot_check)
    job.asked = spec.redundancy
    amount = spec.max_price * job.budget
    expiry = spec.escrow_expiry_height
    claim_height = max(0, expiry - config.claim_window_blocks)
    lock = LockEscrow(
        job.id,
        amount,
        claim_height,
        expiry,
        spec.max_price,
        min(64, job.budget),
        signed.raw,
    )
    return job, [
        lock,
        SetTimer(spec.deadline_ms, TimerKey(TimerKind.DEADLINE, job.id)),
        NotifyUser(
            job.id,
            UserEvent.SPOT_CHECK if spot_check else UserEvent.SUBMITTED,
            f"locking {amount}",
        ),
        *announce(job, now_ms, config),
    ]


#: A requester with canaries draws the ``created_ms`` of each job that may have one up to
#: this much before the time it was given, its canaries' on their own from the same time:
#: created at the same millisecond, a job and its canary were told apart, and with only the
#: canary's drawn earlier, the earlier of a pair was the canary, 200 times in 200 (review
#: rounds 58 and 59, F1). Deadlines stay as given: drawn earlier too, a tight job's run
#: time was cut to a few milliseconds (round 60, F1).
CANARY_JITTER_MS = 1_000


def jittered(spec: JobSpec, config: RequesterConfig) -> JobSpec:
    """``spec`` created a random moment up to :data:`CANARY_JITTER_MS` earlier; as given when
    the requester has no canaries or the job asks for no spot checks (none is drawn)."""
    if not config.canaries or not spec.verification.spot_check_permille:
        return spec
    earlier = config.rng.randrange(CANARY_JITTER_MS + 1)
    return replace(spec, created_ms=max(0, spec.created_ms - earlier))


def canary_for(spec: JobSpec, config: RequesterConfig) -> tuple[JobSpec, Output] | None:
    """A known-answer job to run beside ``spec``, drawn for ``spot_check_permille`` of jobs
    when canaries are configured: the canary's JobSpec and its answer; ``None`` when none is
    drawn. Its signed fields are ``spec``'s but for the nonce, the canary's model and
    inputs, and a creation time drawn as the job's own is (:func:`jittered`, from
    ``spec``'s as given): a provider that sees the whole JobSpec
    must not tell it apart. A canary signed with no spot checks and one
    replica was told apart by those fields alone, so a provider honest on those and wrong
    on the jobs that asked for spot checks was never caught (review round 58, F1). That a
    canary draws no canary of its own is the requester's state (``spot_check``), not a
    signed field."""
    canaries = config.canaries
    permille = spec.verification.spot_check_permille
    if canaries and permille and config.rng.randrange(1000) < permille:
        canary = canaries[config.rng.randrange(len(canaries))]
        check = replace(
            spec,
            nonce=config.rng.randbytes(16),
            runtime=canary.runtime,
            model_hash=canary.model_hash,
            model_size=canary.model_size,
            inputs=canary.inputs,
        )
        return jittered(check, config), canary.answer
    return None


def announce(job: RequesterJob, now_ms: int, config: RequesterConfig) -> list[Effect]:
    """Announce the job (again) and open a bid window."""
    if job.phase != JobPhase.LOCKING:
        job.phase = JobPhase.COLLECTING
    job.window_over = False
    job.answered.clear()
    job.announcements += 1
    direct = [p for p in job.providers if p not in job.excluded]
    effects: list[Effect] = []
    if job.announcements > 1 or not 0 < len(direct) < config.direct_only_below:
        effects.append(Publish(job.spec.requirements.capability_class, job.signed))
    effects += [Send(p, job.signed) for p in direct]
    # Each announcement after the first waits twice as long, up to 16 windows.
    window = job.spec.bid_window_ms << min(job.announcements - 1, 4)
    effects.append(SetTimer(now_ms + window, TimerKey(TimerKind.BIDS, job.id)))
    effects.append(NotifyUser(job.id, UserEvent.ANNOUNCED, f"announcement {job.announcements}"))
    return effects


def tell_short(job: RequesterJob) -> list[Effect]:
    """``waiting``, once per number of live replicas, when the job has fewer than it
    needs, more may be awarded and no bid is left to award."""
    live = len(job.live())
    if live >= job.target or not job.can_award() or job.told_short == live:
        return []
    job.told_short = live
    cls = job.spec.requirements.capability_class
    detail = f"{live} of {job.target} replicas found; waiting for more contributors of {cls}"
    return [NotifyUser(job.id, UserEvent.WAITING, detail)]


def award(
    job: RequesterJob,
    signed_bid: Signed[Bid],
    now_ms: int,
    config: RequesterConfig,
    me: bytes,
    caught: Caught,
) -> list[Effect]:
    """Award ``signed_bid`` one replica of the job, and watch it."""
    bid = signed_bid.message
    received = job.bids[bid.provider][1]
    run = max(0, bid.est_finish_ms - received)
    deadline = min(job.spec.deadline_ms, now_ms + run + config.replica_grace_ms)
    index = len(job.replicas)
    message = Award(
        job_id=job.id,
        requester=me,
        provider=bid.provider,
        replica=index,
        price=bid.price,
        deadline_ms=deadline,
        bid_hash=signed_bid.id,
    )
    signed = sign(message, config.key, config.chain_id)
    rep = Replica(index, bid.provider, signed, deadline, now_ms, bid.determinism_class)
    rep.bid = signed_bid.raw
    rep.awarded_ms = now_ms
    rep.trusted = config.replication == "adaptive" and trusted(bid.provider, config, caught)
    rep.established = established(config.reputation(bid.provider), config)
    rep.next_nudge_ms = now_ms + config.award_resend_ms
    job.replicas.append(rep)
    return [
        Send(bid.provider, signed),
        SetTimer(watch_at(rep, config), TimerKey(TimerKind.WATCH, job.id, index)),
        NotifyUser(job.id, UserEvent.AWARDED, f"replica {index} at {bid.price}"),
    ]


def watch(
    rep: Replica, key: TimerKey, now_ms: int, config: RequesterConfig, height: int
) -> tuple[str | None, list[Effect]]:
    """A replica's watch timer fired: why it fails now (``None``: it does not), or what
    to do (send the receipt or the award again, watch on)."""
    if rep.state == ReplicaState.COMMITTED and rep.want:
        # A receipt is wanted: its sealed bytes, then its key, are due. The receipt is
        # sent again (it or the key may have been lost; a provider resends its sealed
        # bytes by itself) twice, half a heartbeat timeout apart, then the replica fails.
        half = config.heartbeat_timeout_ms // 2
        if now_ms < rep.last_seen_ms + half:
            return None, [SetTimer(rep.last_seen_ms + half, key)]
        receipt = rep.receipt.message if rep.receipt is not None else None
        if rep.nudges >= MAX_AWARD_RESENDS:
            if receipt is not None and receipt.sealed and height < receipt.claim_by:
                # Its key comes with its claim's block, which the ledger takes up to the
                # receipt's claim_by: wait for the blocks, not the clock. Once that block
                # is seen without the key, no claim with the receipt can ever be paid.
                return None, [SetTimer(now_ms + half, key)]
            return _WITHHELD, []
        rep.nudges += 1
        rep.last_seen_ms = now_ms
        again: list[Effect] = [Send(rep.provider, rep.receipt)] if rep.receipt else []
        return None, [*again, SetTimer(now_ms + half, key)]
    if rep.state != ReplicaState.RUNNING:
        return None, []
    if now_ms >= rep.deadline_ms:
        return _LATE, []
    if now_ms >= rep.last_seen_ms + config.heartbeat_timeout_ms:
        return _SILENT, []
    effects: list[Effect] = []
    if nudge_due(rep) and now_ms >= rep.next_nudge_ms:
        # No sign of life since the award: it may have been lost. Send it again.
        rep.nudges += 1
        rep.next_nudge_ms = now_ms + config.award_resend_ms
        effects.append(Send(rep.provider, rep.award))
    return None, [*effects, SetTimer(watch_at(rep, config), key)]


def nudge_due(rep: Replica) -> bool:
    """Whether the award is still to be sent again when no sign of life comes."""
    return not rep.heard and rep.nudges < MAX_AWARD_RESENDS


def watch_at(rep: Replica, config: RequesterConfig) -> int:
    """When a running replica's watch timer fires next."""
    at = min(rep.deadline_ms, rep.last_seen_ms + config.heartbeat_timeout_ms)
    return min(at, rep.next_nudge_ms) if nudge_due(rep) else at


def fill(
    job: RequesterJob, now_ms: int, config: RequesterConfig, me: bytes, caught: Caught
) -> tuple[list[Effect], bool]:
    """Award spare bids until ``target`` replicas are live or the budget is spent; announce
    again when that is not possible. The effects, and whether the job is to be finalised
    short now (no replica left to award)."""
    if job.phase in (JobPhase.LOCKING, JobPhase.COLLECTING):
        return [], False  # the window's end (with the escrow locked) will fill
    if job.overdue:
        return [], False  # past the deadline, or finalising short (round 30, L1)
    live = job.live()
    running = any(r.state == ReplicaState.RUNNING for r in job.replicas)
    if live and (len(live) >= job.target or (running and not job.can_award())):
        # every replica it wants is live: no bid changes anything, and judging the
        # outputs in to rank the bids cost each stranger's Bid a compare of every
        # output, 23 ms a Bid of 3 MiB tolerance outputs (review round 58, F3)
        return tell_short(job), False
    effects: list[Effect] = []
    bids = offers(job, config, now_ms, caught)
    if not job.live():
        bids, job.target = initial_order(job, bids, config, caught)
    while len(job.live()) < job.target and job.can_award() and bids:
        effects += award(job, bids.pop(0), now_ms, config, me, caught)
    if len(job.live()) >= job.target or any(r.state == ReplicaState.RUNNING for r in job.replicas):
        return effects + tell_short(job), False
    # Short of replicas and nothing running.
    if not job.can_award() or job.rejections():
        # Every award rejected and no spare bid left: the job, not a provider, is the
        # problem (their admission refused it); end it now with what they said.
        return effects, True
    # Announce again when awards were made before, when nobody answered at all (lost
    # announcements; a few times), or when every answer was "busy"; other refusals are
    # final.
    silent = not job.nobids and job.announcements < MAX_SILENT_ANNOUNCEMENTS
    busy = bool(job.nobids) and all(nb.reason == "busy" for nb in job.nobids.values())
    again = job.replicas or silent or busy  # a busy network may free up: wait for it
    if again and now_ms + 2 * job.spec.bid_window_ms < job.spec.deadline_ms:
        return effects + tell_short(job) + announce(job, now_ms, config), False
    return effects, True
