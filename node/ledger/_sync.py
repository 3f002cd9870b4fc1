"""A replica following its sources: block announcements taken from peers (at a rate per
peer) and blocks fetched from them, each batch re-validated by :class:`ledger.Replica`.

Peers' bytes enter here twice: the announcements on the blocks topic (:meth:`Sync.listen`)
and the responses to block requests (:meth:`Sync.fetch`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import trio

import ledger
import protocol

from ..net import MAX_PUBSUB_BYTES, AnswerLost, NetworkError, PeerBusy, PeerKey
from ._wire import (
    BLOCKS_PROTOCOL,
    MAX_HEIGHT,
    MAX_PEERS_TRACKED,
    MAX_RESPONSE_BYTES,
)

if TYPE_CHECKING:
    from ._service import LedgerService

log = logging.getLogger(__name__)

#: A block fetch that takes longer than this fails (and counts against the peer).
FETCH_TIMEOUT_S = 5.0
#: Block fetches on their way at once from peers that are not sources: one per peer, at
#: most this many in all. A source's fetch (one per source) never waits for a slot.
MAX_FETCHES_IN_FLIGHT = 8
#: Batches one fetch may chain (a next batch is asked for only after one that committed).
MAX_FETCH_ROUNDS = 64
#: Block announcements taken from one peer: a bucket of this many, refilled at this rate
#: per second, or 3 per block interval if more; announcements beyond it are dropped and
#: counted (never blamed on the peer: see :meth:`Sync.take_announcement`).
ANNOUNCE_BURST = 20
ANNOUNCE_RATE_PER_S = 5.0


class Sync:
    """The block announcements a service takes (a bucket per announcer) and the fetches
    it runs (one per peer at most)."""

    def __init__(self, service: LedgerService) -> None:
        self._service = service
        self._fetching: set[PeerKey] = set()
        #: Per announcer: (tokens, at seconds) of its announcement bucket.
        self._buckets: dict[PeerKey, tuple[float, float]] = {}

    async def listen(self, inbox: Any) -> None:
        """Take the announcements on the blocks topic until cancelled."""
        service = self._service
        async with inbox:
            async for msg in inbox:
                if not self.take_announcement(msg.sender):
                    service.counters.announcements_dropped += 1
                    continue
                try:
                    value = protocol.unpack(msg.data, max_bytes=MAX_PUBSUB_BYTES)
                    if type(value) is not list or len(value) != 2:
                        raise protocol.RemoteProtocolError("expected [height, block]")
                    height, raw = value
                    if type(height) is not int or not 0 <= height <= MAX_HEIGHT:
                        raise protocol.RemoteProtocolError("a height is a small unsigned int")
                    if type(raw) is not bytes:
                        raise protocol.RemoteProtocolError("a block is bytes")
                except protocol.ProtocolError as exc:
                    service.misbehaved(msg.sender, f"malformed block announcement: {exc}")
                    continue
                if raw and service.replica.recent.get(height) == raw:
                    continue  # a block we hold: a copy, or a replay
                if (
                    not raw
                    and service.producer is None
                    and (
                        height <= service.state.height or msg.sender not in service.replica.sources
                    )
                ):
                    continue  # a head we are past, or a bare head from a non-source (F1)
                await service.handle(functools.partial(self._announced, msg.sender, height, raw))

    def take_announcement(self, peer: PeerKey) -> bool:
        """Whether ``peer``'s announcement bucket has room (see ``ANNOUNCE_BURST``); past
        it an announcement is dropped (the replica fetches what it misses). Not counted as
        misbehaviour: gossip hands over the last seconds' announcements at once after a
        partition or a restart, and the coordinator was blamed for them; a dropped
        announcement costs nothing, and gossip limits each peer's rate itself."""
        now = trio.current_time()
        tokens, at = self._buckets.get(peer, (float(ANNOUNCE_BURST), now))
        rate = max(ANNOUNCE_RATE_PER_S, 3000 / max(1, self._service.interval_ms))
        tokens = min(float(ANNOUNCE_BURST), tokens + (now - at) * rate)
        if peer not in self._buckets and len(self._buckets) >= MAX_PEERS_TRACKED:
            self._buckets.clear()
        if tokens < 1:
            self._buckets[peer] = (tokens, now)
            return False
        self._buckets[peer] = (tokens - 1, now)
        return True

    def _announced(self, sender: PeerKey, height: int, raw: bytes) -> list[ledger.Effect]:
        replica = self._service.replica
        if self._service.producer is not None:
            # a coordinator only watches for equivocation, it never follows others
            effects = replica.on_blocks(sender, [raw]) if raw else []
            return [e for e in effects if isinstance(e, ledger.ProofFound | ledger.PeerMisbehaved)]
        if raw:
            # the announced height is not noted: the block says its height, and a head
            # claimed with an old block would make every later batch ask this peer again
            return replica.on_blocks(sender, [raw])
        return replica.on_head(sender, height)

    def start_fetch(self, effect: ledger.FetchBlocks) -> None:
        """At most one fetch per peer; others are dropped (the next announcement or sync
        tick asks again). See :func:`fetch_admitted` for the cap."""
        nursery = self._service.nursery
        if nursery is None or not fetch_admitted(
            effect.peer, self._fetching, self._service.replica.sources
        ):
            return
        self._fetching.add(effect.peer)
        nursery.start_soon(self._fetch_rounds, effect)

    async def _fetch_rounds(self, effect: ledger.FetchBlocks) -> None:
        """Fetch from one peer; a next batch from it only after a batch that committed."""
        service = self._service
        peer = effect.peer
        try:
            for _ in range(MAX_FETCH_ROUNDS):
                blocks = await self.fetch(effect)
                if blocks is None:
                    return
                async with service.lock:
                    before = service.state.height
                    effects = (
                        service.guarded(functools.partial(service.replica.on_blocks, peer, blocks))
                        if blocks
                        else []
                    )
                    fetches = await service.run_effects(effects)
                    progressed = service.state.height > before
                again = [f for f in fetches if f.peer == peer]
                for other in fetches:
                    if other.peer != peer:
                        self.start_fetch(other)
                if not again or not progressed:
                    return
                effect = again[0]
        finally:
            self._fetching.discard(peer)

    async def fetch(self, effect: ledger.FetchBlocks) -> list[bytes] | None:
        """One batch from ``effect.peer``; ``None`` (counted against it) if it failed."""
        service = self._service
        request = protocol.pack([effect.from_height, effect.limit])
        # the head the peer claimed before we asked: one it claims while the answer is on
        # its way (its next block, announced) is no lie of an answer made before it
        claimed = service.replica.head_of(effect.peer)
        try:
            with trio.fail_after(FETCH_TIMEOUT_S):
                response = await service.net.request(
                    effect.peer, BLOCKS_PROTOCOL, request, timeout=FETCH_TIMEOUT_S
                )
            value = protocol.unpack(response, max_bytes=MAX_RESPONSE_BYTES)
            if type(value) is not list or len(value) != 2:
                raise protocol.RemoteProtocolError("expected [head, blocks]")
            head, blocks = value
            if type(head) is not int or not 0 <= head <= MAX_HEIGHT:
                raise protocol.RemoteProtocolError("a head is a small unsigned int")
            if type(blocks) is not list or len(blocks) > max(effect.limit, 1):
                raise protocol.RemoteProtocolError("expected at most limit blocks")
            if any(type(b) is not bytes for b in blocks):
                raise protocol.RemoteProtocolError("a block is bytes")
        except (PeerBusy, AnswerLost) as exc:
            # overloaded (it ran none of it), or its answer was cut: its slot for us taken
            # by a newcomer, or the connection lost; no fault of its own (round 22, R22-2)
            service.counters.fetch_failures += 1
            log.info("fetching blocks from %s: %s", protocol.peer_id(effect.peer), exc)
            return None
        except (NetworkError, protocol.ProtocolError, trio.TooSlowError) as exc:
            service.counters.fetch_failures += 1
            service.misbehaved(
                effect.peer, f"fetching blocks failed: {str(exc) or type(exc).__name__}"
            )
            return None
        fault = answer_fault(head, blocks, service.state.height, claimed)
        if fault is not None:
            service.misbehaved(effect.peer, fault)
            return None
        if effect.peer in service.replica.sources:
            # A source's head is taken on its word; any other peer's only from blocks it
            # showed (``Replica.on_blocks``): a made-up head answered with one genuine
            # block was kept for good, and each later announcement of an old block bought
            # a fetch of 64 old blocks, decoded under the service lock (round 74, R74-A).
            service.replica.note_head(effect.peer, head)
        return list(blocks)


