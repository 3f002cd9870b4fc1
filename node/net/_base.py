"""What every network implementation does the same way, above its transport.

:class:`NetworkBase` holds a node's side of the :class:`node.net.Network` interface that
does not depend on how bytes travel: identity and counters, the open/closed state,
connect/disconnect events, the table of request handlers, the checks on every request,
publication and advertised record (:mod:`._limits`, :mod:`._records`), subscribers and
delivery to them. An implementation (:mod:`.memory`, :mod:`.libp2p_host`) subclasses it and
supplies the transport: the abstract methods below, and the hooks for handlers and topics
that come and go.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable

import trio

from protocol import Advert, Signed

from ._errors import MessageTooLarge, NetworkClosed, PeerBanned
from ._framing import STATUS_ERROR
from ._inbox import Inbox
from ._interface import (
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
    DEFAULT_SMALL_REQUEST_BYTES,
    MAX_BANS,
    MAX_FRAME_BYTES,
    MAX_INBOUND_PER_PEER,
    MAX_PUBSUB_BYTES,
    check_frame_limit,
    check_protocol_id,
    check_topic,
)
from ._records import check_own_record
from ._serving import HandlerEntry, answer


class NetworkBase(abc.ABC):
    """One node's network, less its transport. ``log`` is the implementation's logger."""

    def __init__(
        self, peer: PeerKey, chain_id: str, reachability: Reachability, log: logging.Logger
    ) -> None:
        self._peer = peer
        self._chain_id = chain_id
        self._reachability = reachability
        self._log = log
        self._counters = NetworkCounters()
        self._closed = False
        self._connected: set[PeerKey] = set()
        self._handlers: dict[str, HandlerEntry] = {}
        self._subscriptions: dict[str, set[Inbox[PubsubMessage]]] = {}
        self._event_inboxes: set[Inbox[PeerEvent]] = set()
        #: Banned peers, with the end of each ban (trio seconds).
        self._bans: dict[PeerKey, float] = {}
        self._inbound: dict[PeerKey, int] = {}
        #: Called with ``(peer, reason)`` when a peer's bytes broke a protocol below the
        #: node's handlers (a garbage frame on pubsub, the DHT, identify...).
        self.on_misbehaved: list[Callable[[PeerKey, str], None]] = []

    # --- what an implementation supplies -------------------------------------------------

    @abc.abstractmethod
    def _now_ms(self) -> int:
        """The clock records expire by, in ms."""

    @abc.abstractmethod
    def addresses(self) -> tuple[str, ...]: ...

    @abc.abstractmethod
    async def connect(self, address: str) -> PeerKey: ...

    @abc.abstractmethod
    async def _request(
        self, peer: PeerKey, protocol_id: str, data: bytes, timeout: float, max_response: int
    ) -> bytes:
        """Send a checked request (open network, valid protocol id and limits)."""

    @abc.abstractmethod
    async def _publish(self, topic: str, data: bytes) -> None:
        """Publish a checked message (open network, valid topic, within the size)."""

    @abc.abstractmethod
    async def _advertise(self, record: Signed[Advert], renew: RenewRecord | None) -> None:
        """Announce a checked record of our own."""

    @abc.abstractmethod
    async def _find_providers(
        self, capability_class: str, limit: int, timeout: float
    ) -> list[Signed[Advert]]: ...

    # Hooks an implementation may override: they do nothing by default.

    def _serve_protocol(self, protocol_id: str) -> None:  # noqa: B027
        """Called when ``protocol_id`` gets its first handler."""

    def _stop_serving(self, protocol_id: str) -> None:  # noqa: B027
        """Called when ``protocol_id``'s handler is removed."""

    def _topic_added(self, topic: str) -> None:  # noqa: B027
        """Called on each new subscription to ``topic``."""

    def _topic_dropped(self, topic: str) -> None:  # noqa: B027
        """Called when the last subscription to ``topic`` closes."""

    # --- identity ------------------------------------------------------------------------

    @property
    def local_peer(self) -> PeerKey:
        return self._peer

    @property
    def chain_id(self) -> str:
        return self._chain_id

    @property
    def counters(self) -> NetworkCounters:
        return self._counters

    def reachability(self) -> Reachability:
        return self._reachability

    def relays(self) -> tuple[PeerKey, ...]:
        return ()

    def relayed_peers(self) -> frozenset[PeerKey]:
        return frozenset()

    def connected_peers(self) -> frozenset[PeerKey]:
        return frozenset(self._connected)

    def _check_open(self) -> None:
        if self._closed:
            raise NetworkClosed("this network is closed: open a new one")

    # --- misbehaving peers ---------------------------------------------------------------

    def ban(self, peer: PeerKey, seconds: float) -> None:
        """Disconnect ``peer`` and refuse it for ``seconds`` (of trio's clock): its
        requests, streams and pubsub messages are refused, and it is not dialled."""
        if peer == self._peer:
            return
        until = trio.current_time() + seconds
        if peer not in self._bans and len(self._bans) >= MAX_BANS:
            del self._bans[min(self._bans, key=self._bans.__getitem__)]
        self._bans[peer] = max(until, self._bans.get(peer, until))
        self._counters.bans += 1
        self._disconnect(peer)

    def unban(self, peer: PeerKey) -> None:
        self._bans.pop(peer, None)

    def is_banned(self, peer: PeerKey) -> bool:
        until = self._bans.get(peer)
        if until is None:
            return False
        if trio.current_time() >= until:
            del self._bans[peer]
            return False
        return True

    def _disconnect(self, peer: PeerKey) -> None:  # noqa: B027
        """Close every connection to ``peer`` (a ban); the implementation's part."""

    def _peer_misbehaved(self, peer: PeerKey, reason: str) -> None:
        for callback in list(self.on_misbehaved):
            callback(peer, reason)

    # --- connection events ---------------------------------------------------------------

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
        large_from: Callable[[PeerKey], bool] | None = None,
        small_request_bytes: int = DEFAULT_SMALL_REQUEST_BYTES,
    ) -> None:
        self._check_open()
        check_protocol_id(protocol_id)
        entry = HandlerEntry(
            handler,
            check_frame_limit(max_request_bytes),
            large_from,
            check_frame_limit(small_request_bytes),
        )
        fresh = protocol_id not in self._handlers
        self._handlers[protocol_id] = entry
        if fresh:
            self._serve_protocol(protocol_id)

    def remove_handler(self, protocol_id: str) -> None:
        if self._handlers.pop(protocol_id, None) is not None:
            self._stop_serving(protocol_id)

    async def _handle(self, sender: PeerKey, protocol_id: str, data: bytes) -> tuple[int, bytes]:
        """Answer a request that reached us: ``(status, body)`` (see :func:`answer`)."""
        if self.is_banned(sender):
            self._counters.refused_banned += 1
            return STATUS_ERROR, b"refused: this peer is banned here for misbehaving"
        if self._inbound.get(sender, 0) >= MAX_INBOUND_PER_PEER:
            self._counters.requests_rejected += 1
            return STATUS_ERROR, b"refused: too many requests in flight from this peer"
        self._inbound[sender] = self._inbound.get(sender, 0) + 1
        try:
            entry = self._handlers.get(protocol_id)
            return await answer(entry, sender, protocol_id, data, self._counters, self._log)
        finally:
            left = self._inbound[sender] - 1
            if left:
                self._inbound[sender] = left
            else:
                del self._inbound[sender]

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
        if self.is_banned(peer):
            raise PeerBanned("this peer is banned here for misbehaving: not dialled")
        return await self._request(peer, protocol_id, data, timeout, max_response_bytes)

    # --- publish / subscribe -----------------------------------------------------------

    async def publish(self, topic: str, data: bytes) -> None:
        self._check_open()
        check_topic(topic)
        if len(data) > MAX_PUBSUB_BYTES:
            raise MessageTooLarge(f"pubsub message of {len(data)} bytes is over {MAX_PUBSUB_BYTES}")
        await self._publish(topic, bytes(data))

    def subscribe(
        self, topic: str, *, queue_size: int = DEFAULT_QUEUE_SIZE
    ) -> Inbox[PubsubMessage]:
        self._check_open()
        check_topic(topic)

        def forget(inbox: Inbox[PubsubMessage]) -> None:
            subs = self._subscriptions.get(topic)
            if subs is None:
                return
            subs.discard(inbox)
            if not subs:
                del self._subscriptions[topic]
                self._topic_dropped(topic)

        inbox: Inbox[PubsubMessage] = Inbox(queue_size, forget)
        self._subscriptions.setdefault(topic, set()).add(inbox)
        self._topic_added(topic)
        return inbox

    def _has_subscribers(self, topic: str) -> bool:
        return bool(self._subscriptions.get(topic))

    def _deliver(self, message: PubsubMessage) -> None:
        """Hand a received message to every subscriber of its topic; count the drops."""
        if self.is_banned(message.sender):
            self._counters.refused_banned += 1
            return
        for inbox in list(self._subscriptions.get(message.topic, ())):
            if not inbox.deliver(message):
                self._counters.pubsub_dropped += 1

    # --- capability records ------------------------------------------------------------

    async def advertise(self, record: Signed[Advert], *, renew: RenewRecord | None = None) -> None:
        self._check_open()
        check_own_record(record, self._peer, self._chain_id, self._now_ms())
        await self._advertise(record, renew)

    async def find_providers(
        self,
        capability_class: str,
        *,
        limit: int = DEFAULT_FIND_LIMIT,
        timeout: float = DEFAULT_FIND_TIMEOUT,
    ) -> list[Signed[Advert]]:
        self._check_open()
        return await self._find_providers(capability_class, limit, timeout)
