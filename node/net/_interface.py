"""The network as the rest of the node sees it: one small interface, two implementations.

:class:`Network` is implemented by :mod:`node.net.libp2p_host` (py-libp2p, real networks)
and :mod:`node.net.memory` (in memory, for tests and the simulator); one conformance suite
(tests/node/net/test_conformance.py) runs against both. No libp2p type appears here.

Peers are named by their 32-byte Ed25519 public key, the same bytes as their ledger account.
Times given to the network (timeouts) are seconds of the trio clock, so they follow a
``trio.testing.MockClock``; record expiry is judged in integer milliseconds from the
implementation's ``now_ms`` clock.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from protocol import Advert, Signed

from ._inbox import Inbox
from ._limits import (
    DEFAULT_FIND_LIMIT,
    DEFAULT_FIND_TIMEOUT,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SMALL_REQUEST_BYTES,
)

PeerKey = bytes
"""A peer's 32-byte Ed25519 public key (its ledger account)."""

RequestHandler = Callable[[PeerKey, bytes], Awaitable[bytes]]
"""``async def handler(peer, request) -> response``. Raise :class:`RequestRejected` to answer
with an error; any other exception is answered with a generic error, logged and counted."""

RenewRecord = Callable[[], Signed[Advert]]
"""Called shortly before an advertised record expires; returns its successor (higher seq)."""


class Reachability(enum.Enum):
    """Whether other peers can dial this node directly."""

    UNKNOWN = "unknown"
    PUBLIC = "public"  #: dialable at its own addresses
    PRIVATE = "private"  #: not dialable directly; reachable through a relay if it has one


@dataclass(frozen=True, slots=True)
class PubsubMessage:
    """A message received on a topic. ``sender`` is the publishing peer's key, as
    authenticated by the transport (GossipSub's signed messages, or the in-memory hub)."""

    topic: str
    sender: PeerKey
    data: bytes


@dataclass(frozen=True, slots=True)
class PeerEvent:
    """A connection to ``peer`` opened (``connected``) or closed (not ``connected``)."""

    peer: PeerKey
    connected: bool


@dataclass(slots=True)
class NetworkCounters:
    """What the network rejected or dropped. One instance per network: no global state."""

    requests_served: int = 0
    requests_rejected: int = 0  #: malformed, oversized, half or stalled request frames
    handler_errors: int = 0  #: handlers that raised something other than RequestRejected
    pubsub_dropped: int = 0  #: messages dropped: full subscriber queue or invalid payload
    records_rejected: int = 0  #: records that failed verification, fetched or sent to us
    records_refreshed: int = 0  #: records re-announced before expiry
    pubsub_repaired: int = 0  #: pubsub peers re-registered after their stream died (libp2p)
    refused_banned: int = 0  #: requests, streams and messages refused from banned peers
    bans: int = 0  #: bans imposed


