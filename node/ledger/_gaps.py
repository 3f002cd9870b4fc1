"""How a transaction queue (:class:`._txqueue.TxQueue`) closes a gap in its sequence
numbers: with a filler (a transfer of 1 to ourselves), or, when the account cannot pay
one, by giving the numbers above the gap out again (renumbering: review round 6, R6-5).
Functions of the queue, bound as its methods (specs/daemon.md, "Transactions")."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

import ledger

from ._txrequest import Pending

if TYPE_CHECKING:
    from ._txqueue import TxQueue

log = logging.getLogger("node.ledger._txqueue")  # its lines are the queue's

#: A gap filler is a transfer of this much to ourselves.
FILLER_AMOUNT = 1


class Overtook(Exception):
    """The mempool refused our transaction for the gap before it: sent again."""


class Held(Exception):
    """Not sent: the numbers above a gap are being given out again (renumbering)."""


def needs_filler(q: TxQueue, seq: int) -> bool:
    """Whether the unused ``seq`` would hold back later ones: when none was taken after
    it, it is simply taken again (False); else a filler must use it (True)."""
    if any(s > seq for s in q._pending):
        return True  # (a number kept for its unknown outcome, above a renumbering)
    if q._next_seq is None or seq + 1 >= q._next_seq:
        q._next_seq = seq
        return False
    return True


def can_pay_filler(q: TxQueue) -> bool:
    """Whether our balance pays a filler and its fee (read from the local state, which may
    lag: a filler refused all the same makes the queue renumber)."""
    return q._state().balance(q.me) >= FILLER_AMOUNT + q.fee()


def close_gap(q: TxQueue, seq: int) -> None:
    """Close the gap at ``seq``: with a filler, or, when we cannot pay one, by signing
    the transactions after it again from ``seq`` on."""
    if q._can_pay_filler():
        q._start_fill(seq)
    else:
        q._start_renumber(seq)


def start_fill(q: TxQueue, seq: int) -> None:
    """Fill ``seq`` in a task; it counts as pending from now on, so nothing else fills
    it meanwhile."""
    assert q._nursery is not None
    q._pending[seq] = Pending(q._expiry(), b"", None)  # until ``_fill`` signs
    q._nursery.start_soon(q._fill, seq)


async def fill(q: TxQueue, seq: int) -> None:
    """Submit a transfer of 1 to ourselves with sequence number ``seq`` (its outcome
    unknown, it is submitted again as any other transaction's). Refused: renumber."""
    expiry = q._expiry()
    filler = ledger.tx.transfer(
        q._key, q._chain_id, seq, to=q.me, amount=FILLER_AMOUNT, expiry_height=expiry, fee=q.fee()
    )
    pending = Pending(expiry, filler.id, None, filler.raw, since=q._state().height)
    q._pending[seq] = pending
    try:
        await q._submit_in_turn(filler.raw, seq)
    except Held:
        return  # above a gap being renumbered: the renumbering drops it
    except ledger.TransactionRejected as exc:
        log.warning("could not fill sequence gap %d: %s; renumbering", seq, exc)
        if q._pending.get(seq) == pending:
            del q._pending[seq]
            if q._needs_filler(seq):
                q._start_renumber(seq)
    except Exception as exc:
        log.info("filler of sequence gap %d: outcome unknown (%s)", seq, exc)
        if not isinstance(exc, Overtook):
            q._mark(seq, filler, unknown=True)
        await q._until_known(None, filler, seq)


def start_renumber(q: TxQueue, gap: int) -> None:
    """Give the numbers from ``gap`` on out again, in a task (``_renumber``); while it
    runs nothing above ``gap`` is sent and no new number is taken."""
    if q._renumber_from is not None:
        q._renumber_from = min(q._renumber_from, gap)
        return
    if q._nursery is None:
        return  # not running: on_block resyncs once the chain passes their expiry
    q._renumber_from = gap
    q.renumberings += 1
    q._nursery.start_soon(q._renumber)


async def renumber(q: TxQueue) -> None:
    """Once no submission above the gap is on its way (each may yet be admitted had a
    number below it been filled meanwhile: none is), put every transaction pending
    above it back to be signed again from the gap's number on, except one whose
    outcome is unknown (it keeps its number). Fillers above it are no longer needed."""
    try:
        while True:
            gap = q._renumber_from
            assert gap is not None
            if not any(s > gap for s in [*q._out, *q._sending]):
                break
            await q._answered.wait()
        moved = kept = 0
        for seq in sorted(s for s in q._pending if s > gap):
            pending = q._pending[seq]
            if pending.unknown:
                kept += 1
                continue
            del q._pending[seq]
            if pending.request is not None:
                q._put_back(pending.order, pending.request)
                moved += 1
        q._next_seq = gap
        log.warning(
            "sequence gap %d closed without a filler (our balance cannot pay one): the "
            "transactions after it are signed again from %d on (%d put back from pending, "
            "%d keep their numbers: outcome unknown)",
            gap,
            gap,
            moved,
            kept,
        )
    finally:
        q._renumber_from = None
        q._renumbered.set()
        q._renumbered = trio.Event()
