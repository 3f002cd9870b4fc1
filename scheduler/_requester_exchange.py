"""The fair exchange of a requester's replica (specs/marketplace.md, "Fair exchange"): a
provider's Result commits to its output, the requester's Receipt answers it, and the output
bytes follow the receipt. Plain functions of a job, its replica and the requester's
configuration; the :class:`~scheduler.Requester` machine routes the messages, and fails
a replica or judges the job again as they say.

- A Result of a running replica with outcome ``ok`` and the determinism class its bid
  named is kept (``COMMITTED``): its output commitment, not yet its bytes. Another
  outcome, or another class, fails the replica.
- Output bytes are kept (``DELIVERED``) when they hash as the Result announced and have
  the output commitment it claims (recomputed with the injected ``commitment``). Bytes
  with another commitment fail the replica (misbehaviour: never verified, paid or
  returned).
- A receipt is signed once per replica, for a result that won or whose bytes the verdict
  needs; a committed replica's bytes are then due. A Result resent without bytes gets
  its receipt again.
"""

from __future__ import annotations

from protocol import Receipt, Result, Signed, content_hash, sign

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
from ._requester_jobs import _CORRUPT, Replica, ReplicaState, RequesterJob


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
    rep.state = ReplicaState.COMMITTED
    rep.result = signed
    rep.output = Output(b"", res.output_commitment, res.determinism_class)
    rep.received_ms = rep.last_seen_ms = now_ms
    return None, [CancelTimer(TimerKey(TimerKind.WATCH, job.id, rep.index))]


def take_output(
    job: RequesterJob, rep: Replica, output: bytes, config: RequesterConfig
) -> tuple[str | None, list[Effect]]:
    """The output bytes of a committed replica: why the replica fails (``None``: it does
    not) and the effects; kept (``DELIVERED``) when they are what its Result committed
    to."""
    assert rep.result is not None
    res = rep.result.message
    if content_hash(output) != res.output_hash:
        return None, [Misbehaved(res.provider, "output bytes do not match the result's hash")]
    if config.commitment(output) != res.output_commitment:
        # The bytes are not what the result commits to: a failed replica, never
        # verified, never paid by a settle, never handed to the user.
        return _CORRUPT, [Misbehaved(res.provider, _CORRUPT)]
    rep.state = ReplicaState.DELIVERED
    rep.output = Output(output, res.output_commitment, res.determinism_class)
    return None, [
        CancelTimer(TimerKey(TimerKind.WATCH, job.id, rep.index)),
        NotifyUser(job.id, UserEvent.DELIVERED, f"replica {rep.index} delivered"),
    ]


def issue_receipt(
    job: RequesterJob, rep: Replica, now_ms: int, config: RequesterConfig, me: bytes
) -> list[Effect]:
    """Sign and send the receipt of a replica whose result won, or whose output bytes
    the verdict needs (once). A committed replica's bytes are then due: watched."""
    if rep.result is None or rep.receipt is not None:
        return []
    res = rep.result.message
    receipt = Receipt(
        job_id=job.id,
        requester=me,
        provider=rep.provider,
        replica=rep.index,
        result_hash=rep.result.id,
        output_commitment=res.output_commitment,
        received_ms=rep.received_ms,
    )
    rep.receipt = sign(receipt, config.key, config.chain_id)
    effects: list[Effect] = [Send(rep.provider, rep.receipt)]
    if rep.state == ReplicaState.COMMITTED:
        rep.last_seen_ms = now_ms
        rep.nudges = 0
        key = TimerKey(TimerKind.WATCH, job.id, rep.index)
        effects.append(SetTimer(now_ms + config.heartbeat_timeout_ms // 2, key))
    return effects


def resend_receipt(job: RequesterJob, signed: Signed[Result]) -> list[Effect]:
    """The receipt of a Result resent without bytes (ours was lost), again; nothing when
    none went out yet."""
    res = signed.message
    if res.replica < len(job.replicas):
        rep = job.replicas[res.replica]
        if rep.receipt is not None and rep.result is not None and rep.result.id == signed.id:
            return [Send(rep.provider, rep.receipt)]
    return []
