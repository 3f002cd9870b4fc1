"""A coordinator's blocks: the producer's tick, each block written before it is announced,
and the notices to senders whose transactions were dropped."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

import ledger
import protocol

from ..net import MAX_PUBSUB_BYTES, NetworkError, PeerKey
from ._wire import DROPPED_PROTOCOL, MAX_DROPS_PER_NOTICE, blocks_topic

if TYPE_CHECKING:
    from ._service import LedgerService

log = logging.getLogger(__name__)

#: How long a coordinator tries to tell a sender of its dropped transactions.
DROPPED_NOTICE_TIMEOUT_S = 5.0
#: Notices on their way at once (more are not sent: those senders find the gap at the
#: expiry, as without a notice).
MAX_NOTICES_IN_FLIGHT = 64
#: A sender that did not take its notice is sent none for this long (``_unresponsive``),
#: and so many such senders are remembered (the latest).
UNRESPONSIVE_S = 60.0
MAX_UNRESPONSIVE = 4_096


class Production:
    """Drives a coordinator's :class:`ledger.Producer` (the service's ``producer``): keeps
    a block the store refused to write it again, and counts the notices on their way."""

    def __init__(self, service: LedgerService) -> None:
        self._service = service
        self._notices_in_flight = 0
        #: Senders whose last notice went unanswered, until when none is sent to them: a
        #: few peers that never answer held all ``MAX_NOTICES_IN_FLIGHT`` places, every
        #: other sender's notices were skipped, and one refusal stalled an honest node
        #: for a transaction's lifetime (review round 12, R12-4).
        self._unresponsive: dict[PeerKey, float] = {}
        #: A block this coordinator produced that the store refused (kept to retry).
        self._unstored: ledger.Commit | None = None

    async def tick(self, now: int) -> list[ledger.Effect]:
        """One producer tick under the service's lock: its blocks written, adopted and
        announced, its drops told; returns the other effects (the next timer)."""
        service = self._service
        assert service.producer is not None
        async with service.lock:
            # A block of ours the store refused (disk full) is written, then announced,
            # before the producer makes the next: never announced unwritten.
            if self._unstored is not None and not await self._commit_own(self._unstored):
                return [ledger.SetTimer(now + max(100, min(service.interval_ms, 1000)))]
            effects = service.producer.tick(now)
            for fault in service.producer.take_faults():
                # A rule applied wrongly by this implementation: every replica would have
                # refused the block, so the transaction was left out (review round 70, F2).
                log.error("LEDGER FAULT (a bug; please report it): %s", fault)
            drops: dict[PeerKey, list[ledger.TxDropped]] = {}
            for e in effects:
                if isinstance(e, ledger.Commit):
                    await self._commit_own(e)
                elif isinstance(e, ledger.TxDropped):
                    drops.setdefault(e.sender, []).append(e)
            for sender, dropped in drops.items():
                self._tell_dropped(sender, dropped[:MAX_DROPS_PER_NOTICE])
        return [e for e in effects if not isinstance(e, ledger.Commit | ledger.TxDropped)]

    async def _commit_own(self, e: ledger.Commit) -> bool:
        """Write, adopt and announce a block this coordinator produced; ``False`` (kept to
        retry) if the store refused it."""
        service = self._service
        if not await service.commit(e):
            self._unstored = e
            return False
        self._unstored = None
        service.replica.adopt(e.block.raw, e.state)
        service.counters.blocks_produced += 1
        await self._announce(e.block)
        return True

    def _tell_dropped(self, sender: PeerKey, drops: list[ledger.TxDropped]) -> None:
        """Tell the sender (one notice for the block); best effort."""
        service = self._service
        for d in drops:
            log.info("transaction %d of %s dropped: %s", d.seq, protocol.peer_id(sender), d.reason)
        if sender == service.net.local_peer:
            for d in drops:
                service.notify_dropped(d.tx_id, d.seq, d.reason)
        elif (
            service.nursery is not None
            and self._notices_in_flight < MAX_NOTICES_IN_FLIGHT
            and self._unresponsive.get(sender, 0.0) <= trio.current_time()
        ):
            self._unresponsive.pop(sender, None)
            self._notices_in_flight += 1
            notice = protocol.pack([[d.tx_id, d.seq, d.reason[:1000]] for d in drops])
            service.nursery.start_soon(self._send_dropped, sender, notice)

    async def _send_dropped(self, sender: PeerKey, notice: bytes) -> None:
        """A sender that does not hear of it finds the gap at the expiry."""
        try:
            await self._service.net.request(
                sender, DROPPED_PROTOCOL, notice, timeout=DROPPED_NOTICE_TIMEOUT_S
            )
        except NetworkError as exc:
            log.info("could not tell %s of dropped transactions: %s", protocol.peer_id(sender), exc)
            while len(self._unresponsive) >= MAX_UNRESPONSIVE:
                del self._unresponsive[next(iter(self._unresponsive))]
            self._unresponsive[sender] = trio.current_time() + UNRESPONSIVE_S
        finally:
            self._notices_in_flight -= 1

    async def _announce(self, block: protocol.Signed[ledger.Block]) -> None:
        service = self._service
        data = protocol.pack([block.message.height, block.raw])
        if len(data) > MAX_PUBSUB_BYTES:
            data = protocol.pack([block.message.height, b""])
        try:
            await service.net.publish(blocks_topic(service.genesis.chain_id), data)
        except NetworkError as exc:
            log.warning("could not announce block %d: %s", block.message.height, exc)
