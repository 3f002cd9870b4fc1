"""The provider machine's delivered work: Results whose Receipt has not come (phase
DELIVERED). What it holds of them is bounded, since a requester that never receipts
chooses how long they would otherwise stay (review round 71, F1): each requester at most
``MAX_UNRECEIPTED_PER_REQUESTER`` delivered more than ``UNRECEIPTED_AFTER_MS`` ago (an
award past it is declined), the sealed bytes only
for their few resends and within ``MAX_HELD_OUTPUT_BYTES`` in all, and the work itself
until the job's deadline and a grace. Functions of the machine, bound as its methods
(specs/marketplace.md, "Provider")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._effects import Deliver, Effect, NotifyUser, SetTimer, TimerKey, TimerKind, UserEvent
from ._provider_work import Work, WorkPhase

if TYPE_CHECKING:
    from ._provider import Provider

#: Receipted output bytes are resent at doubling intervals up to this one.
MAX_OUTPUT_RESEND_MS = 60_000
#: A Result's sealed bytes are sent again at most this many times (at 1, 2, 4 and 8 s by
#: default), and never past the award's deadline: a requester wanting a receipt gives the
#: bytes half its heartbeat timeout twice, then fails the replica as withheld, and past
#: the award's deadline it has replaced us. Resent all day long to a requester that never
#: receipted, the bytes of 1,536 jobs held every send of the node's work budget, and its
#: Heartbeats to honest requesters were dropped (round 71, F1).
MAX_OUTPUT_RESENDS = 4
#: Delivered work a requester may leave unreceipted past ``UNRECEIPTED_AFTER_MS``: an award
#: past it is declined.
MAX_UNRECEIPTED_PER_REQUESTER = 32
#: A delivery counts against its requester's bound only once this long has passed without
#: its receipt: an honest requester receipts at its verdict, once its slowest replica is
#: in, and counted at once, 16 results of a fast provider waiting on another's 8 s runs had
#: an honest requester's awards declined and its jobs end unverified (review round 72,
#: R72-1).
UNRECEIPTED_AFTER_MS = 60_000
#: Sealed bytes kept for resends, in all: past it the oldest delivery's are dropped (its
#: requester has them, or never will).
MAX_HELD_OUTPUT_BYTES = 256 << 20
#: Delivered work no Receipt came for is dropped this long after the job's deadline: its
#: requester finalised the job by then, and nothing a receipt would pay is owed.
UNRECEIPTED_GRACE_MS = 60_000


def delivered(p: Provider, work: Work, now_ms: int) -> list[Effect]:
    """``work`` was delivered (its sealed bytes held): DELIVERED, counted against its
    requester, its bytes within the budget, the first resend timed."""
    work.phase = WorkPhase.DELIVERED
    work.resend_ms = p.config.result_resend_ms
    work.resends = 0
    p._unreceipted.setdefault(work.spec.requester, {})[work.id] = now_ms
    p._held[work.id] = len(work.sealed)
    p._held_bytes += len(work.sealed)
    while p._held_bytes > MAX_HELD_OUTPUT_BYTES and p._held:
        oldest = p.work.get(next(iter(p._held)))
        if oldest is None:  # pragma: no cover (closed work leaves the budget)
            break
        drop_bytes(p, oldest)
    return [SetTimer(now_ms + work.resend_ms, TimerKey(TimerKind.RESEND, work.id))]


def drop_bytes(p: Provider, work: Work) -> None:
    """``work``'s sealed bytes are no longer kept (no resend needs them)."""
    p._held_bytes -= p._held.pop(work.id, 0)
    work.sealed = b""


def left_delivered(p: Provider, work: Work) -> None:
    """``work`` leaves DELIVERED (receipted or closed; any other work is in neither
    count): no longer counted or held."""
    requester = work.spec.requester
    held = p._unreceipted.get(requester)
    if held is not None:
        held.pop(work.id, None)
        if not held:
            del p._unreceipted[requester]
    drop_bytes(p, work)


def unreceipted_full(p: Provider, requester: bytes, now_ms: int) -> str:
    """Why an award of ``requester``'s is declined for the deliveries it left unreceipted
    past ``UNRECEIPTED_AFTER_MS`` (``""``: it is not)."""
    old = 0
    for at in p._unreceipted.get(requester, {}).values():  # in delivery order
        if at + UNRECEIPTED_AFTER_MS > now_ms or old >= MAX_UNRECEIPTED_PER_REQUESTER:
            break
        old += 1
    if old < MAX_UNRECEIPTED_PER_REQUESTER:
        return ""
    return f"{old} results delivered to you over a minute ago await your receipt"


def resend(p: Provider, work: Work, key: TimerKey, now_ms: int) -> list[Effect]:
    """The RESEND timer of DELIVERED work: the sealed bytes again (they or the receipt may
    have been lost; doubling: a loser is never told), while resends are due; past the
    job's deadline, the work is told unacknowledged, and dropped after a grace."""
    assert work.result is not None and work.award is not None
    deadline = work.spec.deadline_ms
    if now_ms >= deadline + UNRECEIPTED_GRACE_MS:
        return p._close(work, "no receipt by the job's deadline")
    if now_ms >= deadline:
        # No receipt: nothing to claim with. A settlement may still pay us.
        why = "no receipt before the deadline"
        return [
            NotifyUser(work.id, UserEvent.UNACKNOWLEDGED, why),
            SetTimer(deadline + UNRECEIPTED_GRACE_MS, key),
        ]
    if (
        work.sealed
        and work.resends < MAX_OUTPUT_RESENDS
        and now_ms < work.award.message.deadline_ms
    ):
        work.resends += 1
        work.resend_ms = min(2 * work.resend_ms, MAX_OUTPUT_RESEND_MS)
        return [
            Deliver(work.spec.requester, work.result, work.sealed, resend=True),
            SetTimer(now_ms + work.resend_ms, key),
        ]
    drop_bytes(p, work)  # no resend is due any more
    return [SetTimer(deadline, key)]