def fetch_admitted(
    peer: PeerKey, fetching: Collection[PeerKey], sources: Collection[PeerKey]
) -> bool:
    """Whether a fetch from ``peer`` may start while ``fetching`` are on their way: one per
    peer; a source's (a genesis coordinator's: a handful) always, and other peers' while
    fewer than ``MAX_FETCHES_IN_FLIGHT`` of them run. Fresh keys held all 8 slots and every
    fetch from the coordinator was dropped, so a replica with a gap stalled (round 29, F1)."""
    if peer in fetching:
        return False
    if peer in sources:
        return True
    return sum(1 for p in fetching if p not in sources) < MAX_FETCHES_IN_FLIGHT


def answer_fault(head: int, blocks: Sequence[bytes], our_height: int, claimed: int) -> str | None:
    """Why a well-formed fetch answer ``[head, blocks]`` is a lie, or ``None``. ``claimed``
    is the head the peer said or showed before (announced, answered, or a block above ours
    it sent): a head never goes down, so an answer below it is counted. ``[0, []]`` after
    a head of 2**40 held a fetch slot for free (round 29, F1)."""
    if head > our_height and not blocks:
        return f"claims head {head} but sends no block"
    if head < claimed:
        return f"answers head {head} below the head {claimed} it claimed"
    return None
