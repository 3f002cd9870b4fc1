"""The fair exchange of a requester's replica (specs/marketplace.md, "Fair exchange"): a
provider's Result commits to its output and brings it sealed under a one-time key; the
requester's Receipt answers it; the key follows (an Unseal, or the provider's claim on the
ledger). Plain functions of a job, its replica and the requester's configuration; the
:class:`~scheduler.Requester` machine routes the messages, and fails a replica or judges
the job again as they say.

- A Result of a running replica with outcome ``ok`` and the determinism class its bid
  named is kept (``COMMITTED``): its output commitment, and its sealed bytes when they
  hash as it announced. Another outcome, or another class, fails the replica.
- A receipt is signed once per replica, for a result that won (*sealed*: the provider
  claims with it at once, publishing the key, in a block up to the receipt's
  ``claim_by``) or whose bytes the verdict needs (*plain*: the key comes at once), and
  only once its sealed bytes are held: until then, and until its key comes, the replica
  is watched. A Result resent gets its receipt again.
- The key opens the sealed bytes; the output is kept (``DELIVERED``) when it has the
  commitment the Result claims (recomputed with the injected ``commitment``). A key that
  opens nothing, or an output with another commitment, fails the replica (misbehaviour:
  never verified, paid by a settle, or returned).
"""

from __future__ import annotations

from protocol import (
    SEAL_OVERHEAD,
    Receipt,
    RemoteProtocolError,
    Result,
    Signed,
    content_hash,
    key_hash,
    sign,
    unseal_output,
)

from ._config import RequesterConfig
from ._effects import (
    CancelTimer,
    Effect,
    Misbehaved,
    NotifyUser,
    Output,
    Send,
    SetTimer,
    TimerKey,
    TimerKind,
    UserEvent,
)
from ._requester_jobs import (
    _CORRUPT,
    KEY_DUE_BLOCKS,
    PLAIN,
    SEALED,
    JobPhase,
    Replica,
    ReplicaState,
    RequesterJob,
    awarded,
)


def take_result(
    job: RequesterJob, rep: Replica, signed: Signed[Result], now_ms: int
) -> tuple[str | None, list[Effect]]:
    """A Result for a running replica: why the replica fails (``None``: it does not) and
    the effects; kept (``COMMITTED``) when it does not fail."""
    res = signed.message
    if res.outcome != "ok":
        return f"reported {res.outcome}: {res.message}", []
    if res.determinism_class != rep.determinism_class:
        # Judging by commitment needs the class its bid named: a result claiming another
        # one would make the job compare bytes, and receipt every result first.
        why = f"reported determinism class {res.determinism_class!r}, not its bid's"
        return why, [Misbehaved(res.provider, why)]
    if not any(res.output_commitment):
        # An output committing to nothing: outvoted, it could never be evidence (the
        # ledger takes only outputs with a commitment), so a wrong answer sent this way
        # was never slashed and our report of it was counted against us (round 17,
        # R17B-1).
        why = "reported an output with no commitment"
        return why, [Misbehaved(res.provider, why)]
    if res.key_hash == bytes(32) or res.output_size <= SEAL_OVERHEAD:
        # No sealed output to receipt: nothing a claim could ever open for us.
        why = "reported an output without a sealed blob and its key's hash"
        return why, [Misbehaved(res.provider, why)]
    rep.state = ReplicaState.COMMITTED
    rep.result = signed
    rep.output = Output(b"", res.output_commitment, res.determinism_class)
    rep.received_ms = rep.last_seen_ms = now_ms
    return None, [CancelTimer(TimerKey(TimerKind.WATCH, job.id, rep.index))]


def take_sealed(rep: Replica, sealed: bytes) -> list[Effect]:
    """The sealed output bytes that came with a committed replica's Result: kept when they
    are the blob the Result announced (else the provider sends them again)."""
    assert rep.result is not None
    res = rep.result.message
    if rep.sealed:
        return []
    if len(sealed) != res.output_size or content_hash(sealed) != res.output_hash:
        return [Misbehaved(res.provider, "sealed output bytes do not match the result's hash")]
    rep.sealed = sealed
    return []


def open_output(
    job: RequesterJob, rep: Replica, key: bytes, config: RequesterConfig
) -> tuple[str | None, list[Effect]]:
    """The key of a committed replica's sealed output (its Result's ``key_hash`` checked
    by the caller): why the replica fails (``None``: it does not) and the effects; the
    output kept (``DELIVERED``) when it is what the Result committed to."""
    assert rep.result is not None
    res = rep.result.message
    if key_hash(key) != res.key_hash:
        return None, [Misbehaved(res.provider, "a key that is not its result's")]
    try:
        output = unseal_output(key, rep.sealed)
    except RemoteProtocolError:
        return _CORRUPT, [Misbehaved(res.provider, "its key does not open its sealed output")]
    rep.sealed = b""  # opened: the output is kept instead
    if config.commitment(output) != res.output_commitment:
        # The output is not what the result commits to: a failed replica, never
        # verified, never paid by a settle, never handed to the user.
        return _CORRUPT, [Misbehaved(res.provider, _CORRUPT)]
    rep.state = ReplicaState.DELIVERED
    rep.output = Output(output, res.output_commitment, res.determinism_class)
    return None, [
        CancelTimer(TimerKey(TimerKind.WATCH, job.id, rep.index)),
        NotifyUser(job.id, UserEvent.DELIVERED, f"replica {rep.index} delivered"),
    ]


