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

import nacl.signing
import trio

import protocol
from protocol import Advert, Signed

from ._base import NetworkBase
from ._errors import (
    MessageTooLarge,
    NetworkError,
    NetworkTimeout,
    PeerUnreachable,
)
from ._framing import STATUS_OK
from ._interface import (
    Network,
    PeerEvent,
    PeerKey,
    PubsubMessage,
    Reachability,
    RenewRecord,
)
from ._limits import REFRESH_MARGIN_MS
from ._records import best_per_peer, renewed_record, verify_record
from ._serving import error_for

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
            for other in list(node._connected):
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
        if na is None or nb is None or b in na._connected:
            return
        na._connected.add(b)
        nb._connected.add(a)
        na._emit(PeerEvent(b, True))
        nb._emit(PeerEvent(a, True))

    def _unlink(self, a: PeerKey, b: PeerKey) -> None:
        for x, y in ((a, b), (b, a)):
            node = self._nodes.get(x)
            if node is not None and y in node._connected:
                node._connected.discard(y)
                node._emit(PeerEvent(y, False))

    def _dial(self, source: PeerKey, target: PeerKey) -> MemoryNetwork:
        node = self._nodes.get(target)
        if node is None or node._closed:
            raise PeerUnreachable(f"peer {protocol.peer_id(target)} is not on the network")
        if not self.can_reach(source, target):
            raise PeerUnreachable(f"peer {protocol.peer_id(target)} is unreachable (partition)")
        if (
            node._reachability is Reachability.PRIVATE
            and source not in node._connected
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

    def joined(self, peer: PeerKey) -> bool:
        """Whether ``peer`` is on the hub now (a node leaves once its ``open`` has exited)."""
        return peer in self._nodes

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
                for other in list(net._connected):
                    self._unlink(peer, other)
                del self._nodes[peer]
                net._close_inboxes()
                nursery.cancel_scope.cancel()


class MemoryNetwork(NetworkBase):
    """One node on a :class:`MemoryHub`; implements :class:`node.net.Network`."""

    def __init__(
        self,
        hub: MemoryHub,
        peer: PeerKey,
        nursery: trio.Nursery,
        reachability: Reachability,
    ) -> None:
        super().__init__(peer, hub.chain_id, reachability, log)
        self._hub = hub
        self._nursery = nursery
        self._refresh_scope: trio.CancelScope | None = None

    def _now_ms(self) -> int:
        return self._hub.now_ms()

    def _disconnect(self, peer: PeerKey) -> None:
        self._hub._unlink(self._peer, peer)

    def addresses(self) -> tuple[str, ...]:
        return (_ADDRESS_PREFIX + protocol.peer_id(self._peer),)

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

    # --- request / response ------------------------------------------------------------

    async def _request(
        self, peer: PeerKey, protocol_id: str, data: bytes, timeout: float, max_response: int
    ) -> bytes:
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
            if len(outcome) > max_response:
                raise MessageTooLarge(
                    f"response of {len(outcome)} bytes is over the limit of {max_response}"
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
        status, body = await self._handle(sender, protocol_id, data)
        return body if status == STATUS_OK else error_for(status, body)

    # --- publish / subscribe -----------------------------------------------------------

    async def _publish(self, topic: str, data: bytes) -> None:
        message = PubsubMessage(topic, self._peer, data)
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
        self._deliver(message)

    # --- capability records ------------------------------------------------------------

    async def _advertise(self, record: Signed[Advert], renew: RenewRecord | None) -> None:
        self._hub._records[self._peer] = record
        if self._refresh_scope is not None:
            self._refresh_scope.cancel()
            self._refresh_scope = None
        if renew is not None:
            scope = trio.CancelScope()
            self._refresh_scope = scope
            self._nursery.start_soon(self._refresh, record, renew, scope)
        await trio.sleep(self._hub._delay())

    async def _refresh(
        self, record: Signed[Advert], renew: RenewRecord, scope: trio.CancelScope
    ) -> None:
        with scope:
            while True:
                due_ms = record.message.expires_ms - REFRESH_MARGIN_MS
                await trio.sleep(max(0, due_ms - self._hub.now_ms()) / 1000)
                new = renewed_record(renew, self._peer, self.chain_id, self._hub.now_ms, log)
                if new is None:
                    return
                self._hub._records[self._peer] = new
                self._counters.records_refreshed += 1
                record = new

    async def _find_providers(
        self, capability_class: str, limit: int, timeout: float
    ) -> list[Signed[Advert]]:
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
