"""What a node is still owed, or still owes, after a restart: its machines start empty.

- A provider with a Receipt can claim its pay if the requester never settles. The machine
  holds the receipt in memory only, so the daemon keeps each one on disk (``receipts/`` in
  the data directory, one small file per job, written atomically) from the machine's
  ``receipted`` notification until the work's ``closed``. After a restart the kept receipts
  are claimed by the daemon itself, with the key derived again: a sealed one at once, a
  plain one in the claim window and after the job's deadline.
- A requester's open escrows of jobs it no longer knows (it restarted mid-job), or knows
  as closed (its lock was taken for failed), are refunded at their expiry height; a
  provider with a receipt claims its share first.
- Every money transaction (lock, settle, refund, claim) is an intent kept in
  ``intents.sqlite3`` in the data directory until the chain shows it applied or
  impossible (:class:`MoneyIntents`; the rules are :mod:`node.ledger._intents`'s).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

import ledger
import protocol
import scheduler
from protocol import Award, Receipt, Signed

from ..ledger import Intent, IntentBook, IntentStore, Resolved, Submit, TxRequest
from ..ledger._intents import Action, Kind
from ._attests import ATTESTS_FILE, AttestStore

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger(__name__)

#: A kept receipt file is at most this large (two signed messages and a deadline).
MAX_FILE_BYTES = 8192
#: How often (in blocks) a requester looks for open escrows of its own that it forgot.
ORPHAN_SCAN_BLOCKS = 10
#: The file of a node's money intents, in its data directory.
INTENTS_FILE = "intents.sqlite3"
#: A kept receipt whose escrow is not in the state this long after the job's deadline is
#: dropped: the escrow closed and left the state (specs/ledger.md, "Closed escrows leave
#: the state"), or never existed. Its claim window ended long before.
KEPT_RECEIPT_MAX_AGE_MS = 24 * 3600 * 1000


@dataclass(slots=True)
class KeptReceipt:
    """A receipt to claim with after a restart."""

    job_id: bytes
    award: Signed[Award]
    receipt: Signed[Receipt]
    deadline_ms: int
    claimed: bool = False


class ReceiptStore:
    """Receipts on disk, one file per job. ``directory=None`` keeps nothing (tests, or a
    node without a data directory)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def _path(self, job_id: bytes) -> Path:
        assert self.directory is not None
        return self.directory / f"{job_id.hex()}.receipt"

    def keep(self, award: Signed[Award], receipt: Signed[Receipt], deadline_ms: int) -> None:
        """Write atomically (temporary file, fsync, rename); failures are logged, never
        raised: the machine still holds the receipt while the daemon runs."""
        if self.directory is None:
            return
        job_id = award.message.job_id
        data = protocol.pack([award.raw, receipt.raw, deadline_ms])
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self.directory / f".{job_id.hex()}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(job_id))
        except OSError as exc:
            log.warning("could not keep the receipt of job %s: %s", job_id.hex()[:12], exc)

    def drop(self, job_id: bytes) -> None:
        if self.directory is None:
            return
        try:
            self._path(job_id).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove the receipt of job %s: %s", job_id.hex()[:12], exc)

    def load(self, chain_id: str, me: bytes) -> list[KeptReceipt]:
        """Every kept receipt that verifies (signatures, chain, it names us, award and
        receipt agree); a file that does not is renamed ``.bad`` and reported."""
        if self.directory is None or not self.directory.is_dir():
            return []
        kept: list[KeptReceipt] = []
        for path in sorted(self.directory.glob("*.receipt")):
            try:
                if path.stat().st_size > MAX_FILE_BYTES:
                    raise protocol.RemoteProtocolError("the file is too large")
                award_raw, receipt_raw, deadline = protocol.unpack(path.read_bytes())
                if type(award_raw) is not bytes or type(receipt_raw) is not bytes:
                    raise protocol.RemoteProtocolError("not two signed messages")
                if type(deadline) is not int:
                    raise protocol.RemoteProtocolError("no deadline")
                award = protocol.decode(award_raw, chain_id, Award)
                receipt = protocol.decode(receipt_raw, chain_id, Receipt)
                a, r = award.message, receipt.message
                if (
                    a.provider != me
                    or r.provider != me
                    or a.job_id != r.job_id
                    or a.replica != r.replica
                    or a.requester != r.requester
                    or path.name != f"{a.job_id.hex()}.receipt"
                ):
                    raise protocol.RemoteProtocolError("award and receipt do not match")
            except (OSError, ValueError, protocol.ProtocolError) as exc:
                log.warning("ignoring kept receipt %s: %s", path.name, exc)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
                continue
            kept.append(KeptReceipt(a.job_id, award, receipt, deadline))
        return kept


