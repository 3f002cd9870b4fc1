"""Signing and submitting this node's ledger transactions, in sequence order, pipelined
(specs/daemon.md, "Transactions", states each rule and why).

- Numbers are taken in the order requests were put (a settle follows its lock); up to
  ``window`` submissions are in flight, and a request waits while the numbers taken run
  ``ledger.MAX_AHEAD`` (64) ahead of the chain (backpressure, not refusal).
- Only a definite answer is a refusal (the coordinator's rejection, or a drop it reports):
  a timeout is an unknown outcome, its number kept and the same bytes sent again until the
  chain or the coordinator decides. One refused for the gap before it overtook one of ours
  and is sent again; one dropped behind another is put back and signed again, checked
  against the chain first (:func:`._txrequest.doomed`).
- A gap is filled with a transfer of 1 to ourselves, or, by an account that cannot pay it,
  closed by renumbering the transactions above it (review 6, R6-5); an unreported gap is
  found at the dropped transaction's expiry. Money transactions are intents above this
  queue (``_intents.py``), which read the outcome from the chain.
- Expiries count from the best height seen (``head``), at most ``MAX_HEAD_LEAD`` above
  the local one.
- Claims take no sequence number (``ledger.UNSEQUENCED``): each is signed and submitted
  on its own, at most ``ledger.MAX_AHEAD`` unresolved, and one refused or voided in a block
  touches nothing else of ours (review rounds 12 and 13, R12-1, R13-3).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

import nacl.signing
import trio

import ledger
from protocol import Signed, Transaction, content_hash

from . import _gaps, _txclaims, _txresend
from ._gaps import FILLER_AMOUNT as FILLER_AMOUNT
from ._gaps import Held as _Held
from ._gaps import Overtook as _Overtook
from ._intents import claim_price
from ._txrequest import Pending, TxRequest, doomed

log = logging.getLogger(__name__)

#: A submitted transaction is valid this many blocks.
TX_LIFETIME_BLOCKS = 30
#: Submissions in flight at once (the mempool holds 64 ahead of an account's sequence).
WINDOW = 8
#: First and longest wait (s) between submissions of a transaction whose outcome is unknown.
RETRY_S = (0.25, 1.0)
#: A reported head counts at most this far above the local height, so that a source
#: claiming a head far above the chain's cannot get every transaction of ours refused
#: (expiry too far ahead): an expiry stays within the mempool's horizon.
MAX_HEAD_LEAD = ledger.MAX_EXPIRY_AHEAD - TX_LIFETIME_BLOCKS
#: A pending transaction that no block took for this many blocks is sent again (at most
#: once every this many blocks): the answer says whether the coordinator still holds it
#: or refused it when it made a block, should its drop report not have reached us.
PROBE_BLOCKS = 3


class TxQueue:
    """The node's transaction pipeline."""

    def __init__(
        self,
        key: nacl.signing.SigningKey,
        state: Callable[[], ledger.State],
        submit: Callable[[bytes], Awaitable[bytes]],
        *,
        chain_id: str,
        window: int = WINDOW,
        head: Callable[[], int] | None = None,
        retry_s: tuple[float, float] = RETRY_S,
        fee: int = 0,
    ) -> None:
        """``head``: the coordinator's height as best known (default: the local state's);
        ``retry_s``: the first and the longest wait between submissions of a transaction
        whose outcome is unknown; ``fee``: what each transaction pays (at least the
        chain's ``min_fee``)."""
        self._fee_setting = fee
        self.me = bytes(key.verify_key)
        self._key = key
        self._chain_id = chain_id
        self._window = trio.Semaphore(max(1, window))
        self._state = state
        self._submit = submit
        # ``None``: a wake-up, there are requests to sign again (``_again``)
        self._send, self._receive = trio.open_memory_channel[TxRequest | None](10_000)
        #: Requests signed before and put back (dropped behind a gap, renumbered), each
        #: with the order it was first taken in: signed before any new one, in that order.
        self._again: list[tuple[int, TxRequest]] = []
        #: Claims signed and not resolved (applied, refused, dropped or expired), by id.
        self._claims: dict[bytes, Pending] = {}
        self._taken = 0  # requests taken so far (the next one's ``order``)
        #: Set while the numbers above it are given out again (``_renumber``).
        self._renumber_from: int | None = None
        self._renumbered = trio.Event()  # set (and replaced) when a renumbering ends
        #: Sequence numbers of submissions on the wire (a number once per submission).
        self._sending: list[int] = []
        self._answered = trio.Event()  # set (and replaced) when one of them is answered
        self._next_seq: int | None = None
        self._pending: dict[int, Pending] = {}  # by sequence number
        #: Sequence numbers of submissions waiting for their first answer.
        self._out: set[int] = set()
        self._nursery: trio.Nursery | None = None
        self.head = head if head is not None else (lambda: self._state().height)
        self._retry_s = retry_s
        self.submitted = 0
        self.rejected = 0
        self.dropped_reports = 0
        self.lost = 0
        #: Submissions whose outcome was unknown (a timeout, no coordinator) at first.
        self.unknown = 0
        #: Submissions refused at first for the gap before them (they overtook one of ours).
        self.overtaken = 0
        #: Pending transactions sent again because a coordinator (re)connected.
        self.resent = 0
        self._resending = False
        #: Requests that waited for the chain to take earlier ones (backpressure).
        self.held_back = 0
        #: Gaps closed by signing the transactions after them again (no filler paid).
        self.renumberings = 0
        self._chain_moved = trio.Event()
        #: Set (and replaced) when a transaction of ours is admitted.
        self._admitted = trio.Event()
        #: The height of the last probe (``_probe``), and how many there were.
        self._probed = 0
        self.probes = 0

    def put(self, request: TxRequest) -> None:
        try:
            self._send.send_nowait(request)
        except trio.WouldBlock:
            log.error("transaction queue full; dropping a %s", request.kind)
            self._rejected(request, "the transaction queue is full")

    def reserve(
        self, seq: int, expiry: int, raw: bytes = b"", request: TxRequest | None = None
    ) -> None:
        """A transaction of ours with ``seq`` may be in the coordinator's mempool (signed
        before a restart): take later sequence numbers until the chain resolves it. Its
        signed bytes (``raw``, when kept) are sent again as the queue starts (``run``):
        signed but killed before it was sent, it held every later number of ours until its
        expiry, 30 blocks (review round 61, R61-3). With its bytes it is known by its id,
        so a coordinator's drop report reaches ``request`` (what it was made for: told
        why, or signed again when dropped behind another), as for any transaction; kept
        with no id, the report was ignored and the numbers after it waited for the probe
        (review round 62, F3). (A claim's, unsequenced, holds none.)"""
        if seq == ledger.UNSEQUENCED:
            return
        state = self._state()
        if seq < state.next_seq(self.me) or seq in self._pending:
            return
        self._next_seq = max(self._next_seq or 0, seq + 1)
        tx_id = content_hash(raw) if raw else b""
        self._pending[seq] = Pending(
            expiry, tx_id, request if raw else None, raw, unknown=True, since=state.height
        )

    def on_block(self) -> None:
        """Forget applied transactions. A pending one past its expiry left a gap: when
        transactions after it can still land (pending or being submitted), each such gap is
        filled; otherwise the sequence is reset from the ledger."""
        self._chain_moved.set()
        self._chain_moved = trio.Event()
        state = self._state()
        for claim in list(self._claims.values()):
            self._claim_decided(claim, state)
        self._probe(state)
        applied = state.next_seq(self.me)
        self._pending = {s: p for s, p in self._pending.items() if s >= applied}
        self._fill_hole_at(applied)
        expired = sorted(s for s, p in self._pending.items() if p.expiry < state.height)
        if not expired:
            return
        self.lost += len(expired)
        for seq in expired:
            del self._pending[seq]
        if self._nursery is not None and any(s > expired[0] for s in [*self._pending, *self._out]):
            log.warning("%d transactions expired unapplied; filling their gaps", len(expired))
            if not self._can_pay_filler():
                self._start_renumber(expired[0])
                return
            for seq in expired:
                self._start_fill(seq)
            return
        self.lost += len(self._pending)
        log.warning("%d transactions were dropped by the ledger; resyncing", len(expired))
        self._pending.clear()
        self._next_seq = applied

    def _probe(self, state: ledger.State) -> None:
        """Send our pending transactions again when one of them has waited ``PROBE_BLOCKS``
        blocks: the coordinator's drop reports are best effort (strangers' silent keys can
        hold every place it has for them: review round 13, R13-4), and without one a
        transaction refused in a block, and those behind it, would wait for their expiry
        (30 blocks). Sent again, one it refused is answered ``refused when a block was
        made`` (taken as its drop report), one it holds ``already in the mempool``."""
        if state.height - self._probed < PROBE_BLOCKS:
            return
        waiting = [*self._pending.values(), *self._claims.values()]
        if any(p.raw and state.height - p.since >= PROBE_BLOCKS for p in waiting):
            self._probed = state.height
            self.probes += 1
            self.resend_pending()

    def _fill_hole_at(self, applied: int) -> None:
        """The chain's next sequence number of ours is held by nothing we know of, while
        later ones are out: a transaction signed at that number was lost before it was
        sent (the daemon was killed in between; the intents kept only the later ones). Its
        expiry is unknown, so no expiry will ever reveal the gap, and everything after it
        would wait and expire in turn, for good: fill it now."""
        if self._nursery is None or applied in self._pending or applied in self._out:
            return
        if self._renumber_from is not None:
            return  # the numbers from there on are being given out again
        if not any(s > applied for s in [*self._pending, *self._out]):
            return
        log.warning("sequence %d is held by no transaction of ours; filling it", applied)
        self._close_gap(applied)

    def dropped(self, tx_id: bytes, seq: int, reason: str) -> None:
        """The coordinator dropped our transaction ``seq`` from its mempool: report it to
        its request and fill the gap, so that the ones after it are not held back (a
        claim's leaves none)."""
        if seq == ledger.UNSEQUENCED:
            claim = self._claims.pop(tx_id, None)
            if claim is not None and claim.request is not None:
                self.dropped_reports += 1
                self._rejected(claim.request, f"dropped from the block: {reason}")
            return
        pending = self._pending.get(seq)
        if pending is None or pending.tx_id != tx_id:
            return  # not ours to act on (stale, or already replaced)
        del self._pending[seq]
        self.dropped_reports += 1
        if pending.request is None:
            # Nothing else would ever take ``seq`` (it left ``_pending``): the transactions
            # after it would wait behind the gap and expire in turn, for good under steady
            # traffic. Sign a new filler, with a fresh expiry.
            # (An account that cannot pay for it renumbers instead: ``_close_gap``.)
            log.warning("gap filler %d dropped too (%s); filling it again", seq, reason)
            if self._needs_filler(seq) and self._nursery is not None:
                self._close_gap(seq)
            return
        behind = reason.startswith(ledger.DROPPED_BEHIND)
        if behind:  # it did nothing wrong
            self._put_back(pending.order, pending.request)  # after the gap is closed
        else:
            self._rejected(pending.request, f"dropped from the block: {reason}")
        if self._renumber_from is not None and seq > self._renumber_from:
            return  # above a gap being renumbered: its number is given out again
        if self._needs_filler(seq) and self._nursery is not None:
            above = [p for s, p in self._pending.items() if s > seq]
            if not behind and not any(p.unknown for p in above):
                # The coordinator dropped every later one of ours with it: sign them again
                # from this number on, rather than pay a filler for it and for each of
                # theirs (one refusal with 20 behind it paid 40 fees for 20 transfers:
                # review round 15, R15-7)
                self._start_renumber(seq)
            else:
                self._close_gap(seq)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery, self._receive:
            self._nursery = nursery
            self.resend_pending()  # what a previous run signed and kept (``reserve``)
            new: TxRequest | None = None  # taken from the channel, not signed yet
            while True:
                if new is not None and isinstance(new.payload, ledger.Claim):
                    nursery.start_soon(self._claim, new)  # no sequence number: on its own
                    new = None
                if new is None and not self._again:
                    new = await self._receive.receive()  # None: woken for ``_again``
                    continue
                await self._window.acquire()
                await self._room_ahead()
                while self._renumber_from is not None:
                    await self._renumbered.wait()
                if self._again:  # signed before: they go first
                    order, request = self._again.pop(0)
                    why = doomed(request.payload, self._state())
                    if why:  # it could only be refused now
                        self._window.release()
                        self._rejected(request, why)
                        continue
                elif new is not None:
                    request, new, order = new, None, self._taken
                    self._taken += 1
                else:  # pragma: no cover (only this loop takes from either)
                    self._window.release()
                    continue
                seq, expiry = self._take_seq()
                self._out.add(seq)  # taken: no hole to fill there (``_one`` releases it)
                nursery.start_soon(self._one, request, seq, expiry, order)

    def _put_back(self, order: int, request: TxRequest) -> None:
        """Sign ``request`` again, before any request not signed yet, in the order the
        requests were first taken. Its request is told (its old number is void: a filler
        may take it before it is signed again)."""
        if request.on_put_back is not None:
            request.on_put_back()
        bisect.insort(self._again, (order, request), key=lambda item: item[0])
        with contextlib.suppress(trio.WouldBlock):  # full of requests: it is not waiting
            self._send.send_nowait(None)  # wake the loop if it waits for a new request

    async def _room_ahead(self) -> None:
        """Wait until the next number is less than ``MAX_AHEAD`` ahead of the chain's."""
        if self._ahead() < ledger.MAX_AHEAD:
            return
        self.held_back += 1
        while self._ahead() >= ledger.MAX_AHEAD:
            await self._chain_moved.wait()

    def _ahead(self) -> int:
        return (self._next_seq or 0) - self._state().next_seq(self.me)

    def _take_seq(self) -> tuple[int, int]:
        state = self._state()
        seq = max(self._next_seq or 0, state.next_seq(self.me))
        while seq in self._pending:  # kept by a transaction whose outcome is unknown
            seq += 1
        self._next_seq = seq + 1
        return seq, self._expiry()

    def fee(self, payload: ledger.Payload | None = None) -> int:
        """The fee a transaction of ours pays: the setting, at least the chain's minimum
        (which a coordinator's mint or slash does not owe); a claim's, that times its
        signature checks (3), up to a tenth of its payout (the ledger takes a claim's fee
        out of it) unless the flat fee is more: blocks take transactions by fee per share
        of their budget, and at one flat fee any sender's transfers came before our claims,
        which must land by their receipt's ``claim_by``."""
        if isinstance(payload, ledger.COORDINATOR_KINDS):
            return self._fee_setting
        fee = max(self._fee_setting, self._state().genesis.min_fee)
        if isinstance(payload, ledger.Claim):
            scaled = fee * ledger.signature_checks(payload)
            return max(fee, min(scaled, claim_price(payload) // 10))
        return fee

    def _expiry(self) -> int:
        height = self._state().height
        return max(height, min(self.head(), height + MAX_HEAD_LEAD)) + TX_LIFETIME_BLOCKS

    async def _one(self, request: TxRequest, seq: int, expiry: int, order: int = 0) -> None:
        try:
            for attempt in range(2):
                fee = max(request.fee, self.fee(request.payload))
                signed = request.sign(self._key, self._chain_id, seq, expiry, fee)
                if request.on_signed is not None:
                    request.on_signed(seq, signed.id, signed.message.expiry_height, signed.raw)
                sent = seq
                self._out.add(sent)
                try:
                    await self._submit_in_turn(signed.raw, seq)
                except _Held:  # never sent: signed again with the numbers above the gap
                    self._out.discard(sent)
                    self._put_back(order, request)
                    return
                except ledger.SequenceError as exc:
                    if attempt == 0 and seq < self._state().next_seq(self.me):
                        seq, expiry = self._take_seq()  # ours is stale (taken by the chain)
                        continue
                    await self._refused(request, str(exc), seq, expiry)
                    return
                except ledger.TransactionRejected as exc:  # the coordinator said no
                    await self._refused(request, str(exc), seq, expiry)
                    return
                except Exception as exc:  # a timeout, no coordinator: it may have arrived
                    self._out.discard(sent)
                    overtook = isinstance(exc, _Overtook)  # answered: not admitted
                    if overtook:
                        self.overtaken += 1
                    else:
                        self.unknown += 1
                    log.info(
                        "%s (seq %d) outcome unknown (%s); trying again", request.kind, seq, exc
                    )
                    self._pending[seq] = Pending(
                        signed.message.expiry_height,
                        signed.id,
                        request,
                        signed.raw,
                        order,
                        unknown=not overtook,
                        since=self._state().height,
                    )
                    await self._until_known(request, signed, seq)
                    return
                finally:
                    self._out.discard(sent)
                self.submitted += 1
                self._pending[seq] = Pending(
                    signed.message.expiry_height,
                    signed.id,
                    request,
                    signed.raw,
                    order,
                    unknown=self._above_gap(seq),
                    since=self._state().height,
                )
                return
        finally:
            self._window.release()
            self._poke()

    def _above_gap(self, seq: int) -> bool:
        """Whether ``seq`` is above a gap being renumbered. One of ours admitted there
        should not be (no number past a hole is admitted); should it happen all the same,
        it keeps its number (counted as unknown) rather than be signed twice."""
        return self._renumber_from is not None and seq > self._renumber_from

    async def _submit_tracked(self, raw: bytes, seq: int) -> bytes:
        """Submit, counting the submission as on the wire until it is answered (a
        renumbering waits for those above its gap); raises :class:`_Held` instead while
        the numbers from below ``seq`` are being given out again."""
        if self._above_gap(seq):
            raise _Held
        self._sending.append(seq)
        try:
            return await self._submit(raw)
        finally:
            self._sending.remove(seq)
            self._poke()

    def _poke(self) -> None:
        self._answered.set()
        self._answered = trio.Event()

    async def _submit_in_turn(self, raw: bytes, seq: int) -> bytes:
        """Submit. A refusal for a sequence gap means it overtook one of ours on the way:
        it is sent again at once if one of ours was admitted meanwhile, else raises
        :class:`_Overtook` (as good as unknown: ``_until_known`` sends it again as soon as
        one of ours is admitted)."""
        while True:
            admitted = self._admitted
            try:
                tx_id = await self._submit_tracked(raw, seq)
            except ledger.TransactionRejected as exc:
                if ledger.SequenceGap.TEXT not in str(exc):
                    raise
                if admitted.is_set():
                    continue  # the one before it may be in now
                raise _Overtook(str(exc)) from None
            self._admitted.set()
            self._admitted = trio.Event()
            return tx_id

    def _still_open(self, seq: int, signed: Signed[Transaction]) -> bool:
        """Whether ``signed`` (pending under ``seq``) can still be admitted or applied."""
        pending = self._pending.get(seq)
        state = self._state()
        return (
            pending is not None
            and pending.tx_id == signed.id
            and state.next_seq(self.me) <= seq
            and state.height <= signed.message.expiry_height
        )

    def _mark(self, seq: int, signed: Signed[Transaction], *, unknown: bool) -> None:
        """Note on ``signed``'s pending entry that its outcome is unknown (or, admitted
        above a gap being renumbered, that it keeps its number all the same)."""
        pending = self._pending.get(seq)
        if unknown and pending is not None and pending.tx_id == signed.id:
            self._pending[seq] = replace(pending, unknown=True)

    async def _until_known(
        self, request: TxRequest | None, signed: Signed[Transaction], seq: int
    ) -> None:
        """Submit the same bytes again, backing off, until the outcome is known (see the
        module's docstring); ``request`` None: a gap filler. The window's slot stays taken
        meanwhile: while no coordinator answers, at most ``window`` transactions are out
        and the rest wait their turn."""
        wait, longest = self._retry_s
        while True:
            with trio.move_on_after(wait):  # or until one of ours is admitted (overtaken)
                await self._admitted.wait()
            wait = min(longest, wait * 2)
            if not self._still_open(seq, signed):
                return  # the chain (or a drop report) decides; on_block resyncs a gap
            try:
                await self._submit_in_turn(signed.raw, seq)
            except _Held:  # above a gap being renumbered: it decides (``_still_open``)
                while self._renumber_from is not None:
                    await self._renumbered.wait()
                continue
            except _Overtook as exc:
                log.debug("seq %d still behind a gap: %s", seq, exc)
                continue
            except ledger.TransactionRejected as exc:
                text = str(exc)
                if isinstance(exc, ledger.SequenceError) or "already used" in text:
                    return  # the chain took the sequence number: ours or not, it decides
                if "already in the mempool" in text or "already pending" in text:
                    self._mark(seq, signed, unknown=self._above_gap(seq))
                    break  # the first submission did arrive
                pending = self._pending.get(seq)
                if pending is None or pending.tx_id != signed.id:
                    # Expired meanwhile and the number given to a gap filler (on_block):
                    # the outcome was settled there; this refusal is no longer ours.
                    return
                del self._pending[seq]
                if request is None:
                    log.warning("could not fill sequence gap %d: %s", seq, text)
                    if self._needs_filler(seq):
                        self._start_renumber(seq)
                    return
                await self._refused(request, text, seq, signed.message.expiry_height)
                return
            except Exception as exc:
                self._mark(seq, signed, unknown=True)
                log.debug("seq %d still unknown: %s", seq, exc)
                continue
            self._mark(seq, signed, unknown=self._above_gap(seq))
            break
        if request is not None:
            self.submitted += 1

    async def _refused(self, request: TxRequest, reason: str, seq: int, expiry: int) -> None:
        """Report the refusal; close the gap its unused sequence number leaves."""
        self._rejected(request, reason)
        if self._needs_filler(seq):
            self._close_gap(seq)

    # closing a gap: a filler, or the numbers above it given out again (``_gaps``)
    _needs_filler = _gaps.needs_filler
    _can_pay_filler = _gaps.can_pay_filler
    _close_gap = _gaps.close_gap
    _start_fill = _gaps.start_fill
    _fill = _gaps.fill
    _start_renumber = _gaps.start_renumber
    _renumber = _gaps.renumber

    # sending pending transactions again after a coordinator (re)connected (``_txresend``)
    resend_pending = _txresend.resend_pending
    _resend = _txresend.resend

    # claims: no sequence number, each on its own (``_txclaims``)
    _claim = _txclaims.claim
    _claim_until_known = _txclaims.until_known
    _claim_refused = _txclaims.refused
    _claim_decided = _txclaims.decided

    def _rejected(self, request: TxRequest, reason: str) -> None:
        self.rejected += 1
        log.warning("transaction %s refused: %s", request.kind, reason)
        if request.on_reject is not None:
            request.on_reject(reason)