def issue_receipt(
    job: RequesterJob,
    rep: Replica,
    now_ms: int,
    config: RequesterConfig,
    me: bytes,
    height: int,
    *,
    sealed: bool = False,
) -> list[Effect]:
    """Sign and send the receipt of a replica whose result won (``sealed``) or whose
    output the verdict needs (once; the first wish decides its kind), as soon as its
    sealed bytes are held; ``height`` is the ledger height seen when it is signed. A
    sealed receipt is claimable up to ``KEY_DUE_BLOCKS`` blocks later (its ``claim_by``),
    and its key is awaited that long. A committed replica's key is then due: watched, as
    it is while its sealed bytes are awaited."""
    if rep.result is None or rep.receipt is not None:
        return []
    first = not rep.want
    if first:
        rep.want = SEALED if sealed else PLAIN
    effects: list[Effect] = []
    # A claim must land before the escrow's expiry: a sealed receipt's claim_by is at most
    # the block before it (colluding winners sending their bytes late, one after another,
    # kept the job waiting past the expiry: round 17, R17B-5), and none is signed that no
    # later block could cash.
    claim_by = min(height + KEY_DUE_BLOCKS, job.spec.escrow_expiry_height - 1)
    if rep.sealed and rep.want == SEALED and claim_by <= height:
        return []
    if rep.sealed:
        res = rep.result.message
        receipt = Receipt(
            job_id=job.id,
            requester=me,
            provider=rep.provider,
            replica=rep.index,
            result_hash=rep.result.id,
            output_commitment=res.output_commitment,
            key_hash=res.key_hash,
            at_once=1 if rep.want == SEALED else 0,
            claim_by=claim_by if rep.want == SEALED else 0,
            received_ms=rep.received_ms,
        )
        rep.receipt = sign(receipt, config.key, config.chain_id)
        effects.append(Send(rep.provider, rep.receipt))
    elif not first:
        return []  # still waiting for its sealed bytes
    if rep.state == ReplicaState.COMMITTED:
        rep.last_seen_ms = now_ms
        rep.nudges = 0
        key = TimerKey(TimerKind.WATCH, job.id, rep.index)
        effects.append(SetTimer(now_ms + config.heartbeat_timeout_ms // 2, key))
    return effects


def resend_receipt(job: RequesterJob, signed: Signed[Result]) -> list[Effect]:
    """The receipt of a Result resent (ours was lost), again; nothing when none went out
    yet."""
    res = signed.message
    if res.replica < len(job.replicas):
        rep = job.replicas[res.replica]
        if rep.receipt is not None and rep.result is not None and rep.result.id == signed.id:
            return [Send(rep.provider, rep.receipt)]
    return []


def awaits_output(job: RequesterJob | None, provider: bytes, replica: int) -> bool:
    """Whether a Result's sealed output from ``provider`` for ``replica`` would be taken
    now: the job running, the replica awarded to it, its output not yet taken."""
    if job is None or job.phase in (JobPhase.CLOSED, JobPhase.LOCKING, JobPhase.SETTLING):
        return False
    rep = awarded(job, replica, provider)
    return rep is not None and (
        rep.state == ReplicaState.RUNNING
        or (rep.state == ReplicaState.COMMITTED and not rep.sealed)
    )


def runs_award(job: RequesterJob | None, provider: bytes) -> bool:
    """Whether ``provider`` runs an award of ``job`` now (it may fetch the job's data)."""
    if job is None or job.phase not in (JobPhase.COLLECTING, JobPhase.EXECUTING):
        return False
    return any(r.provider == provider and r.state == ReplicaState.RUNNING for r in job.replicas)


def holds_award(job: RequesterJob, provider: bytes) -> bool:
    """Whether ``provider`` holds an award (not failed) of ``job``, which is not closed."""
    return job.phase != JobPhase.CLOSED and any(
        r.provider == provider and r.state != ReplicaState.FAILED for r in job.replicas
    )


def keys_pending(job: RequesterJob) -> bool:
    """Whether a replica holding our sealed receipt is still to publish its key."""
    return key_due(job) >= 0


def key_due(job: RequesterJob) -> int:
    """The last height at which a claim with one of our sealed receipts whose key has not
    come may still land (its ``claim_by``), or -1 if none is pending."""
    return max(
        (
            r.receipt.message.claim_by
            for r in job.replicas
            if r.state == ReplicaState.COMMITTED
            and r.receipt is not None
            and r.receipt.message.sealed
        ),
        default=-1,
    )
