"""The ledger's driver: runs the ledger state machines over the network and the store.

One :class:`LedgerService` per node. A coordinator (``producer_key`` given) orders
transactions into blocks at ``interval_ms`` with :class:`ledger.Producer`; every node runs
a :class:`ledger.Replica` that fetches blocks from its sources and re-validates them.
Effects are executed here: commits go to the SQLite store thread before a block is
announced; fetches are network requests; equivocation proofs are stored.

Wire (request/response protocols and one topic; canonical msgpack):

- ``/aimx/ledger/blocks/1``: request ``[from_height, limit]``; response
  ``[head_height, [block, ...]]`` (at most ``limit`` ≤ 256 blocks and 3 MiB);
- ``/aimx/ledger/tx/1``: request: a signed transaction; response ``[tx_id]``, or a
  rejection whose text is the ledger's reason (a non-coordinator forwards to a source);
- ``/aimx/ledger/dropped/1`` (coordinator to a transactions' sender): request
  ``[[tx_id, seq, reason], ...]`` (at most 256) for the transactions of that sender the
  mempool admitted that will never be in a block; response empty. Taken only from a
  coordinator of the genesis;
- topic ``aimx/<chain>/ledger/blocks``: ``[height, block]`` for each new block (``block``
  empty when it is larger than a pubsub message; replicas then fetch it).

Time is trio's clock (so ``trio.testing.MockClock`` drives it in tests and the simulator).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing
import trio

import ledger
import protocol

from .._errors import NodeError
from ..net import (
    MAX_PUBSUB_BYTES,
    Network,
    NetworkError,
    PeerKey,
    PeerUnreachable,
    RemoteError,
    RequestRejected,
)
from ._store_thread import StoreThread

log = logging.getLogger(__name__)
#: Raw blocks a replica keeps in memory, with and without a store.
RECENT_BLOCKS_WITH_STORE = 512
RECENT_BLOCKS = 4096

BLOCKS_PROTOCOL = "/aimx/ledger/blocks/1"
TX_PROTOCOL = "/aimx/ledger/tx/1"
#: How a source's refusal of a transaction begins (specs/ledger.md); any other error answer
#: leaves the transaction's outcome unknown.
REJECTED_PREFIX = "transaction rejected: "
DROPPED_PROTOCOL = "/aimx/ledger/dropped/1"
#: How long a coordinator tries to tell a sender of its dropped transactions.
DROPPED_NOTICE_TIMEOUT_S = 5.0
#: Drops told in one notice, and notices on their way at once (more are not sent: those
#: senders find the gap at the expiry, as without a notice).
MAX_DROPS_PER_NOTICE = 256
MAX_NOTICES_IN_FLIGHT = 64
MAX_BLOCKS_PER_RESPONSE = 256
MAX_RESPONSE_BLOCK_BYTES = 3 << 20
#: A block fetch that takes longer than this fails (and counts against the peer).
FETCH_TIMEOUT_S = 5.0
#: Block fetches on their way at once: one per peer, at most this many in all.
MAX_FETCHES_IN_FLIGHT = 8
#: Batches one fetch may chain (a next batch is asked for only after one that committed).
MAX_FETCH_ROUNDS = 64
#: Block announcements taken from one peer: a bucket of this many, refilled at this rate
#: per second, or 3 per block interval if more; announcements beyond it are dropped and
#: count as misbehaviour.
ANNOUNCE_BURST = 20
ANNOUNCE_RATE_PER_S = 5.0
#: Peers whose announcement rate or misbehaviour this service remembers.
MAX_PEERS_TRACKED = 4096
#: Block requests served to one peer at once (each may read up to 3 MiB); more are refused.
MAX_BLOCK_REQUESTS_PER_PEER = 4
#: Largest height taken from a peer (block heights are unsigned 64-bit, far below this).
MAX_HEIGHT = (1 << 63) - 1
#: While no coordinator is reachable, a submission is tried again at least this often
#: (and at once when one connects), and waits at most this long in all.
SUBMIT_RETRY_S = 1.0
SUBMIT_WAIT_MAX_S = 600.0


def ledger_db_path(data_dir: Path) -> Path:
    """Where a node keeps its ledger database."""
    return data_dir / "ledger" / "ledger.sqlite3"


def blocks_topic(chain_id: str) -> str:
    return f"aimx/{chain_id}/ledger/blocks"


class LedgerServiceError(NodeError):
    """The ledger service cannot do what was asked (no source to forward to, rejected tx)."""


@dataclass(slots=True)
class ServiceCounters:
    """What this node's ledger service saw. One per service: no global state."""

    blocks_committed: int = 0
    blocks_produced: int = 0
    bad_blocks: int = 0
    fetch_failures: int = 0
    proofs: int = 0
    #: Block announcements over a peer's rate, dropped (the replica fetches instead).
    announcements_dropped: int = 0
    misbehaving: dict[PeerKey, int] = field(default_factory=dict)


