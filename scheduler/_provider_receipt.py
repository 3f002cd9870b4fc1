"""The provider machine's receipts (:class:`~scheduler.Provider`'s ``receive`` of a
Receipt): one that matches our result is held and redeemed (a sealed one: our key on our
reserved place, else a claim; a plain one: the key); one a claim could not cash is
ignored. Functions of the machine, bound as its methods (specs/marketplace.md,
"Provider")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol import Receipt, Signed

from ._effects import (
    CancelTimer,
    ClaimWithReceipt,
    Effect,
    Misbehaved,
    NotifyUser,
    TimerKey,
    TimerKind,
    UserEvent,
)
from ._ledger import EscrowView
from ._provider_work import Work, WorkPhase
from ._requester_jobs import KEY_DUE_BLOCKS

if TYPE_CHECKING:
    from ._provider import Provider

#: A sealed receipt whose escrow does not show our place reserved waits for it until this
#: many blocks after we asked for it (as the run started), then we claim.
RESERVE_WAIT_BLOCKS = 2
#: With our key sent on our reserved place, we claim once the last block a claim can land
#: in is this close and the owner's settle has not paid us; our key goes early only while
#: it is further than this.
CLAIM_MARGIN_BLOCKS = 4
#: A sealed receipt's ``claim_by`` may be this many blocks further than ``KEY_DUE_BLOCKS``
#: after the best height we know (the requester's view may be ahead of ours); one past
#: that, or not above our height, is refused as the requester's misbehaviour.
CLAIM_BY_SLACK_BLOCKS = 8


def on_receipt(p: Provider, signed: Signed[Receipt], now_ms: int) -> list[Effect]:
    receipt = signed.message
    work = p.work.get(receipt.job_id)
    if (
        work is None
        or work.phase not in (WorkPhase.DELIVERED, WorkPhase.RECEIPTED, WorkPhase.CLAIMED)
        or work.result is None
        or work.award is None
    ):
        return []
    if (
        receipt.provider != p.me
        or receipt.requester != work.spec.requester
        or receipt.replica != work.award.message.replica
        or receipt.result_hash != work.result.id
        or receipt.key_hash != work.result.message.key_hash
    ):
        return [Misbehaved(receipt.requester, "receipt does not match our result")]
    if work.receipt is not None:
        # A receipt again: the requester still waits for our key (it or the receipt may
        # have been lost). A plain receipt's key goes again now, at most once per
        # ``result_resend_ms``; a sealed one's comes with our claim's payment.
        due = work.key_sent_ms + p.config.result_resend_ms
        if work.keyed and work.phase in (WorkPhase.RECEIPTED, WorkPhase.CLAIMED):
            pass  # our key went on our reserved place: again, as a plain one's
        elif work.phase != WorkPhase.RECEIPTED or not work.key_now or not work.covered:
            return []  # a sealed receipt's key comes with our claim's payment
        if now_ms < due:
            return []  # a requester cannot make us send on demand
        work.key_sent_ms = now_ms
        return [p._unseal(work)]
    if receipt.sealed and not p._claim_by_ok(receipt.claim_by):
        # A claim with it could only be refused in a block (dropping our later
        # transactions with it); an honest requester gives ``KEY_DUE_BLOCKS``. One
        # already past is no misbehaviour: an honest requester whose ledger lags ours
        # by a few blocks sends it (round-4 review); only one absurdly far ahead is.
        # The receipt is ignored and the work stays delivered (until the job's deadline
        # and a grace, or the escrow's expiry): closed, it let the job be announced
        # again, bid on and run again on one escrow, any number of times (round 71, F3).
        why = f"a sealed receipt claimable up to height {receipt.claim_by}"
        if receipt.claim_by > p.height:
            return [Misbehaved(receipt.requester, f"{why}, at height {p.height}")]
        return [NotifyUser(work.id, UserEvent.UNACKNOWLEDGED, f"{why}: no claim with it can land")]
    if receipt.sealed and p.height + 1 >= work.spec.escrow_expiry_height:
        # Claims close at the escrow's expiry: one signed now would be refused in a
        # block and drop our later transactions with it (review round 9, R9-2). Ignored
        # as above; the escrow's expiry ends the work.
        why = f"a sealed receipt at height {p.height}: the escrow expires before a claim can land"
        return [NotifyUser(work.id, UserEvent.UNACKNOWLEDGED, why)]
    p._left_delivered(work)  # the sealed bytes are the requester's now
    work.phase = WorkPhase.RECEIPTED
    work.receipt = signed
    effects: list[Effect] = [
        CancelTimer(TimerKey(TimerKind.RESEND, work.id)),
        NotifyUser(
            work.id,
            UserEvent.RECEIPTED,
            "a verified result: our key goes on our reserved place, or with our claim"
            if receipt.sealed
            else "a claim is possible if the requester never settles",
        ),
    ]
    if not work.covered:
        return effects + p._check_escrow(work, p.config.escrow_of(work.id), now_ms)
    return effects + p._redeem(work, now_ms)


def claim_by_ok(p: Provider, claim_by: int) -> bool:
    """A sealed receipt's ``claim_by`` is still ahead, and not further than an honest
    requester sets it (``KEY_DUE_BLOCKS`` after its height, which may be a few blocks
    ahead of ours: ``CLAIM_BY_SLACK_BLOCKS``)."""
    ahead = max(p.height, p.head) + KEY_DUE_BLOCKS + CLAIM_BY_SLACK_BLOCKS
    return p.height < claim_by <= ahead


def sealed(p: Provider, work: Work, escrow: EscrowView | None, now_ms: int) -> list[Effect]:
    """A sealed receipt held on a covering escrow. With our place reserved in the
    escrow at the award's price, our key goes at once (the reserved price stays in
    the escrow for us whatever its owner settles), and the owner's settle pays us; we
    claim only if it has not by ``CLAIM_MARGIN_BLOCKS`` before the receipt's
    ``claim_by``, or if the escrow was settled without us. Without one, we wait for it
    up to ``RESERVE_WAIT_BLOCKS`` after we asked for it, then claim, the key going
    with the claim's block (specs/marketplace.md, "Provider")."""
    # (callers: a RECEIPTED job's sealed receipt, on an escrow seen covering it)
    assert work.receipt is not None and work.award is not None
    if work.keyed:
        if escrow is not None and not escrow.is_open:
            return p._claim(work, "the escrow closed without paying us; claiming")
        return p._sealed_due(work)
    price = work.award.message.price
    late = p._claim_near(work)
    reserved = escrow is not None and escrow.reserved_for(p.me) == price
    if reserved and escrow is not None and escrow.is_open and not late:
        # Not when the receipt's claim_by is already near: a claim of ours must still
        # be able to land by it (a requester giving one block got the key and let our
        # claim come too late: its reserved price went back to it at the expiry).
        work.keyed = True
        work.key_sent_ms = now_ms
        return [p._unseal(work)]
    return p._sealed_due(work)


