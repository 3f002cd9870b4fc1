"""How a transaction queue (:class:`._txqueue.TxQueue`) sends its pending transactions
again when a coordinator (re)connects, or when one has waited too long (the probe): in
sequence order, a number the coordinator refused when it made a block taken as its drop
report. Functions of the queue, bound as its methods (specs/daemon.md, "Transactions")."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import ledger

from . import _txclaims
from ._gaps import Held

if TYPE_CHECKING:
    from ._txqueue import TxQueue

log = logging.getLogger("node.ledger._txqueue")  # its lines are the queue's


def resend_pending(q: TxQueue) -> None:
    """A coordinator (re)connected: send every pending transaction again, in sequence
    order. One that restarted lost its mempool, and with it whatever we had sent that
    was not yet in a block; without this they would be noticed only once their expiry
    passed (``TX_LIFETIME_BLOCKS`` later) and the ones after them lost. Sending the
    same signed bytes again is harmless: a mempool that still holds them says so, and
    the chain takes each sequence number once."""
    if (
        q._nursery is None
        or q._resending
        or not any(p.raw for p in [*q._pending.values(), *q._claims.values()])
    ):
        return
    q._resending = True
    q._nursery.start_soon(q._resend)


async def resend(q: TxQueue) -> None:
    try:
        sent = 0
        for seq in sorted(q._pending):
            pending = q._pending.get(seq)
            if pending is None or not pending.raw:
                continue
            if q._state().next_seq(q.me) > seq:
                continue  # already in a block
            try:
                await q._submit_tracked(pending.raw, seq)
                sent += 1
            except Held:
                continue  # above a gap being renumbered: signed again, not resent
            except ledger.TransactionRejected as exc:
                if ledger.REFUSED_AT_BLOCK in str(exc):
                    # refused in a block whose drop report we missed (disconnected
                    # then, or no place for it): the same as that report, now rather
                    # than at its expiry; the coordinator dropped the ones after it
                    # with it (and admitted none since: they would leave a gap)
                    q.dropped(pending.tx_id, seq, str(exc))
                    behind = f"{ledger.DROPPED_BEHIND} {seq}, which was refused"
                    for later in sorted(s for s in q._pending if s > seq):
                        q.dropped(q._pending[later].tx_id, later, behind)
                    continue
                # already held, already applied, or expired: the chain (on_block) and
                # the drop reports decide, as for the first submission
                log.debug("resent seq %d: %s", seq, exc)
            except Exception as exc:  # no coordinator after all: the next connect
                log.debug("resending seq %d: outcome unknown (%s)", seq, exc)
                return
        for claim in list(q._claims.values()):
            if q._claim_decided(claim, q._state()):
                continue
            try:
                await q._submit(claim.raw)
                sent += 1
            except ledger.TransactionRejected as exc:
                if not _txclaims.already_there(str(exc)):  # refused, at a block or now
                    q._claim_refused(claim, str(exc))
            except Exception as exc:
                log.debug("resending a claim: outcome unknown (%s)", exc)
                return
        if sent:
            q.resent += sent
            log.info("a coordinator connected: %d pending transactions sent again", sent)
    finally:
        q._resending = False
