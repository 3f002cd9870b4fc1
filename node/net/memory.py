"""The in-memory network: every node of a :class:`MemoryHub` in one trio run.

Same interface and conformance suite as the libp2p implementation, with configurable
latency, loss and partitions. It reads only trio's clock (so a ``trio.testing.MockClock``
drives it) and draws every random choice from the ``random.Random`` it is given, at the
moment of the call, so a seeded run repeats.

Model (specs/network.md, "In-memory network"):

- Every node can dial every other node in its partition; a ``PRIVATE`` node can only be
  reached over a connection it opened. A request or response takes one latency draw and
  is lost with probability ``loss`` (the requester then times out).
- Pubsub goes from the publisher to every subscriber in its partition, each copy with its
  own latency and loss draw. Provider records live in the hub (as in a DHT) until they
  expire, also after their node has left; a lookup sees the records of nodes in its
  partition.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import nacl.signing
import trio

import protocol
from protocol import Advert, Signed

from ._errors import (
    MessageTooLarge,
    NetworkClosed,
    NetworkError,
    NetworkTimeout,
    PeerUnreachable,
    RecordError,
)
from ._framing import STATUS_OK
from ._inbox import Inbox
from ._interface import (
    Network,
    NetworkCounters,
    PeerEvent,
    PeerKey,
    PubsubMessage,
    Reachability,
    RenewRecord,
    RequestHandler,
)
from ._limits import (
    DEFAULT_FIND_LIMIT,
    DEFAULT_FIND_TIMEOUT,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_REQUEST_TIMEOUT,
    MAX_FRAME_BYTES,
    MAX_PUBSUB_BYTES,
    REFRESH_MARGIN_MS,
    check_frame_limit,
    check_protocol_id,
    check_topic,
)
from ._records import best_per_peer, check_own_record, verify_record
from ._serving import HandlerEntry, answer, error_for

__all__ = ["MemoryHub", "MemoryNetwork"]

log = logging.getLogger("node.net.memory")

_ADDRESS_PREFIX = "/memory/p2p/"


class MemoryHub:
    """The shared medium of a set of in-memory nodes.

    ``latency`` is a ``(low, high)`` range in seconds of trio time, drawn uniformly per
    message; ``loss`` is the probability that one message (request, response or pubsub
    copy) is lost. ``now_ms`` is the clock records expire by; it must advance with trio's
    clock (the default is trio's clock in ms).
    """

    def __init__(
        self,
        chain_id: str,
        *,
        rng: random.Random,
        latency: tuple[float, float] = (0.0005, 0.002),
        loss: float = 0.0,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        if not 0 <= latency[0] <= latency[1]:
            raise NetworkError("latency must be a (low, high) range with 0 <= low <= high")
        if not 0.0 <= loss < 1.0:
            raise NetworkError("loss must be a probability in [0, 1)")
        self.chain_id = chain_id
        self.rng = rng
        self.latency = latency
        self.loss = loss
        self._now_ms = now_ms
        self._nodes: dict[PeerKey, MemoryNetwork] = {}
        self._records: dict[PeerKey, Signed[Advert]] = {}
        self._group: dict[PeerKey, int] = {}

    def now_ms(self) -> int:
        if self._now_ms is not None:
            return self._now_ms()
        return math.floor(trio.current_time() * 1000)

    # --- conditions ----------------------------------------------------------------------

    def partition(self, *groups: Iterable[PeerKey]) -> None:
        """Split the network: each group can reach only itself; nodes in no group form one
        more group. Connections across groups close (with disconnect events)."""
        self._group = {}
        for index, group in enumerate(groups, start=1):
            for peer in group:
                self._group[peer] = index
        for node in list(self._nodes.values()):
            for other in list(node._connections):
                if not self.can_reach(node.local_peer, other):
                    self._unlink(node.local_peer, other)

    def heal(self) -> None:
        """End every partition."""
        self._group = {}

    def can_reach(self, a: PeerKey, b: PeerKey) -> bool:
        return self._group.get(a, 0) == self._group.get(b, 0)

    def _delay(self) -> float:
        low, high = self.latency
        return low if low == high else self.rng.uniform(low, high)

    def _lost(self) -> bool:
        return self.loss > 0 and self.rng.random() < self.loss

    # --- connections ---------------------------------------------------------------------

    def _link(self, a: PeerKey, b: PeerKey) -> None:
        na, nb = self._nodes.get(a), self._nodes.get(b)
        if na is None or nb is None or b in na._connections:
            return
        na._connections.add(b)
        nb._connections.add(a)
        na._emit(PeerEvent(b, True))
        nb._emit(PeerEvent(a, True))

    def _unlink(self, a: PeerKey, b: PeerKey) -> None:
        for x, y in ((a, b), (b, a)):
            node = self._nodes.get(x)
            if node is not None and y in node._connections:
                node._connections.discard(y)
                node._emit(PeerEvent(y, False))

    def _dial(self, source: PeerKey, target: PeerKey) -> MemoryNetwork:
        node = self._nodes.get(target)
        if node is None or node._closed:
            raise PeerUnreachable(f"peer {protocol.peer_id(target)} is not on the network")
        if not self.can_reach(source, target):
            raise PeerUnreachable(f"peer {protocol.peer_id(target)} is unreachable (partition)")
        if (
            node._reachability is Reachability.PRIVATE
            and source not in node._connections
            and source != target
        ):
            raise PeerUnreachable(
                f"peer {protocol.peer_id(target)} is not publicly reachable and has no "
                "connection to us"
            )
        if source != target:
            self._link(source, target)
        return node

    # --- nodes ---------------------------------------------------------------------------

    @asynccontextmanager
    async def open(
        self,
        key: nacl.signing.SigningKey,
        *,
        reachability: Reachability = Reachability.PUBLIC,
    ) -> AsyncIterator[MemoryNetwork]:
        """Join the hub as the node with ``key`` for the duration of the ``async with``."""
        peer = bytes(key.verify_key)
        if peer in self._nodes:
            raise NetworkError(f"peer {protocol.peer_id(peer)} is already on this hub")
        async with trio.open_nursery() as nursery:
            net = MemoryNetwork(self, peer, nursery, reachability)
            self._nodes[peer] = net
            try:
                yield net
            finally:
                net._closed = True
                for other in list(net._connections):
                    self._unlink(peer, other)
                del self._nodes[peer]
                net._close_inboxes()
                nursery.cancel_scope.cancel()


class MemoryNetwork:
    """One node on a :class:`MemoryHub`; implements :class:`node.net.Network`."""

    def __init__(
        self,
        hub: MemoryHub,
        peer: PeerKey,
        nursery: trio.Nursery,
        reachability: Reachability,
    ) -> None:
        self._hub = hub
        self._peer = peer
        self._nursery = nursery
        self._reachability = reachability
        self._closed = False
        self._connections: set[PeerKey] = set()
        self._handlers: dict[str, HandlerEntry] = {}
        self._subscriptions: dict[str, set[Inbox[PubsubMessage]]] = {}
        self._event_inboxes: set[Inbox[PeerEvent]] = set()
        self._refresh_scope: trio.CancelScope | None = None
        self._counters = NetworkCounters()

    # --- identity ------------------------------------------------------------------------

    @property
    def local_peer(self) -> PeerKey:
        return self._peer

    @property
    def chain_id(self) -> str:
        return self._hub.chain_id

    @property
    def counters(self) -> NetworkCounters:
        return self._counters

    def addresses(self) -> tuple[str, ...]:
        return (_ADDRESS_PREFIX + protocol.peer_id(self._peer),)

    def reachability(self) -> Reachability:
        return self._reachability

    def connected_peers(self) -> frozenset[PeerKey]:
        return frozenset(self._connections)

    def _check_open(self) -> None:
        if self._closed:
            raise NetworkClosed("this network is closed: open a new one")

    async def connect(self, address: str) -> PeerKey:
        self._check_open()
        if not address.startswith(_ADDRESS_PREFIX):
            raise NetworkError(f"not an in-memory address: {address!r} (want /memory/p2p/<id>)")
        try:
            peer = protocol.public_key_of(address[len(_ADDRESS_PREFIX) :])
        except protocol.ProtocolError as exc:
            raise NetworkError(f"bad peer id in {address!r}: {exc}") from None
        if peer == self._peer:
            raise NetworkError("cannot dial ourselves")
        await trio.sleep(self._hub._delay() * 2)
        self._check_open()
        self._hub._dial(self._peer, peer)
        return peer

    def peer_events(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> Inbox[PeerEvent]:
        self._check_open()
        inbox: Inbox[PeerEvent] = Inbox(queue_size, self._event_inboxes.discard)
        self._event_inboxes.add(inbox)
        return inbox

    def _emit(self, event: PeerEvent) -> None:
        for inbox in list(self._event_inboxes):
            inbox.deliver(event)

    def _close_inboxes(self) -> None:
        for inbox in list(self._event_inboxes):
            inbox.close()
        for subs in list(self._subscriptions.values()):
            for sub in list(subs):
                sub.close()

    # --- request / response ------------------------------------------------------------

    def set_handler(
        self,
        protocol_id: str,
        handler: RequestHandler,
        *,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        self._check_open()
        check_protocol_id(protocol_id)
        self._handlers[protocol_id] = HandlerEntry(handler, check_frame_limit(max_request_bytes))

    def remove_handler(self, protocol_id: str) -> None:
        self._handlers.pop(protocol_id, None)

    async def request(
        self,
        peer: PeerKey,
        protocol_id: str,
        data: bytes,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> bytes:
        self._check_open()
        check_protocol_id(protocol_id)
        check_frame_limit(max_response_bytes)
        if len(data) > MAX_FRAME_BYTES:
            raise MessageTooLarge(f"request of {len(data)} bytes is over {MAX_FRAME_BYTES}")
        hub = self._hub
        request_lost, response_lost = hub._lost(), hub._lost()
        delay_in, delay_out = hub._delay(), hub._delay()
        with trio.move_on_after(timeout):
            target = hub._dial(self._peer, peer)
            if request_lost:
                await trio.sleep_forever()
            send, receive = trio.open_memory_channel[bytes | NetworkError](1)
            target._nursery.start_soon(
                target._serve, self._peer, protocol_id, bytes(data), send, delay_in, delay_out
            )
            async with receive:
                try:
                    outcome = await receive.receive()
                except trio.EndOfChannel:
                    raise PeerUnreachable(
                        f"peer {protocol.peer_id(peer)} left before answering"
                    ) from None
            if response_lost:
                await trio.sleep_forever()
            if isinstance(outcome, NetworkError):
                raise outcome
            if len(outcome) > max_response_bytes:
                raise MessageTooLarge(
                    f"response of {len(outcome)} bytes is over the limit of {max_response_bytes}"
                )
            return outcome
        raise NetworkTimeout(
            f"no answer from {protocol.peer_id(peer)} on {protocol_id} within {timeout:g} s"
        )

    async def _serve(
        self,
        sender: PeerKey,
        protocol_id: str,
        data: bytes,
        send: trio.MemorySendChannel[bytes | NetworkError],
        delay_in: float,
        delay_out: float,
    ) -> None:
        async with send:
            await trio.sleep(delay_in)
            outcome = await self._answer(sender, protocol_id, data)
            await trio.sleep(delay_out)
            # the requester may have given up (timeout, cancellation) meanwhile
            with contextlib.suppress(trio.BrokenResourceError):
                send.send_nowait(outcome)

    async def _answer(self, sender: PeerKey, protocol_id: str, data: bytes) -> bytes | NetworkError:
        entry = self._handlers.get(protocol_id)
        status, body = await answer(entry, sender, protocol_id, data, self._counters, log)
        return body if status == STATUS_OK else error_for(status, body)

    # --- publish / subscribe -----------------------------------------------------------

    async def publish(self, topic: str, data: bytes) -> None:
        self._check_open()
        check_topic(topic)
        if len(data) > MAX_PUBSUB_BYTES:
            raise MessageTooLarge(f"pubsub message of {len(data)} bytes is over {MAX_PUBSUB_BYTES}")
        message = PubsubMessage(topic, self._peer, bytes(data))
        hub = self._hub
        for peer in sorted(hub._nodes):
            node = hub._nodes[peer]
            if peer == self._peer or not node._subscriptions.get(topic):
                continue
            if not hub.can_reach(self._peer, peer):
                continue
            delay, lost = hub._delay(), hub._lost()
            if not lost:
                node._nursery.start_soon(node._deliver_later, delay, message)
        await trio.lowlevel.checkpoint()

    async def _deliver_later(self, delay: float, message: PubsubMessage) -> None:
        await trio.sleep(delay)
        for inbox in list(self._subscriptions.get(message.topic, ())):
            if not inbox.deliver(message):
                self._counters.pubsub_dropped += 1

    def subscribe(
        self, topic: str, *, queue_size: int = DEFAULT_QUEUE_SIZE
    ) -> Inbox[PubsubMessage]:
        self._check_open()
        check_topic(topic)

        def forget(inbox: Inbox[PubsubMessage]) -> None:
            subs = self._subscriptions.get(topic)
            if subs is not None:
                subs.discard(inbox)
                if not subs:
                    del self._subscriptions[topic]

        inbox: Inbox[PubsubMessage] = Inbox(queue_size, forget)
        self._subscriptions.setdefault(topic, set()).add(inbox)
        return inbox

    # --- capability records ------------------------------------------------------------

    async def advertise(self, record: Signed[Advert], *, renew: RenewRecord | None = None) -> None:
        self._check_open()
        check_own_record(record, self._peer, self.chain_id, self._hub.now_ms())
        self._hub._records[self._peer] = record
        if self._refresh_scope is not None:
            self._refresh_scope.cancel()
            self._refresh_scope = None
        if renew is not None:
            scope = trio.CancelScope()
            self._refresh_scope = scope
            self._nursery.start_soon(self._refresh, record, renew, scope)
        await trio.sleep(self._hub._delay())

    async def _refresh(self, record: Signed[Advert], renew: RenewRecord, scope: Any) -> None:
        with scope:
            while True:
                due_ms = record.message.expires_ms - REFRESH_MARGIN_MS
                await trio.sleep(max(0, due_ms - self._hub.now_ms()) / 1000)
                try:
                    new = renew()
                    check_own_record(new, self._peer, self.chain_id, self._hub.now_ms())
                except (RecordError, protocol.ProtocolError) as exc:
                    log.error("could not renew the capability record: %s", exc)
                    return
                self._hub._records[self._peer] = new
                self._counters.records_refreshed += 1
                record = new

    async def find_providers(
        self,
        capability_class: str,
        *,
        limit: int = DEFAULT_FIND_LIMIT,
        timeout: float = DEFAULT_FIND_TIMEOUT,
    ) -> list[Signed[Advert]]:
        self._check_open()
        hub = self._hub
        with trio.move_on_after(timeout):
            await trio.sleep(hub._delay() * 2)
        found: list[Signed[Advert]] = []
        now = hub.now_ms()
        for peer in sorted(hub._records):
            if peer != self._peer and not hub.can_reach(self._peer, peer):
                continue
            rec = verify_record(hub._records[peer].raw, self.chain_id, capability_class, now)
            if rec is not None:
                found.append(rec)
        return best_per_peer(found, limit)


def _conforms(net: MemoryNetwork) -> Network:
    """Type check only: MemoryNetwork implements the Network interface."""
    return net
