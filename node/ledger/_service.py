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
    RemoteError,
    RequestRejected,
)
from ._store_thread import StoreThread

log = logging.getLogger(__name__)

BLOCKS_PROTOCOL = "/aimx/ledger/blocks/1"
TX_PROTOCOL = "/aimx/ledger/tx/1"
DROPPED_PROTOCOL = "/aimx/ledger/dropped/1"
#: How long a coordinator tries to tell a sender of its dropped transactions.
DROPPED_NOTICE_TIMEOUT_S = 5.0
#: Drops told in one notice, and notices on their way at once (more are not sent: those
#: senders find the gap at the expiry, as without a notice).
MAX_DROPS_PER_NOTICE = 256
MAX_NOTICES_IN_FLIGHT = 64
MAX_BLOCKS_PER_RESPONSE = 256
MAX_RESPONSE_BLOCK_BYTES = 3 << 20


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
        self.replica = ledger.Replica(state, sync_interval_ms=sync_interval_ms)
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
        self._nursery: trio.Nursery | None = None
        self._notices_in_flight = 0
        self._proof_event = trio.Event()
        self._lock = trio.Lock()

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

    async def submit(self, raw: bytes) -> bytes:
        """Submit a signed transaction; returns its id once the coordinator accepted it.

        Raises :class:`ledger.TransactionRejected` with the reason, or
        :class:`LedgerServiceError` if there is no coordinator to send it to.
        """
        if self.producer is not None:
            return self.producer.submit(raw).id
        for peer in self.replica.sources:
            try:
                response = await self.net.request(peer, TX_PROTOCOL, raw)
            except RemoteError as exc:
                raise ledger.TransactionRejected(str(exc)) from None
            except NetworkError:
                continue
            return bytes(protocol.unpack(response)[0])
        raise LedgerServiceError("no coordinator reachable to submit the transaction to")

    def add_source(self, peer: PeerKey) -> None:
        self.replica.add_source(peer)

    # --- running -------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve and sync until cancelled."""
        if self.store is not None:
            # after a restart: recent blocks (to spot equivocation) and the proofs kept so far
            recent = await self.store.call(lambda s: s.recent_blocks(1024))
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
                effects = await self._locked_producer_tick(now)
            else:
                effects = await self._handle(functools.partial(self.replica.tick, now))
            wake = min(
                (e.at_ms for e in effects if isinstance(e, ledger.SetTimer)), default=now + 1000
            )
            await trio.sleep_until(max(wake, now + 1) / 1000)

    async def _handle(self, event: Callable[[], list[ledger.Effect]]) -> list[ledger.Effect]:
        """Feed one event to the replica and carry out its effects, one event at a time (so
        commits reach the store in height order). Returns the effects."""
        async with self._lock:
            effects = event()
            await self._run_effects([e for e in effects if not isinstance(e, ledger.SetTimer)])
        return effects

    async def _locked_producer_tick(self, now: int) -> list[ledger.Effect]:
        assert self.producer is not None
        async with self._lock:
            effects = self.producer.tick(now)
            drops: dict[PeerKey, list[ledger.TxDropped]] = {}
            for e in effects:
                if isinstance(e, ledger.Commit):
                    await self._commit(e)
                    self.replica.adopt(e.block.raw, e.state)
                    self.counters.blocks_produced += 1
                    await self._announce(e.block)
                elif isinstance(e, ledger.TxDropped):
                    drops.setdefault(e.sender, []).append(e)
            for sender, dropped in drops.items():
                self._tell_dropped(sender, dropped[:MAX_DROPS_PER_NOTICE])
        return [e for e in effects if not isinstance(e, ledger.Commit | ledger.TxDropped)]

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
                try:
                    height, raw = protocol.unpack(msg.data, max_bytes=MAX_PUBSUB_BYTES)
                    if type(height) is not int or type(raw) is not bytes:
                        raise protocol.RemoteProtocolError("bad block announcement")
                except protocol.ProtocolError:
                    self._misbehaved(msg.sender, "malformed block announcement")
                    continue
                await self._handle(functools.partial(self._announced, msg.sender, height, raw))

    def _announced(self, sender: PeerKey, height: int, raw: bytes) -> list[ledger.Effect]:
        if self.producer is not None:
            # a coordinator only watches for equivocation, it never follows others
            effects = self.replica.on_blocks(sender, [raw]) if raw else []
            return [e for e in effects if isinstance(e, ledger.ProofFound)]
        if raw:
            self.replica.note_head(sender, height)
            return self.replica.on_blocks(sender, [raw])
        return self.replica.on_head(sender, height)

    async def _run_effects(self, effects: list[ledger.Effect]) -> None:
        queue = list(effects)
        rounds = 0
        while queue and rounds < 10_000:
            rounds += 1
            effect = queue.pop(0)
            if isinstance(effect, ledger.Commit):
                await self._commit(effect)
            elif isinstance(effect, ledger.ProofFound):
                await self._keep_proof(effect.proof)
            elif isinstance(effect, ledger.PeerMisbehaved):
                self.counters.bad_blocks += 1
                self._misbehaved(effect.peer, f"sent a bad block: {effect.reason}")
            elif isinstance(effect, ledger.FetchBlocks):
                queue += await self._fetch(effect)

    async def _fetch(self, effect: ledger.FetchBlocks) -> list[ledger.Effect]:
        request = protocol.pack([effect.from_height, effect.limit])
        try:
            response = await self.net.request(effect.peer, BLOCKS_PROTOCOL, request)
            head, blocks = protocol.unpack(response, max_bytes=MAX_RESPONSE_BLOCK_BYTES + 4096)
            if type(head) is not int or type(blocks) is not list:
                raise protocol.RemoteProtocolError("bad blocks response")
        except (NetworkError, protocol.ProtocolError) as exc:
            self.counters.fetch_failures += 1
            log.info("fetching blocks from %s failed: %s", protocol.peer_id(effect.peer), exc)
            return []
        self.replica.note_head(effect.peer, head)
        if not blocks:
            return []
        return self.replica.on_blocks(effect.peer, [bytes(b) for b in blocks])

    async def _commit(self, effect: ledger.Commit) -> None:
        if self.store is not None:
            block, state = effect.block, effect.state
            await self.store.call(lambda s: s.commit(block, state))
        self.counters.blocks_committed += 1
        height = effect.state.height
        ready = [e for h, e in self._waiters if h <= height]
        self._waiters = [(h, e) for h, e in self._waiters if h > height]
        for event in ready:
            event.set()

    async def _keep_proof(self, proof: ledger.EquivocationProof) -> None:
        if proof not in self.replica.proofs:
            self.replica.proofs.append(proof)
        self.counters.proofs = len(self.replica.proofs)
        if self.store is not None:
            await self.store.call(lambda s: s.add_proof(proof))
        log.warning("equivocation: two blocks at height %d", proof.height)
        self._proof_event.set()
        self._proof_event = trio.Event()

    def _misbehaved(self, peer: PeerKey, reason: str) -> None:
        self.counters.misbehaving[peer] = self.counters.misbehaving.get(peer, 0) + 1
        log.info("peer %s misbehaved: %s", protocol.peer_id(peer), reason)

    # --- serving -------------------------------------------------------------------------

    async def _serve_blocks(self, peer: PeerKey, request: bytes) -> bytes:
        try:
            start, limit = protocol.unpack(request)
            if type(start) is not int or type(limit) is not int or start < 1 or limit < 1:
                raise protocol.RemoteProtocolError("expected [from_height >= 1, limit >= 1]")
        except protocol.ProtocolError as exc:
            raise RequestRejected(f"bad block request: {exc}") from None
        limit = min(limit, MAX_BLOCKS_PER_RESPONSE)
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
            raise RequestRejected(f"bad dropped-transaction notice: {exc}") from None
        for tx_id, seq, reason in drops:
            self._dropped(tx_id, seq, reason[:1000])
        return b""

    async def _serve_tx(self, peer: PeerKey, request: bytes) -> bytes:
        if self.producer is None:
            try:
                return protocol.pack([await self.submit(request)])
            except ledger.LedgerError as exc:
                raise RequestRejected(f"transaction rejected: {exc}") from None
            except LedgerServiceError as exc:
                raise RequestRejected(str(exc)) from None
        try:
            tx_id = self.producer.submit(request).id
        except ledger.LedgerError as exc:
            raise RequestRejected(f"transaction rejected: {exc}") from None
        return protocol.pack([tx_id])
