"""Carrying out the marketplace machines' effects: the one place where what a machine
asked for becomes I/O (a message, a timer, a ledger transaction, a sandbox run, an event
for the user). Effects with I/O run as tasks, so a machine call never waits on the network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal, assert_never

import ledger
import protocol
import scheduler

from ._codec import outputs_from_bytes

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger(__name__)

Machine = Literal["requester", "provider"]
"""Which of the node's marketplace machines an effect came from (and its timers go to)."""


class EffectRunner:
    """Carries out effects for one node."""

    def __init__(self, node: Node) -> None:
        self._node = node
        #: Attestations wait for their job's escrow to close (the ledger takes them only
        #: about a party it paid, by the settle or by a claim, once it is closed).
        self._pending_attests: dict[bytes, list[scheduler.Attest]] = {}
        #: Jobs of attestations read back after a restart (``restore``).
        self._restored: set[bytes] = set()
        #: Called with every effect once it was carried out (the dashboard's activity
        #: record); an observer must be quick.
        self.observers: list[Callable[[Machine, scheduler.Effect], None]] = []

    def execute(self, machine: Machine, effects: Iterable[scheduler.Effect]) -> None:
        for effect in effects:
            try:
                self._carry_out(machine, effect)
            except Exception:  # a driver bug must not take the node down
                log.exception("carrying out %s failed", type(effect).__name__)
            for observe in self.observers:
                try:
                    observe(machine, effect)
                except Exception:  # nor an observer's
                    log.exception("observing %s failed", type(effect).__name__)

    def forget(self, job_id: bytes) -> None:
        """The job's escrow closed (or was never locked): its attestations go now, about
        the providers it paid, by the settle or by their claims (``escrow.paid``); a
        verdict against a provider it did not pay goes to a coordinator as evidence (its
        signed Result with the paid majority's: what a slash must carry) only when the
        requester asked for a slash (``Attest.report``: a known answer contradicted, or
        ``slash_outvoted``); otherwise it is dropped."""
        state = self._node.ledger.state
        attests = self._pending_attests.pop(job_id, [])
        escrow = state.escrow(job_id) if attests else None
        if escrow is not None:
            # Settled, a provider holding our receipt may still claim its reserved price:
            # only then can it be attested about. What concerns it waits (the escrow's
            # final block at the latest); the rest goes now.
            req = self._node.requester
            job = req.jobs.get(job_id) if req is not None else None
            later = scheduler.still_payable(job, escrow, state.height)
            if later:
                self._pending_attests[job_id] = [a for a in attests if a.subject in later]
                self._restored.add(job_id)
                attests = [a for a in attests if a.subject not in later]
        if attests and job_id not in self._pending_attests:
            self._node.recovery.attests.drop(job_id)
        paid = {p for p, _ in escrow.paid} if escrow is not None and not escrow.is_open else set()
        done: set[bytes] = set()
        for effect in attests:
            if effect.subject in paid:
                if effect.subject not in done:  # one attestation per party and job
                    done.add(effect.subject)
                    attest = ledger.Attest(effect.job_id, effect.subject, int(effect.positive))
                    self._node.submit_tx(attest)
            elif (
                effect.report
                and not effect.positive
                and any(e.signer == effect.subject for e in effect.evidence)
            ):
                # the offender's Results and the paid majority's only: the ledger takes no
                # evidence naming a winner the escrow did not pay (one that never claimed
                # after a late finalise: review round 11, R11-3)
                evidence = [
                    e for e in effect.evidence if e.signer == effect.subject or e.signer in paid
                ]
                if sum(e.signer in paid for e in evidence) >= ledger.MIN_MAJORITY:
                    self._node.reports.report(effect.subject, [e.raw for e in evidence])

    def restore(self, attests: list[scheduler.Attest]) -> None:
        """Attestations a previous run kept, waiting for their escrow again."""
        for effect in attests:
            self._pending_attests.setdefault(effect.job_id, []).append(effect)
            self._restored.add(effect.job_id)

    def restored_block(self, state: ledger.State) -> None:
        """Restored attestations whose escrow closed (or left the state: too late to
        attest) go now; those of a job the requester machine still holds wait for it."""
        requester = self._node.requester
        for job_id in list(self._restored):
            job = requester.jobs.get(job_id) if requester is not None else None
            if job is not None and job.phase != scheduler.JobPhase.CLOSED:
                continue  # its own close comes through the machine (``job_closed``)
            escrow = state.escrow(job_id)
            if escrow is None or not escrow.is_open:
                self._restored.discard(job_id)
                self.forget(job_id)  # what still waits for a claim is held again

    def _carry_out(self, machine: Machine, effect: scheduler.Effect) -> None:
        node = self._node
        match effect:
            case scheduler.SetTimer():
                node.timers.set((machine, effect.key), effect.at_ms)
            case scheduler.CancelTimer():
                node.timers.cancel((machine, effect.key))
            case scheduler.Send():
                message = effect.message.message
                if isinstance(message, protocol.Unseal) and node.recovery.receipt_unwritten(
                    message.job_id
                ):
                    node.spawn(self._unseal_once_kept, effect)
                else:
                    # Answers to announcements have a budget of their own, and a NoBid is
                    # worth no lookup: a peer's announcement names whom we answer (review
                    # rounds 63, G1, and 65, H1).
                    answer = isinstance(message, (protocol.Bid, protocol.NoBid))
                    dial = not isinstance(message, protocol.NoBid)
                    node.market.send(effect.peer, effect.message.raw, answer=answer, dial=dial)
            case scheduler.Publish():
                node.spawn(node.market.publish, effect.topic, effect.message.raw)
            case scheduler.Deliver():
                node.market.deliver(
                    effect.peer, effect.result.raw, effect.output, resend=effect.resend
                )
            case scheduler.Misbehaved():
                node.conduct.misbehaved(effect.peer, effect.reason)
            case scheduler.LockEscrow():
                self._lock(effect)
            case scheduler.ReservePlace():
                self._reserve(effect)
            case scheduler.Settle():
                self._settle(effect)
            case scheduler.Refund():
                node.recovery.intents.add(ledger.Refund(effect.job_id))
            case scheduler.ClaimWithReceipt():
                claim = ledger.Claim(
                    effect.job_id, effect.award.raw, effect.receipt.raw, effect.key
                )
                node.recovery.intents.add(claim)
            case scheduler.Attest():
                # Once the escrow is closed (``forget``): before, a claim may still pay.
                # Kept on disk meanwhile: a restart forgot them (round 61, R61-4).
                self._pending_attests.setdefault(effect.job_id, []).append(effect)
                node.recovery.attests.save(effect)
            case scheduler.Slash():
                # Reported with its attestation (``report`` set) once the escrow is closed
                # (``forget``): the ledger checks the evidence against the settlement, and
                # a report sent earlier could outlast a coordinator's wait for the close.
                pass
            case scheduler.RunJob():
                assert node.runs is not None  # only a contributor's machine runs jobs
                node.runs.start(effect)
            case scheduler.AbortJob():
                if node.runs is not None:
                    node.runs.abort(effect.job_id)
            case scheduler.NotifyUser():
                self._notify(machine, effect)
            case scheduler.JobDone():
                self._job_done(effect)
            case _:
                assert_never(effect)

    async def _unseal_once_kept(self, effect: scheduler.Send) -> None:
        """A plain receipt's key leaves once the receipt is on disk: sent in the step that
        queued the write, a kill between the two left the requester our key and us no
        receipt to claim with after the restart (review round 61, R61-2)."""
        await self._node.recovery.receipt_written(effect.message.message.job_id)
        self._node.market.send(effect.peer, effect.message.raw)

    def _lock(self, effect: scheduler.LockEscrow) -> None:
        """An intent (as settle, refund and claim are): a lock whose submission timed out
        is not failed; the chain says whether it landed (``escrow_failed`` when it cannot
        any more, from :class:`~node.daemon._recovery.MoneyIntents`)."""
        lock = ledger.Lock(
            effect.job_id,
            effect.amount,
            effect.claim_height,
            effect.expiry_height,
            effect.max_per_payee,
            effect.max_payees,
            effect.spec,
        )
        self._node.recovery.intents.add(lock, expiry_cap=effect.expiry_height)

    def _reserve(self, effect: scheduler.ReservePlace) -> None:
        """Not an intent: lost (a restart, a refusal), or not sent (we cannot pay its fee
        yet: a newcomer), the machine waits a block or two for it at the Receipt and then
        claims, our key going with the claim's block."""
        node = self._node
        if node.ledger.state.balance(node.me) < node.txq.fee():
            return
        node.submit_tx(ledger.Reserve(effect.job_id, effect.award.raw))

    def _settle(self, effect: scheduler.Settle) -> None:
        payouts = effect.as_dict()
        bids = effect.bids()
        items = tuple(ledger.Payout(p, a, bids[p]) for p, a in sorted(payouts.items()))
        self._node.recovery.intents.add(ledger.Settle(effect.job_id, items))

    def _notify(self, machine: Machine, effect: scheduler.NotifyUser) -> None:
        node = self._node
        if machine == "provider":
            node.recovery.keep_receipt(effect)
            if effect.event == scheduler.UserEvent.PAID:
                node.earned += int(effect.detail)
        record = node.jobs.get(effect.job_id)
        if record is not None:
            record.events.append((node.now_ms(), effect.event, effect.detail))
            record.touch()
        log.info("job %s: %s %s", effect.job_id.hex()[:12], effect.event, effect.detail)

    def _job_done(self, effect: scheduler.JobDone) -> None:
        node = self._node
        node.metrics.jobs_done.labels(effect.status).inc()
        record = node.jobs.get(effect.job_id)
        if record is None:
            return  # a spot check's canary
        record.done = effect
        if effect.output is not None:
            data = effect.output.data
            try:
                outputs = outputs_from_bytes(data)
            except protocol.ProtocolError as exc:
                log.warning("verified output of %s unreadable: %s", effect.job_id.hex(), exc)
            else:
                # on disk first, so that memory may let it go (and a restart keeps it)
                record.output_on_disk = node.journal.save_output(effect.job_id, data)
                node.jobs.hold_output(record, outputs, len(data))
        record.events.append((node.now_ms(), "done", f"{effect.status} {effect.reason}".strip()))
        node.journal.changed(record)
        record.touch()
