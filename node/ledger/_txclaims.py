"""How a transaction queue (:class:`._txqueue.TxQueue`) signs and submits claims: with no
sequence number (``ledger.UNSEQUENCED``), each on its own, at most ``ledger.MAX_AHEAD``
unresolved; one refused or voided in a block touches nothing else of ours (review rounds 12
and 13, R12-1, R13-3). Functions of the queue, bound as its methods (specs/daemon.md,
"Transactions")."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

import ledger

from ._txrequest import Pending, TxRequest

if TYPE_CHECKING:
    from ._txqueue import TxQueue

log = logging.getLogger("node.ledger._txqueue")  # its lines are the queue's

#: How the ledger refuses a claim of a provider that claimed from the escrow already.
ALREADY_CLAIMED = "already claimed from this escrow"


async def claim(q: TxQueue, request: TxRequest) -> None:
    """Sign and submit a claim with no sequence number. A timeout leaves its outcome
    unknown: the same bytes are sent again, backing off, until the chain or the
    coordinator decides (:func:`until_known`)."""
    while len(q._claims) >= ledger.MAX_AHEAD:  # the mempool holds as many
        q.held_back += 1
        await q._chain_moved.wait()
    fee = max(request.fee, q.fee(request.payload))
    signed = request.sign(q._key, q._chain_id, ledger.UNSEQUENCED, q._expiry(), fee)
    expiry = signed.message.expiry_height
    if request.on_signed is not None:
        request.on_signed(ledger.UNSEQUENCED, signed.id, expiry, signed.raw)
    claim = Pending(expiry, signed.id, request, signed.raw, since=q._state().height)
    q._claims[signed.id] = claim  # (before any wait: the bound above holds)
    async with q._window:
        try:
            await q._submit(signed.raw)
        except ledger.TransactionRejected as exc:
            if not already_there(str(exc)):
                q._claim_refused(claim, str(exc))
                return
        except Exception as exc:  # a timeout, no coordinator: it may have arrived
            q.unknown += 1
            log.info("claim outcome unknown (%s); trying again", exc)
        else:
            q.submitted += 1
            return
    # Out of the window's place: each try takes one again (held meanwhile, eight claims
    # unknown at once held every place for good, and every numbered transaction of ours
    # waited behind them: review round 14, R14-1).
    await q._claim_until_known(claim)


async def until_known(q: TxQueue, claim: Pending) -> None:
    """Send ``claim``'s bytes again, backing off, until it is admitted, refused or
    resolved by the chain (applied, expired, its escrow closed)."""
    wait, longest = q._retry_s
    while True:
        await trio.sleep(wait)
        wait = min(longest, wait * 2)
        if q._claims.get(claim.tx_id) is not claim:
            return  # dropped (reported) or resolved by a block
        if q._claim_decided(claim, q._state()):
            return
        try:
            async with q._window:
                await q._submit(claim.raw)
        except ledger.TransactionRejected as exc:
            if not already_there(str(exc)):
                q._claim_refused(claim, str(exc))
                return
        except Exception as exc:
            log.debug("claim still unknown: %s", exc)
            continue
        q.submitted += 1
        return


def refused(q: TxQueue, claim: Pending, reason: str) -> None:
    """Report a refusal of ``claim`` to its request; one saying that we claimed already is
    none (a claim of ours landed in a block our replica has not taken yet: the chain
    resolves its intent)."""
    if q._claims.pop(claim.tx_id, None) is None or claim.request is None:
        return
    if ALREADY_CLAIMED in reason:
        log.info("claim answered: %s (it landed)", reason)
        return
    q._rejected(claim.request, reason)


def decided(q: TxQueue, claim: Pending, state: ledger.State) -> bool:
    """Whether the chain decided ``claim``: it applied (we are among its escrow's
    claimants), or it can no longer apply (its escrow closed, which its request is told,
    or its expiry passed: the intent signs it again). A decided one is forgotten."""
    assert claim.request is not None and isinstance(claim.request.payload, ledger.Claim)
    escrow = state.escrow(claim.request.payload.job_id)
    closed = escrow is None or not escrow.claimable_by(q.me)
    if escrow is not None and q.me in escrow.claimed:
        closed = False
    elif not closed and state.height <= claim.expiry:
        return False
    if q._claims.pop(claim.tx_id, None) is not None and closed:
        q._rejected(claim.request, "its escrow closed before the claim was in a block")
    return True


def already_there(refusal: str) -> bool:
    """Whether a refusal says the coordinator's mempool holds the transaction (or another
    claim of ours for the same escrow) already: a submission before this one arrived."""
    return "already in the mempool" in refusal or "already pending" in refusal
