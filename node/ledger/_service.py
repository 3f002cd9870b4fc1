"""The ledger's driver: runs the ledger state machines over the network and the store.

One :class:`LedgerService` per node. A coordinator (``producer_key`` given) orders
transactions into blocks at ``interval_ms`` with :class:`ledger.Producer`; every node runs
a :class:`ledger.Replica` that fetches blocks from its sources and re-validates them.
Effects are executed here: commits go to the SQLite store thread before a block is
announced; fetches are network requests; equivocation proofs are stored.

The service is the public face and the effects' executor; its parts each hold one concern:
:mod:`._sync` (announcements taken, blocks fetched), :mod:`._serve` (answers to peers),
:mod:`._submit` (this node's transactions to a coordinator), :mod:`._produce` (a
coordinator's blocks). :mod:`._wire` has the protocols and the limits on peers' bytes.

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

from ..net import Network, PeerKey
from ._errors import LedgerServiceError as LedgerServiceError
from ._produce import Production
from ._serve import MAX_TX_REQUEST_BYTES, Server
from ._store_thread import StoreThread
from ._submit import Submitter
from ._sync import Sync
from ._wire import BLOCKS_PROTOCOL as BLOCKS_PROTOCOL
from ._wire import DROPPED_PROTOCOL as DROPPED_PROTOCOL
from ._wire import (
    MAX_BLOCKS_REQUEST_BYTES,
    MAX_DROPPED_REQUEST_BYTES,
    MAX_DROPPED_SMALL_REQUEST_BYTES,
    MAX_PEERS_TRACKED,
)
from ._wire import MAX_HEIGHT as MAX_HEIGHT  # imported from here by tests
from ._wire import TX_PROTOCOL as TX_PROTOCOL
from ._wire import blocks_topic as blocks_topic

log = logging.getLogger(__name__)
#: Raw blocks a replica keeps in memory, with and without a store.
RECENT_BLOCKS_WITH_STORE = 512
RECENT_BLOCKS = 4096


def ledger_db_path(data_dir: Path) -> Path:
    """Where a node keeps its ledger database."""
    return data_dir / "ledger" / "ledger.sqlite3"


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
        #: Called with ``(peer, reason)`` for each misbehaviour of a peer (the node counts it).
        self.on_misbehaved: list[Callable[[PeerKey, str], None]] = []
        #: The service's tasks (fetches, notices) run here while it runs.
        self.nursery: trio.Nursery | None = None
        #: Held while an event is fed to the replica or producer and its effects carried
        #: out: one at a time, so commits reach the store in height order.
        self.lock = trio.Lock()
        self._proof_event = trio.Event()
        self.sync = Sync(self)
        self.server = Server(self)
        self.submitter = Submitter(self)
        self.production = Production(self)

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
        """Submit a signed transaction; returns its id once the coordinator accepted it
        (:meth:`Submitter.submit <node.ledger._submit.Submitter.submit>`: while no
        coordinator is reachable it waits for one, if ``wait``).

        Raises :class:`ledger.TransactionRejected` with the reason, or
        :class:`LedgerServiceError` if there is no coordinator to send it to."""
        return await self.submitter.submit(raw, wait=wait)

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
            for proof in proofs[: ledger.MAX_PROOFS]:
                if all(p.height != proof.height for p in self.replica.proofs):
                    self.replica.proofs.append(proof)
        now = self._now_ms()
        if self.producer_key is not None:
            self.producer = ledger.Producer(
                self.producer_key, self.state, interval_ms=self.interval_ms, now_ms=now
            )
        self.net.set_handler(
            BLOCKS_PROTOCOL, self.server.serve_blocks, max_request_bytes=MAX_BLOCKS_REQUEST_BYTES
        )
        self.net.set_handler(
            TX_PROTOCOL, self.server.serve_tx, max_request_bytes=MAX_TX_REQUEST_BYTES
        )
        self.net.set_handler(
            DROPPED_PROTOCOL,
            self.server.serve_dropped,
            max_request_bytes=MAX_DROPPED_REQUEST_BYTES,
            large_from=lambda peer: peer in self.genesis.coordinators,
            small_request_bytes=MAX_DROPPED_SMALL_REQUEST_BYTES,
        )
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                inbox = self.net.subscribe(blocks_topic(self.genesis.chain_id))
                nursery.start_soon(self.sync.listen, inbox)
                nursery.start_soon(self._timers)
                nursery.start_soon(self.submitter.watch_sources, self.net.peer_events())
                task_status.started()
        finally:
            self.net.remove_handler(BLOCKS_PROTOCOL)
            self.net.remove_handler(TX_PROTOCOL)
            self.net.remove_handler(DROPPED_PROTOCOL)

    def _now_ms(self) -> int:
        return math.floor(trio.current_time() * 1000)

    async def _timers(self) -> None:
        while True:
            now = self._now_ms()
            if self.producer is not None:
                effects = await self.production.tick(now)
            else:
                effects = await self.handle(functools.partial(self.replica.tick, now))
            wake = min(
                (e.at_ms for e in effects if isinstance(e, ledger.SetTimer)), default=now + 1000
            )
            await trio.sleep_until(max(wake, now + 1) / 1000)

    # --- carrying out effects (for the service's parts too) ------------------------------

    async def handle(self, event: Callable[[], list[ledger.Effect]]) -> list[ledger.Effect]:
        """Feed one event to the replica and carry out its effects, one event at a time (so
        commits reach the store in height order). Block fetches start as tasks of their
        own, outside the lock: a peer that never answers stalls no one but its fetch.
        Returns the effects."""
        async with self.lock:
            effects = self.guarded(event)
            fetches = await self.run_effects(
                [e for e in effects if not isinstance(e, ledger.SetTimer)]
            )
        for fetch in fetches:
            self.sync.start_fetch(fetch)
        return effects

    def guarded(self, event: Callable[[], list[ledger.Effect]]) -> list[ledger.Effect]:
        """Run a replica event; an exception it raises on a peer's bytes (a bug of ours that
        the bytes found) is logged as a driver error, never raised into the service."""
        try:
            return event()
        except Exception:
            log.exception("the replica failed on an event")
            return []

    async def run_effects(self, effects: list[ledger.Effect]) -> list[ledger.FetchBlocks]:
        """Carry out effects (called holding the lock); returns the fetches to start."""
        fetches: list[ledger.FetchBlocks] = []
        for effect in effects:
            if isinstance(effect, ledger.Commit):
                await self.commit(effect)
            elif isinstance(effect, ledger.ProofFound):
                await self._keep_proof(effect.proof)
            elif isinstance(effect, ledger.PeerMisbehaved):
                self.counters.bad_blocks += 1
                self.misbehaved(effect.peer, f"sent a bad block: {effect.reason}")
            elif isinstance(effect, ledger.FetchBlocks):
                fetches.append(effect)
        return fetches

    async def commit(self, effect: ledger.Commit) -> bool:
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
        # (``Replica.on_blocks`` found it new: one a height, a bounded number in all)
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

    def misbehaved(self, peer: PeerKey, reason: str) -> None:
        """Count a misbehaviour of ``peer`` and tell ``on_misbehaved``."""
        counts = self.counters.misbehaving
        if peer not in counts and len(counts) >= MAX_PEERS_TRACKED:
            counts.clear()
        counts[peer] = counts.get(peer, 0) + 1
        log.info("peer %s misbehaved: %s", protocol.peer_id(peer), reason)
        for callback in self.on_misbehaved:
            callback(peer, reason)

    def notify_dropped(self, tx_id: bytes, seq: int, reason: str) -> None:
        """One of this node's transactions will never be in a block: tell ``on_dropped``."""
        for callback in self.on_dropped:
            callback(tx_id, seq, reason)