class Network(Protocol):
    """One node's view of the network. Obtained from an implementation's async context
    manager (``open_libp2p_network``, ``MemoryHub.open``); unusable after it exits."""

    @property
    def local_peer(self) -> PeerKey:
        """This node's public key."""
        ...

    @property
    def chain_id(self) -> str:
        """The chain whose signed records this network accepts."""
        ...

    @property
    def counters(self) -> NetworkCounters:
        """Rejections and drops so far."""
        ...

    def addresses(self) -> tuple[str, ...]:
        """Multiaddresses (with ``/p2p/<peer id>``) at which others can reach this node,
        relay addresses included."""
        ...

    def reachability(self) -> Reachability:
        """Whether others can dial this node directly."""
        ...

    def relays(self) -> tuple[PeerKey, ...]:
        """The relays at which this node holds a reservation now (others reach it through
        them); empty when it holds none."""
        ...

    def relayed_peers(self) -> frozenset[PeerKey]:
        """Connected peers reached only through a relay (no direct connection yet)."""
        ...

    def connected_peers(self) -> frozenset[PeerKey]:
        """Peers with an open connection now."""
        ...

    async def connect(self, address: str) -> PeerKey:
        """Dial a multiaddress ending in ``/p2p/<peer id>``; returns the peer's key.

        Raises :class:`PeerUnreachable`, :class:`NetworkTimeout` or :class:`NetworkError`
        for an address that cannot be parsed.
        """
        ...

    def peer_events(self, *, queue_size: int = ...) -> Inbox[PeerEvent]:
        """A stream of connect/disconnect events from now on."""
        ...

    # --- misbehaving peers -------------------------------------------------------------

    #: Called with ``(peer, reason)`` when a peer's bytes broke a protocol below the
    #: node's own handlers (a garbage frame on pubsub, the DHT, identify, ...).
    on_misbehaved: list[Callable[[PeerKey, str], None]]

    def ban(self, peer: PeerKey, seconds: float) -> None:
        """Disconnect ``peer`` and refuse it for ``seconds`` of trio's clock: its requests,
        streams and pubsub messages are refused, and requests to it raise
        :class:`PeerBanned` without dialling. At most ``MAX_BANS`` at once."""
        ...

    def unban(self, peer: PeerKey) -> None:
        """End ``peer``'s ban now."""
        ...

    def is_banned(self, peer: PeerKey) -> bool:
        """Whether ``peer`` is banned now."""
        ...

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
        """Serve requests on ``protocol_id`` (e.g. ``/aimx/bid/1``), replacing any handler.
        Requests larger than ``max_request_bytes`` are refused without calling it; with
        ``large_from``, so are those larger than ``small_request_bytes`` from a peer for
        which ``large_from(peer)`` is false. Either is refused from its length, before its
        bytes are read: large requests only from the peers that may send one (a stranger's
        4 MiB market frames were held whole: round 40, F1)."""
        ...

    def remove_handler(self, protocol_id: str) -> None:
        """Stop serving ``protocol_id``; later requests get :class:`ProtocolNotSupported`."""
        ...

    async def request(
        self,
        peer: PeerKey,
        protocol_id: str,
        data: bytes,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> bytes:
        """Send one request frame and wait for the one response frame.

        Raises :class:`MessageTooLarge` (request over our cap or the peer's limit, or a
        response over ``max_response_bytes``), :class:`NetworkTimeout`,
        :class:`PeerUnreachable` (nothing went out; :class:`PeerBusy` when the peer ran
        none of it, every try refused for want of a slot), :class:`AnswerLost` (it went out
        and the stream ended before its answer: it may have been run),
        :class:`ProtocolNotSupported` or :class:`RemoteError` (the peer's own error answer,
        or bytes that are no answer).
        """
        ...

    # --- publish / subscribe -----------------------------------------------------------

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish ``data`` (at most ``MAX_PUBSUB_BYTES``) to every other subscriber.
        Best effort: nothing may depend on one message arriving. The publisher does not
        receive its own messages."""
        ...

    def subscribe(self, topic: str, *, queue_size: int = ...) -> Inbox[PubsubMessage]:
        """Receive what others publish on ``topic`` from now on, until the inbox is closed."""
        ...

    # --- capability records ------------------------------------------------------------

    async def advertise(self, record: Signed[Advert], *, renew: RenewRecord | None = None) -> None:
        """Publish this node's signed capability record under its key, and provider records
        under each of its ``capability_classes``. Replaces the previous record. The network
        keeps it announced while it is open; if ``renew`` is given it is called
        ``REFRESH_MARGIN_MS`` before ``expires_ms`` for the next record.

        Raises :class:`RecordError` if the record is not signed by this node for this
        chain, is expired, or names no class.
        """
        ...

    async def find_providers(
        self,
        capability_class: str,
        *,
        limit: int = DEFAULT_FIND_LIMIT,
        timeout: float = DEFAULT_FIND_TIMEOUT,
    ) -> list[Signed[Advert]]:
        """Verified, unexpired records of peers serving ``capability_class``, at most one
        per peer (the highest ``seq``), at most ``limit``, this node's own included. Records
        that fail verification are dropped and counted. Returns what was found when
        ``timeout`` runs out (possibly nothing); never raises for a failed lookup."""
        ...