class LedgerService:
    """Runs one node's ledger: replica always, producer when given a coordinator key."""

    def __init__(
        self,
        net: Network,
        genesis: ledger.Genesis,
        *,
        store: StoreThread | None = None,
        producer_key: nacl.signing.SigningKey | None = None,
        interval_ms: int = 1000,
        sync_interval_ms: int = 2000,
        sources: Sequence[PeerKey] = (),
    ) -> None:
        self.net = net
        self.genesis = genesis
        self.store = store
        state = store.state if store is not None else ledger.State.from_genesis(genesis)
        if state.genesis != genesis:
            raise LedgerServiceError("the store holds another chain than this genesis")
        # With a store, recent blocks only serve to spot equivocation (fetches are served
        # from the store), so fewer are kept in memory; without one they serve fetches too.
        self.replica = ledger.Replica(
            state,
            sync_interval_ms=sync_interval_ms,
            keep_recent=RECENT_BLOCKS_WITH_STORE if store is not None else RECENT_BLOCKS,
        )
        for peer in sources:
            self.replica.add_source(peer)
        self.producer_key = producer_key
        self.interval_ms = interval_ms
        self.producer: ledger.Producer | None = None
        self.counters = ServiceCounters()
        self._waiters: list[tuple[int, trio.Event]] = []
        #: Called with ``(tx_id, seq, reason)`` when a coordinator reports that one of this
        #: node's transactions was dropped (the node's transaction queue fills the gap).
        self.on_dropped: list[Callable[[bytes, int, str], None]] = []
        #: Called when a source (a coordinator) connects, again after an outage included.
        self.on_source_connected: list[Callable[[], None]] = []
        self._nursery: trio.Nursery | None = None
        self._notices_in_flight = 0
        self._proof_event = trio.Event()
        self._lock = trio.Lock()
        #: Called with ``(peer, reason)`` for each misbehaviour of a peer (the node counts it).
        self.on_misbehaved: list[Callable[[PeerKey, str], None]] = []
        self._fetching: set[PeerKey] = set()
        self._serving: dict[PeerKey, int] = {}
        #: Per announcer: (tokens, at seconds) of its announcement bucket.
        self._buckets: dict[PeerKey, tuple[float, float]] = {}
        #: Set (and replaced) when a source connects: waiting submissions try again.
        self._source_connected = trio.Event()
        #: A block this coordinator produced that the store refused (kept to retry).
        self._unstored: ledger.Commit | None = None

    # --- public API ----------------------------------------------------------------------

    @property
    def state(self) -> ledger.State:
        return self.replica.state

    @property
    def proofs(self) -> list[ledger.EquivocationProof]:
        return list(self.replica.proofs)

    async def wait_height(self, height: int) -> None:
        """Return once this node has committed ``height``."""
        if self.state.height >= height:
            return
        event = trio.Event()
        self._waiters.append((height, event))
        await event.wait()

    async def wait_proof(self) -> ledger.EquivocationProof:
        """Return once an equivocation proof is known."""
        while not self.replica.proofs:
            await self._proof_event.wait()
        return self.replica.proofs[0]

    async def submit(self, raw: bytes, *, wait: bool = True) -> bytes:
        """Submit a signed transaction; returns its id once the coordinator accepted it.

        While no coordinator can be reached (no connection could be made, so nothing was
        sent: one restarting, which the network redials), the submission waits for one
        (``wait``), woken when one connects and tried again at least every
        ``SUBMIT_RETRY_S``, as long as :meth:`_wait_bound_s` allows (a lock: about its
        job's deadline).

        Raises :class:`ledger.TransactionRejected` with the reason, or
        :class:`LedgerServiceError` if there is no coordinator to send it to (after the
        wait).
        """
        if self.producer is not None:
            return self.producer.submit(raw).id
        started: float | None = None
        until: float | None = None
        while True:
            connected = self._source_connected
            tx_id = await self._submit_once(raw)
            if tx_id is not None:
                return tx_id
            now = trio.current_time()
            if until is None or started is None:
                started, until = now, now + (self._wait_bound_s(raw) if wait else 0.0)
                if wait:
                    log.info(
                        "no coordinator reachable: a transaction waits up to %.0f s", until - now
                    )
            if now >= until:
                waited = f" (waited {now - started:.0f} s)" if wait else ""
                raise LedgerServiceError(
                    f"no coordinator reachable to submit the transaction to{waited}"
                )
            with trio.move_on_at(min(until, now + SUBMIT_RETRY_S)):
                await connected.wait()

    async def _submit_once(self, raw: bytes) -> bytes | None:
        """Try each source once: the tx id; None if none could be reached (nothing was
        answered: safe to send again). A source that took it and did not answer in time
        (it may yet apply it) or answered nonsense ends the submission as before.

        Only the source's own refusal (an error answer saying ``transaction rejected``) is
        a refusal. Any other error answer (a reply cut short, a handler that failed, a
        forwarding replica with no coordinator) says nothing about whether the transaction
        was admitted: its outcome is unknown, and the caller resolves it from the chain."""
        unreachable = bool(self.replica.sources)
        for peer in self.replica.sources:
            try:
                response = await self.net.request(peer, TX_PROTOCOL, raw)
            except RemoteError as exc:
                if str(exc).startswith(REJECTED_PREFIX):
                    raise ledger.TransactionRejected(str(exc)) from None
                log.info("transaction answer from %s unusable: %s", protocol.peer_id(peer), exc)
                unreachable = False
                continue
            except PeerUnreachable:
                continue
            except NetworkError:
                unreachable = False
                continue
            try:
                value = protocol.unpack(response)
                if type(value) is not list or len(value) != 1 or type(value[0]) is not bytes:
                    raise protocol.RemoteProtocolError("expected [tx_id]")
            except protocol.ProtocolError as exc:
                self._misbehaved(peer, f"bad answer to a transaction: {exc}")
                unreachable = False
                continue
            return bytes(value[0])
        if not unreachable:
            raise LedgerServiceError("no coordinator reachable to submit the transaction to")
        return None

    def _wait_bound_s(self, raw: bytes) -> float:
        """How long ``raw`` may wait for a coordinator: a lock until its escrow's claim
        height would come had blocks kept coming (its job's deadline and a few blocks: the
        job has failed by then), anything else ``SUBMIT_WAIT_MAX_S`` (a settle, refund or
        claim is worth the wait, and the chain does not move while its coordinator is
        away); 0 for a transaction that does not decode."""
        try:
            payload = ledger.verify_tx(raw, self.genesis.chain_id).payload
        except (ledger.LedgerError, protocol.ProtocolError):
            return 0.0
        if not isinstance(payload, ledger.Lock):
            return SUBMIT_WAIT_MAX_S
        blocks = max(0, payload.claim_height - self.state.height)
        return min(SUBMIT_WAIT_MAX_S, blocks * self.interval_ms / 1000)

    def add_source(self, peer: PeerKey) -> None:
        self.replica.add_source(peer)

    # --- running -------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve and sync until cancelled."""
        if self.store is not None:
            # after a restart: recent blocks (to spot equivocation) and the proofs kept so far
            recent = await self.store.call(lambda s: s.recent_blocks(RECENT_BLOCKS_WITH_STORE))
            proofs = await self.store.call(lambda s: s.proofs())
            for height in sorted(recent):
                self.replica.recent[height] = recent[height]
            self.replica.proofs.extend(p for p in proofs if p not in self.replica.proofs)
        now = self._now_ms()
        if self.producer_key is not None:
            self.producer = ledger.Producer(
                self.producer_key, self.state, interval_ms=self.interval_ms, now_ms=now
            )
        self.net.set_handler(BLOCKS_PROTOCOL, self._serve_blocks)
        self.net.set_handler(TX_PROTOCOL, self._serve_tx)
        self.net.set_handler(DROPPED_PROTOCOL, self._serve_dropped, max_request_bytes=1 << 20)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                inbox = self.net.subscribe(blocks_topic(self.genesis.chain_id))
                nursery.start_soon(self._listen, inbox)
                nursery.start_soon(self._timers)
                nursery.start_soon(self._watch_sources, self.net.peer_events())
                task_status.started()
        finally:
            self.net.remove_handler(BLOCKS_PROTOCOL)
            self.net.remove_handler(TX_PROTOCOL)
            self.net.remove_handler(DROPPED_PROTOCOL)

    def _now_ms(self) -> int:
        return math.floor(trio.current_time() * 1000)

    async def _watch_sources(self, events: Any) -> None:
        """Wake the submissions waiting for a coordinator when a source connects."""
        async with events:
            async for event in events:
                if event.connected and event.peer in self.replica.sources:
                    self._source_connected.set()
                    self._source_connected = trio.Event()
                    for callback in self.on_source_connected:
                        callback()

    async def _timers(self) -> None:
        while True:
            now = self._now_ms()
            if self.producer is not None:
                effects = await self._locked_producer_tick(now)
            else:
                effects = await self._handle(functools.partial(self.replica.tick, now))
            wake = min(
                (e.at_ms for e in effects if isinstance(e, ledger.SetTimer)), default=now + 1000
            )
            await trio.sleep_until(max(wake, now + 1) / 1000)

    async def _handle(self, event: Callable[[], list[ledger.Effect]]) -> list[ledger.Effect]:
        """Feed one event to the replica and carry out its effects, one event at a time (so
        commits reach the store in height order). Block fetches start as tasks of their
        own, outside the lock: a peer that never answers stalls no one but its fetch.
        Returns the effects."""
        async with self._lock:
            effects = self._guarded(event)
            fetches = await self._run_effects(
                [e for e in effects if not isinstance(e, ledger.SetTimer)]
            )
        for fetch in fetches:
            self._start_fetch(fetch)
        return effects

    async def _locked_producer_tick(self, now: int) -> list[ledger.Effect]:
        assert self.producer is not None
        async with self._lock:
            # A block of ours the store refused (disk full) is written, then announced,
            # before the producer makes the next: never announced unwritten.
            if self._unstored is not None and not await self._commit_own(self._unstored):
                return [ledger.SetTimer(now + max(100, min(self.interval_ms, 1000)))]
            effects = self.producer.tick(now)
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
        if not await self._commit(e):
            self._unstored = e
            return False
        self._unstored = None
        self.replica.adopt(e.block.raw, e.state)
        self.counters.blocks_produced += 1
        await self._announce(e.block)
        return True

    def _tell_dropped(self, sender: PeerKey, drops: list[ledger.TxDropped]) -> None:
        """Tell the sender (one notice for the block); best effort."""
        for d in drops:
            log.info("transaction %d of %s dropped: %s", d.seq, protocol.peer_id(sender), d.reason)
        if sender == self.net.local_peer:
            for d in drops:
                self._dropped(d.tx_id, d.seq, d.reason)
        elif self._nursery is not None and self._notices_in_flight < MAX_NOTICES_IN_FLIGHT:
            self._notices_in_flight += 1
            notice = protocol.pack([[d.tx_id, d.seq, d.reason[:1000]] for d in drops])
            self._nursery.start_soon(self._send_dropped, sender, notice)

    async def _send_dropped(self, sender: PeerKey, notice: bytes) -> None:
        """A sender that does not hear of it finds the gap at the expiry."""
        try:
            await self.net.request(
                sender, DROPPED_PROTOCOL, notice, timeout=DROPPED_NOTICE_TIMEOUT_S
            )
        except NetworkError as exc:
            log.info("could not tell %s of dropped transactions: %s", protocol.peer_id(sender), exc)
        finally:
            self._notices_in_flight -= 1

    def _dropped(self, tx_id: bytes, seq: int, reason: str) -> None:
        for callback in self.on_dropped:
            callback(tx_id, seq, reason)

    async def _announce(self, block: protocol.Signed[ledger.Block]) -> None:
        data = protocol.pack([block.message.height, block.raw])
        if len(data) > MAX_PUBSUB_BYTES:
            data = protocol.pack([block.message.height, b""])
        try:
            await self.net.publish(blocks_topic(self.genesis.chain_id), data)
        except NetworkError as exc:
            log.warning("could not announce block %d: %s", block.message.height, exc)

    async def _listen(self, inbox: Any) -> None:
        async with inbox:
            async for msg in inbox:
                if not self._take_announcement(msg.sender):
                    self.counters.announcements_dropped += 1
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
                    self._misbehaved(msg.sender, f"malformed block announcement: {exc}")
                    continue
                if raw and self.replica.recent.get(height) == raw:
                    continue  # a block we hold: a copy, or a replay
                if not raw and height <= self.state.height and self.producer is None:
                    continue  # a head we are past
                await self._handle(functools.partial(self._announced, msg.sender, height, raw))

    def _guarded(self, event: Callable[[], list[ledger.Effect]]) -> list[ledger.Effect]:
        """Run a replica event; an exception it raises on a peer's bytes (a bug of ours that
        the bytes found) is logged as a driver error, never raised into the service."""
        try:
            return event()
        except Exception:
            log.exception("the replica failed on an event")
            return []

    def _take_announcement(self, peer: PeerKey) -> bool:
        """Whether ``peer``'s announcement bucket has room (see ``ANNOUNCE_BURST``); past
        it an announcement is dropped (the replica fetches what it misses). Not counted as
        misbehaviour: gossip hands over the last seconds' announcements at once after a
        partition or a restart, and the coordinator was blamed for them; a dropped
        announcement costs nothing, and gossip limits each peer's rate itself."""
        now = trio.current_time()
        tokens, at = self._buckets.get(peer, (float(ANNOUNCE_BURST), now))
        rate = max(ANNOUNCE_RATE_PER_S, 3000 / max(1, self.interval_ms))
        tokens = min(float(ANNOUNCE_BURST), tokens + (now - at) * rate)
        if peer not in self._buckets and len(self._buckets) >= MAX_PEERS_TRACKED:
            self._buckets.clear()
        if tokens < 1:
            self._buckets[peer] = (tokens, now)
            return False
        self._buckets[peer] = (tokens - 1, now)
        return True

    def _announced(self, sender: PeerKey, height: int, raw: bytes) -> list[ledger.Effect]:
        if self.producer is not None:
            # a coordinator only watches for equivocation, it never follows others
            effects = self.replica.on_blocks(sender, [raw]) if raw else []
            return [e for e in effects if isinstance(e, ledger.ProofFound | ledger.PeerMisbehaved)]
        if raw:
            # the announced height is not noted: the block says its height, and a head
            # claimed with an old block would make every later batch ask this peer again
            return self.replica.on_blocks(sender, [raw])
        return self.replica.on_head(sender, height)

    async def _run_effects(self, effects: list[ledger.Effect]) -> list[ledger.FetchBlocks]:
        """Carry out effects (called holding the lock); returns the fetches to start."""
        fetches: list[ledger.FetchBlocks] = []
        for effect in effects:
            if isinstance(effect, ledger.Commit):
                await self._commit(effect)
            elif isinstance(effect, ledger.ProofFound):
                await self._keep_proof(effect.proof)
            elif isinstance(effect, ledger.PeerMisbehaved):
                self.counters.bad_blocks += 1
                self._misbehaved(effect.peer, f"sent a bad block: {effect.reason}")
            elif isinstance(effect, ledger.FetchBlocks):
                fetches.append(effect)
        return fetches

    def _start_fetch(self, effect: ledger.FetchBlocks) -> None:
        """At most one fetch per peer and ``MAX_FETCHES_IN_FLIGHT`` in all; others are
        dropped (the next announcement or sync tick asks again)."""
        if (
            self._nursery is None
            or effect.peer in self._fetching
            or len(self._fetching) >= MAX_FETCHES_IN_FLIGHT
        ):
            return
        self._fetching.add(effect.peer)
        self._nursery.start_soon(self._fetch_rounds, effect)

    async def _fetch_rounds(self, effect: ledger.FetchBlocks) -> None:
        """Fetch from one peer; a next batch from it only after a batch that committed."""
        peer = effect.peer
        try:
            for _ in range(MAX_FETCH_ROUNDS):
                blocks = await self._fetch(effect)
                if blocks is None:
                    return
                async with self._lock:
                    before = self.state.height
                    effects = (
                        self._guarded(functools.partial(self.replica.on_blocks, peer, blocks))
                        if blocks
                        else []
                    )
                    fetches = await self._run_effects(effects)
                    progressed = self.state.height > before
                again = [f for f in fetches if f.peer == peer]
                for other in fetches:
                    if other.peer != peer:
                        self._start_fetch(other)
                if not again or not progressed:
                    return
                effect = again[0]
        finally:
            self._fetching.discard(peer)

    async def _fetch(self, effect: ledger.FetchBlocks) -> list[bytes] | None:
        """One batch from ``effect.peer``; ``None`` (counted against it) if it failed."""
        request = protocol.pack([effect.from_height, effect.limit])
        try:
            with trio.fail_after(FETCH_TIMEOUT_S):
                response = await self.net.request(
                    effect.peer, BLOCKS_PROTOCOL, request, timeout=FETCH_TIMEOUT_S
                )
            value = protocol.unpack(response, max_bytes=MAX_RESPONSE_BLOCK_BYTES + 4096)
            if type(value) is not list or len(value) != 2:
                raise protocol.RemoteProtocolError("expected [head, blocks]")
            head, blocks = value
            if type(head) is not int or not 0 <= head <= MAX_HEIGHT:
                raise protocol.RemoteProtocolError("a head is a small unsigned int")
            if type(blocks) is not list or len(blocks) > max(effect.limit, 1):
                raise protocol.RemoteProtocolError("expected at most limit blocks")
            if any(type(b) is not bytes for b in blocks):
                raise protocol.RemoteProtocolError("a block is bytes")
        except (NetworkError, protocol.ProtocolError, trio.TooSlowError) as exc:
            self.counters.fetch_failures += 1
            self._misbehaved(effect.peer, f"fetching blocks failed: {exc or 'timed out'}")
            return None
        if head > self.state.height and not blocks:
            self._misbehaved(effect.peer, f"claims head {head} but sends no block")
            return None
        self.replica.note_head(effect.peer, head)
        return list(blocks)

    async def _commit(self, effect: ledger.Commit) -> bool:
        """Persist a block and wake who waits for its height. ``False`` if the store refused
        it (disk full: the store's ``fault``): a replica goes back to the store's height and
        fetches the block again at its next sync, which is the retry."""
        if self.store is not None:
            if effect.state.height != self.store.state.height + 1:
                return False  # a block after one the store refused
            if not await self.store.commit(effect.block, effect.state):
                if self.producer is None:
                    self.replica.state = self.store.state
                return False
        self.counters.blocks_committed += 1
        height = effect.state.height
        ready = [e for h, e in self._waiters if h <= height]
        self._waiters = [(h, e) for h, e in self._waiters if h > height]
        for event in ready:
            event.set()
        return True

    async def _keep_proof(self, proof: ledger.EquivocationProof) -> None:
        if proof not in self.replica.proofs:
            self.replica.proofs.append(proof)
        self.counters.proofs = len(self.replica.proofs)
        if self.store is not None:
            try:
                await self.store.call(lambda s: s.add_proof(proof))
            except ledger.StoreError as exc:  # a full disk: the proof is kept in memory
                log.error("could not keep an equivocation proof on disk: %s", exc)
        log.warning("equivocation: two blocks at height %d", proof.height)
        self._proof_event.set()
        self._proof_event = trio.Event()

    def _misbehaved(self, peer: PeerKey, reason: str) -> None:
        counts = self.counters.misbehaving
        if peer not in counts and len(counts) >= MAX_PEERS_TRACKED:
            counts.clear()
        counts[peer] = counts.get(peer, 0) + 1
        log.info("peer %s misbehaved: %s", protocol.peer_id(peer), reason)
        for callback in self.on_misbehaved:
            callback(peer, reason)

    # --- serving -------------------------------------------------------------------------

    async def _serve_blocks(self, peer: PeerKey, request: bytes) -> bytes:
        try:
            value = protocol.unpack(request)
            if type(value) is not list or len(value) != 2:
                raise protocol.RemoteProtocolError("expected [from_height, limit]")
            start, limit = value
            if (
                type(start) is not int
                or type(limit) is not int
                or not 1 <= start <= MAX_HEIGHT
                or limit < 1
            ):
                raise protocol.RemoteProtocolError("expected [from_height >= 1, limit >= 1]")
        except protocol.ProtocolError as exc:
            self._misbehaved(peer, f"bad block request: {exc}")
            raise RequestRejected(f"bad block request: {exc}") from None
        limit = min(limit, MAX_BLOCKS_PER_RESPONSE)
        if self._serving.get(peer, 0) >= MAX_BLOCK_REQUESTS_PER_PEER:
            raise RequestRejected(
                f"at most {MAX_BLOCK_REQUESTS_PER_PEER} block requests at once from one peer"
            )
        self._serving[peer] = self._serving.get(peer, 0) + 1
        try:
            return await self._blocks_response(start, limit)
        finally:
            left = self._serving.pop(peer) - 1
            if left:
                self._serving[peer] = left

    async def _blocks_response(self, start: int, limit: int) -> bytes:
        head = self.state.height
        if self.store is not None:
            blocks = await self.store.call(lambda s: s.blocks_from(start, limit))
        else:
            blocks = [
                self.replica.recent[h]
                for h in range(start, min(head, start + limit - 1) + 1)
                if h in self.replica.recent
            ]
        out: list[bytes] = []
        size = 0
        for raw in blocks:
            size += len(raw)
            if out and size > MAX_RESPONSE_BLOCK_BYTES:
                break
            out.append(raw)
        return protocol.pack([head, out])

    async def _serve_dropped(self, peer: PeerKey, request: bytes) -> bytes:
        if peer not in self.genesis.coordinators:
            self._misbehaved(peer, "reported a dropped transaction but is no coordinator")
            raise RequestRejected("only a coordinator reports dropped transactions")
        try:
            drops = protocol.unpack(request)
            if type(drops) is not list or not 0 < len(drops) <= MAX_DROPS_PER_NOTICE:
                raise protocol.RemoteProtocolError(
                    f"expected a list of 1 to {MAX_DROPS_PER_NOTICE} drops"
                )
            for drop in drops:
                if (
                    type(drop) is not list
                    or len(drop) != 3
                    or type(drop[0]) is not bytes
                    or len(drop[0]) != protocol.HASH_SIZE
                    or type(drop[1]) is not int
                    or drop[1] < 0
                    or type(drop[2]) is not str
                ):
                    raise protocol.RemoteProtocolError("a drop is [tx_id, seq, reason]")
        except (protocol.ProtocolError, ValueError) as exc:
            self._misbehaved(peer, f"bad dropped-transaction notice: {exc}")
            raise RequestRejected(f"bad dropped-transaction notice: {exc}") from None
        for tx_id, seq, reason in drops:
            self._dropped(tx_id, seq, reason[:1000])
        return b""

    async def _serve_tx(self, peer: PeerKey, request: bytes) -> bytes:
        if self.producer is None:
            try:
                return protocol.pack([await self.submit(request, wait=False)])
            except ledger.LedgerError as exc:
                raise RequestRejected(f"{REJECTED_PREFIX}{exc}") from None
            except LedgerServiceError as exc:
                raise RequestRejected(str(exc)) from None
        try:
            tx_id = self.producer.submit(request).id
        except ledger.LedgerError as exc:
            raise RequestRejected(f"{REJECTED_PREFIX}{exc}") from None
        except Exception as exc:  # a bug of ours that the peer's bytes found
            log.exception("the mempool failed on a transaction")
            self._misbehaved(peer, f"its transaction made the mempool fail: {exc!r}")
            raise RequestRejected(f"{REJECTED_PREFIX}the mempool failed on it") from None
        return protocol.pack([tx_id])