def sealed_due(p: Provider, work: Work) -> list[Effect]:
    """The claim of a sealed receipt, if the height alone says it is due: the receipt's
    ``claim_by`` is ``CLAIM_MARGIN_BLOCKS`` away, or, with our key not sent, our place
    was not reserved within ``RESERVE_WAIT_BLOCKS``."""
    if work.phase != WorkPhase.RECEIPTED or work.receipt is None or work.plain or not work.covered:
        return []
    if p._claim_near(work):
        return p._claim(work, "claiming before the sealed receipt lapses")
    if not work.keyed and p.height >= work.reserve_height + RESERVE_WAIT_BLOCKS:
        return p._claim(work, "claiming with a sealed receipt (no place reserved)")
    return []


def claim_near(p: Provider, work: Work) -> bool:
    """Whether the last block a claim with our sealed receipt can land in (its
    ``claim_by``, and before the escrow's expiry: claims close there, and the owner
    refunds what is left) is within ``CLAIM_MARGIN_BLOCKS`` of the chain's height as
    far as we know it (ours may lag the sources' head). A requester that sent its
    receipt near the expiry, with a ``claim_by`` past it, had our key and let our claim
    come too late (review round 81, F1)."""
    assert work.receipt is not None
    last = min(work.receipt.message.claim_by, work.spec.escrow_expiry_height - 1)
    return bool(max(p.height, p.head) + CLAIM_MARGIN_BLOCKS >= last)


def claim(p: Provider, work: Work, detail: str) -> list[Effect]:
    assert work.award is not None and work.receipt is not None
    work.phase = WorkPhase.CLAIMED
    return [
        ClaimWithReceipt(work.id, work.award, work.receipt, work.key),
        NotifyUser(work.id, UserEvent.CLAIMED, detail),
    ]