class Recovery:
    """Keeps a provider's receipts on disk while they may be needed, claims with the ones
    kept before a restart, and refunds a requester's forgotten escrows at their expiry."""

    def __init__(self, node: Node, state_dir: Path | None) -> None:
        self._node = node
        self.receipts = ReceiptStore(state_dir / "receipts" if state_dir is not None else None)
        #: Receipt files to write or remove, in order, in a worker thread: a write waits
        #: for fsync, which must not stall the event loop.
        self._disk_send, self._disk_recv = trio.open_memory_channel[
            tuple[Callable[[], None], trio.Event | None]
        ](math.inf)
        #: Receipts whose write is queued or under way, by job: their key waits for it.
        self._unwritten: dict[bytes, trio.Event] = {}
        #: Receipts kept from before a restart, claimed by the daemon itself.
        self._kept: dict[bytes, KeptReceipt] = {}
        #: Open escrows of ours that the requester machine does not know (it restarted),
        #: and whether their refund was submitted.
        self._orphans: dict[bytes, bool] = {}
        self._next_orphan_scan = 0
        self.intents = MoneyIntents(node, state_dir / INTENTS_FILE if state_dir else None)
        self.attests = AttestStore(state_dir / ATTESTS_FILE if state_dir else None)

    def load(self) -> None:
        """Load the receipts a previous run of this node kept, to claim with (open escrows
        it left are found block by block)."""
        node = self._node
        self.intents.load()
        attests = self.attests.load(node.chain_id)
        if attests:
            node.effects.restore(attests)
            log.info("%d attestations resumed from before a restart", len(attests))
        if node.provider is not None:
            self._kept = {k.job_id: k for k in self.receipts.load(node.chain_id, node.me)}
            if self._kept:
                log.info("%d receipts kept from before a restart", len(self._kept))

    async def write_receipts(self) -> None:
        """Carry out the receipt writes and removals one after another, off the loop."""
        async for op, written in self._disk_recv:
            try:
                await trio.to_thread.run_sync(op)
            finally:
                if written is not None:
                    written.set()

    def keep_receipt(self, effect: scheduler.NotifyUser) -> None:
        """Keep a receipt on disk while it may be needed for a claim (until closed)."""
        provider = self._node.provider
        if effect.event == "closed":
            self._drop_later(effect.job_id)
            return
        if effect.event != "receipted" or provider is None:
            return
        work = provider.work.get(effect.job_id)
        if work is not None and work.award is not None and work.receipt is not None:
            keep = functools.partial(
                self.receipts.keep, work.award, work.receipt, work.spec.deadline_ms
            )
            written = self._unwritten[effect.job_id] = trio.Event()
            self._disk_send.send_nowait((keep, written))

    async def receipt_written(self, job_id: bytes) -> None:
        """Return once the job's receipt, if one is being kept, is on disk (or its write
        failed, which was logged: the machine still holds it while the daemon runs)."""
        written = self._unwritten.get(job_id)
        if written is not None:
            await written.wait()

    def receipt_unwritten(self, job_id: bytes) -> bool:
        """Whether the job's receipt is still on its way to disk (an entry goes when its
        work closes: ``_drop_later``)."""
        written = self._unwritten.get(job_id)
        return written is not None and not written.is_set()

    def _drop_later(self, job_id: bytes) -> None:
        self._unwritten.pop(job_id, None)
        self._disk_send.send_nowait((functools.partial(self.receipts.drop, job_id), None))

    def on_block(self, state: ledger.State, now: int) -> None:
        self.intents.on_block(state)
        self._node.effects.restored_block(state)
        if self._node.requester is not None and state.height >= self._next_orphan_scan:
            self._find_orphans(state)
        if self._kept or self._orphans:
            self._claim_and_refund(state, now)

    def _find_orphans(self, state: ledger.State) -> None:
        """Open escrows of ours that the requester machine does not know (it restarted
        while they were open) or knows as closed (it took the lock for failed). Looked for
        every ``ORPHAN_SCAN_BLOCKS`` (the ledger may still be catching up after the
        restart). One whose refund intent gave up is refunded again."""
        node = self._node
        assert node.requester is not None
        known = node.requester.jobs
        found = [
            job_id
            for job_id, e in state.escrows()
            if e.owner == node.me
            and not e.is_done
            and (job_id not in known or known[job_id].phase == scheduler.JobPhase.CLOSED)
        ]
        for job_id in found:
            if job_id not in self._orphans:
                log.info("escrow of job %s is open and no job of ours holds it", job_id.hex()[:12])
                self._orphans[job_id] = False
            elif not self.intents.holds(job_id, "refund"):
                self._orphans[job_id] = False
        self._next_orphan_scan = state.height + ORPHAN_SCAN_BLOCKS

    def _claim_and_refund(self, state: ledger.State, now: int) -> None:
        """Claim with kept receipts; refund orphaned escrows at their expiry."""
        node = self._node
        for job_id, kept in list(self._kept.items()):
            e = state.escrow(job_id)
            if e is None and now < kept.deadline_ms + KEPT_RECEIPT_MAX_AGE_MS:
                continue  # not synced that far yet
            if (
                e is None
                or not e.claimable_by(node.me)
                or e.paid_to(node.me) > 0
                or node.me in e.claimed
                or state.height >= e.expiry_height
            ):
                del self._kept[job_id]
                self._drop_later(job_id)
                continue
            r = kept.receipt.message
            # Every claim publishes our key, derived again from our key (the output it
            # sealed is gone with the old process): a sealed receipt's at once, a plain
            # one's in the claim window (whether or not the job's deadline has passed: an
            # escrow expiring before it left the receipt unclaimed, round 71, F2).
            due = r.sealed or state.height >= e.claim_height
            if not kept.claimed and due:
                key = protocol.output_key(node.key, job_id, r.replica, r.output_commitment)
                kept.claimed = True
                claim = scheduler.ClaimWithReceipt(job_id, kept.award, kept.receipt, key)
                node.effects.execute("provider", [claim])
        for job_id, refunded in list(self._orphans.items()):
            e = state.escrow(job_id)
            if e is None or e.is_done:
                del self._orphans[job_id]
            elif not refunded and state.height >= e.expiry_height:
                self._orphans[job_id] = True
                node.effects.execute("requester", [scheduler.Refund(job_id)])


class MoneyIntents:
    """Drives the node's :class:`IntentBook`: the machines' Lock, Settle, Refund and Claim
    become intents, kept in SQLite (``path``; ``None``: in memory), signed and submitted
    through the transaction queue, and resolved block by block from the chain. A lock
    that cannot land any more is told to the requester machine (``escrow_failed``)."""

    def __init__(self, node: Node, path: Path | None) -> None:
        self._node = node
        self.store = IntentStore(path)
        self.book = IntentBook(node.me)
        #: Intents resolved applied, and resolved impossible, since the daemon started.
        self.applied = 0
        self.failed = 0

    def load(self) -> None:
        """Resume the intents a previous run kept: their signed transactions may still be in
        the coordinator's mempool, so the queue takes later sequence numbers."""
        kept = self.store.load()
        self.book = IntentBook(self._node.me, kept)
        for intent in kept:
            if intent.seq is not None:
                # what a drop report of it is told to, as for a submission of this run
                request = self._request(intent)
                self._node.txq.reserve(intent.seq, intent.tx_expiry, intent.raw, request)
        if kept:
            log.info("%d money transactions resumed from before a restart", len(kept))

    def holds(self, job_id: bytes, kind: Kind) -> bool:
        return (job_id, kind) in self.book.intents

    def add(self, payload: ledger.Payload, *, expiry_cap: int | None = None) -> None:
        intent = Intent.of(payload, self._node.ledger.state.height, expiry_cap)
        actions = self.book.add(intent)
        if actions:
            self.store.save(intent)
        self._carry_out(actions)

    def on_block(self, state: ledger.State) -> None:
        self._carry_out(self.book.on_block(state))

    def _carry_out(self, actions: list[Action]) -> None:
        node = self._node
        for action in actions:
            intent = action.intent
            if isinstance(action, Submit):
                self.store.save(intent)
                node.put_tx(self._request(intent))
                continue
            assert isinstance(action, Resolved)
            self.store.delete(intent.key)
            job = intent.job_id.hex()[:12]
            if action.applied:
                self.applied += 1
                log.debug("%s of job %s is in the ledger", intent.kind, job)
                continue
            self.failed += 1
            log.warning("%s of job %s cannot be made: %s", intent.kind, job, action.reason)
            if intent.kind == "lock" and node.requester is not None:
                effects = node.requester.escrow_failed(intent.job_id, action.reason, node.now_ms())
                node.effects.execute("requester", effects)
                node.job_closed(intent.job_id)  # nothing was locked: nothing left to close

    def _request(self, intent: Intent) -> TxRequest:
        """The transaction the queue makes for ``intent``, telling it what became of it."""
        return TxRequest(
            intent.decoded(),
            on_reject=functools.partial(self._refused, intent.key),
            expiry_cap=intent.expiry_cap,
            on_signed=functools.partial(self._signed, intent.key),
            fee=self.book.fee_for(intent, self._node.txq.fee()),
            on_put_back=functools.partial(self._put_back, intent.key),
        )

    def _put_back(self, key: tuple[bytes, Kind]) -> None:
        intent = self.book.put_back(key)
        if intent is not None:
            self.store.save(intent)

    def _signed(
        self, key: tuple[bytes, Kind], seq: int, tx_id: bytes, expiry: int, raw: bytes
    ) -> None:
        intent = self.book.signed(key, seq, expiry, raw)
        if intent is not None:
            self.store.save(intent)

    def _refused(self, key: tuple[bytes, Kind], reason: str) -> None:
        actions = self.book.refused(key, reason, self._node.ledger.state.height)
        intent = self.book.intents.get(key)
        if intent is not None:
            self.store.save(intent)
        self._carry_out(actions)
