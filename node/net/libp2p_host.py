"""The network over py-libp2p 0.8.1: TCP, Noise, Yamux, Kademlia, GossipSub, circuit relay v2.

``open_libp2p_network(signing_key, Libp2pConfig(...))`` is an async context manager that
yields a :class:`Libp2pNetwork` (the :class:`node.net.Network` interface). Nothing of
libp2p leaks through it. The workarounds for the defects measured in DESIGN.md:

- Noise is the only security transport (the default also accepts plaintext, which lets a
  peer claim any peer id); Yamux the only muxer.
- every stream handler, ours and libp2p's relay handlers, is wrapped: an exception never
  escapes into the host; bad frames are counted in :attr:`Libp2pNetwork.counters`.
- at most one connection per peer, which also ends the swarm's 250 ms happy-eyeballs wait
  as soon as the first dial succeeds.
- the DHT's routing table is filled from connections (``add_peer``); provider lookups are
  deduplicated by peer and every record is verified.
- GossipSub's heartbeat and spam limits are set for this workload (:class:`GossipConfig`).
- shutdown: our tasks, then pubsub (``seen_messages.stop()``), DHT, relay, then
  ``host.close()``.
- py-libp2p's logs go through ours (:func:`route_libp2p_logs`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import multiaddr
import nacl.signing
import trio
from libp2p import new_host
from libp2p.abc import INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.common import ALPHA
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.utils import sort_peer_ids_by_distance
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.net_stream import StreamState
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.records.validator import Validator
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as CircuitPeer
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.protocol import STOP_PROTOCOL_ID, CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

import protocol
from protocol import Advert, Signed

from ._errors import (
    MessageTooLarge,
    NetworkClosed,
    NetworkError,
    NetworkTimeout,
    PeerUnreachable,
    ProtocolNotSupported,
    RecordError,
    RemoteError,
)
from ._framing import (
    STATUS_OK,
    STATUS_TOO_LARGE,
    EndOfStream,
    FrameReader,
    MalformedFrame,
    request_frame,
    response_frame,
)
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
from ._libp2p_logging import route_libp2p_logs
from ._libp2p_tuning import install as install_libp2p_tuning
from ._limits import (
    DEFAULT_FIND_LIMIT,
    DEFAULT_FIND_TIMEOUT,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_REQUEST_TIMEOUT,
    LOOKUP_SHARE,
    MAX_FRAME_BYTES,
    MAX_PUBSUB_BYTES,
    REFRESH_MARGIN_MS,
    check_frame_limit,
    check_protocol_id,
    check_topic,
)
from ._records import best_per_peer, check_own_record, verify_record
from ._serving import HandlerEntry, answer, error_for

__all__ = ["GossipConfig", "Libp2pConfig", "Libp2pNetwork", "open_libp2p_network"]

log = logging.getLogger("node.net.libp2p_host")

#: Our own record, served to peers that ask for it directly (specs/network.md).
RECORD_PROTOCOL = "/aimx/record/1"
#: DHT namespace of capability records: ``/aimx/<peer id>``.
DHT_NAMESPACE = "aimx"
_POOL_PER_KEY = 8
_DEAD_STREAM_STATES = (
    StreamState.ERROR,
    StreamState.RESET,
    StreamState.CLOSE_WRITE,
    StreamState.CLOSE_BOTH,
)
_MAX_CACHED_RECORDS = 4096
MAX_CONNECTIONS_PER_PEER = 1


def wall_ms() -> int:
    return math.floor(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """GossipSub parameters for this workload (specs/network.md, "Pubsub")."""

    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    heartbeat_interval: int = 1
    heartbeat_initial_delay: float = 0.1
    #: py-libp2p drops messages above this rate per peer and topic (its default is 10).
    max_messages_per_topic_per_second: float = 200.0
    time_to_live: int = 60
    gossip_window: int = 3
    gossip_history: int = 5
    seen_ttl: int = 120
    max_inbound_rpc_bytes: int = 1 << 20
    max_pending_messages_per_peer: int = 1000


@dataclass(frozen=True, slots=True)
class Libp2pConfig:
    """How a libp2p node listens, whom it bootstraps from, and its limits."""

    chain_id: str
    listen: tuple[str, ...] = ("/ip4/0.0.0.0/tcp/4001",)
    #: Coordinator addresses (``.../p2p/<peer id>``) to connect to at start.
    bootstrap: tuple[str, ...] = ()
    #: Act as a circuit relay v2 (hop) for other nodes: coordinators do.
    relay_service: bool = False
    #: What the node was told about itself. ``PRIVATE``: take a relay reservation.
    reachability: Reachability = Reachability.UNKNOWN
    #: Relays to reserve at when private; ``None`` means the bootstrap peers.
    relays: tuple[str, ...] | None = None
    enable_mdns: bool = False
    gossip: GossipConfig = field(default_factory=GossipConfig)
    dial_timeout: float = 5.0
    #: A started frame must be complete within this; a stalled stream is reset.
    frame_timeout: float = 10.0
    #: An inbound request stream idle this long is closed.
    stream_idle_timeout: float = 60.0
    max_inbound_streams: int = 256
    #: Re-announce the record and provider records this often.
    republish_interval: float = 600.0
    #: Retry bootstrap this often while no peer is connected.
    bootstrap_retry_interval: float = 30.0
    libp2p_log_level: int = logging.WARNING
    now_ms: Callable[[], int] = wall_ms


def _peer_id_of(key: PeerKey) -> ID:
    return ID.from_base58(protocol.peer_id(key))


def _key_of(peer: ID) -> PeerKey | None:
    """Our key for a libp2p peer id; None for peers whose key is not Ed25519."""
    try:
        return protocol.public_key_of(peer.to_base58())
    except (protocol.ProtocolError, ValueError):
        return None


def provider_key(chain_id: str, capability_class: str) -> str:
    """The DHT provider key of a class: the hex sha2-256 multihash of
    ``aimx/<chain>/class/<class>``."""
    digest = hashlib.sha256(f"aimx/{chain_id}/class/{capability_class}".encode()).digest()
    return (bytes([0x12, 0x20]) + digest).hex()


def record_key(peer: PeerKey) -> str:
    """The DHT key of a node's capability record: ``/aimx/<peer id>``."""
    return f"/{DHT_NAMESPACE}/{protocol.peer_id(peer)}"


class _AdvertValidator(Validator):
    """DHT validator for ``/aimx/<peer id>``: a valid Advert signed by that peer; the
    higher ``seq`` wins."""

    def __init__(self, chain_id: str, now_ms: Callable[[], int]) -> None:
        self.chain_id = chain_id
        self.now_ms = now_ms

    def _decode(self, key: str, value: bytes) -> Signed[Advert]:
        record = verify_record(value, self.chain_id, None, self.now_ms())
        if record is None:
            raise ValueError("not a valid, unexpired capability record")
        if key != record_key(record.signer):
            raise ValueError("capability record stored under another peer's key")
        return record

    def validate(self, key: str, value: bytes) -> None:
        self._decode(key, value)

    def select(self, key: str, values: list[bytes]) -> int:
        best, best_seq = 0, -1
        for i, value in enumerate(values):
            try:
                seq = self._decode(key, value).message.seq
            except ValueError:
                continue
            if seq > best_seq:
                best, best_seq = i, seq
        return best


class _Notifee(INotifee):
    def __init__(self, net: Libp2pNetwork) -> None:
        self.net = net

    async def opened_stream(self, network: Any, stream: Any) -> None:
        pass

    async def closed_stream(self, network: Any, stream: Any) -> None:
        pass

    async def connected(self, network: Any, conn: Any) -> None:
        self.net._on_connected(conn.muxed_conn.peer_id)

    async def disconnected(self, network: Any, conn: Any) -> None:
        self.net._on_disconnected(conn.muxed_conn.peer_id, conn)

    async def listen(self, network: Any, multiaddr: Any) -> None:
        pass

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        pass


@dataclass(slots=True)
class _Pooled:
    stream: Any
    reader: FrameReader


async def _reset(stream: Any) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
        await stream.reset()


def _parse_multiaddr(text: str) -> multiaddr.Multiaddr:
    try:
        return multiaddr.Multiaddr(text)
    except Exception as exc:
        raise NetworkError(f"cannot parse multiaddress {text!r}: {exc}") from None


def _info_of(address: str) -> tuple[PeerInfo, bool]:
    """PeerInfo of ``.../p2p/<id>`` and whether it is a relay (p2p-circuit) address."""
    maddr = _parse_multiaddr(address)
    text = str(maddr)
    if "/p2p/" not in text:
        raise NetworkError(f"address {address!r} must end in /p2p/<peer id>")
    head, _, peer_text = text.rpartition("/p2p/")
    try:
        peer = ID.from_base58(peer_text)
    except Exception:
        raise NetworkError(f"bad peer id in {address!r}") from None
    if _key_of(peer) is None:
        raise NetworkError(f"{address!r} is not an Ed25519 peer id")
    circuit = "/p2p-circuit" in text
    addr = maddr if circuit else multiaddr.Multiaddr(head) if head else None
    return PeerInfo(peer, [addr] if addr is not None else []), circuit


class Libp2pNetwork:
    """One node on a libp2p network; implements :class:`node.net.Network`."""

    def __init__(self, host: Any, key: nacl.signing.SigningKey, config: Libp2pConfig) -> None:
        self._host = host
        self._peer = bytes(key.verify_key)
        self._config = config
        self._counters = NetworkCounters()
        self._closed = False
        self._nursery: trio.Nursery | None = None
        self._handlers: dict[str, HandlerEntry] = {}
        self._pool: dict[tuple[PeerKey, str], list[_Pooled]] = {}
        self._inbound = trio.CapacityLimiter(config.max_inbound_streams)
        self._event_inboxes: set[Inbox[PeerEvent]] = set()
        self._subscriptions: dict[str, set[Inbox[PubsubMessage]]] = {}
        self._pumps: dict[str, trio.CancelScope] = {}
        self._topic_locks: dict[str, trio.Lock] = {}
        self._connected: set[PeerKey] = set()
        self._record: Signed[Advert] | None = None
        self._records: dict[PeerKey, Signed[Advert]] = {}
        self._renew: RenewRecord | None = None
        self._refresh_scope: trio.CancelScope | None = None
        self._relay_addresses: list[str] = []
        self._reachability = config.reachability
        self._validator = _AdvertValidator(config.chain_id, config.now_ms)
        self.dht = KadDHT(host, DHTMode.SERVER, enable_random_walk=False)
        self.dht.register_validator(DHT_NAMESPACE, self._validator)
        g = config.gossip
        self.gossipsub = GossipSub(
            protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11],
            degree=g.degree,
            degree_low=g.degree_low,
            degree_high=g.degree_high,
            time_to_live=g.time_to_live,
            gossip_window=g.gossip_window,
            gossip_history=g.gossip_history,
            heartbeat_initial_delay=g.heartbeat_initial_delay,
            heartbeat_interval=g.heartbeat_interval,
            max_messages_per_topic_per_second=g.max_messages_per_topic_per_second,
            max_pending_messages_per_peer=g.max_pending_messages_per_peer,
        )
        self.pubsub = Pubsub(
            host,
            self.gossipsub,
            seen_ttl=g.seen_ttl,
            max_inbound_rpc_size=g.max_inbound_rpc_bytes,
        )
        limits = RelayLimits(
            duration=3600,
            data=1 << 30,
            max_circuit_conns=64,
            max_reservations=128,
        )
        self.relay = CircuitV2Protocol(host, limits=limits, allow_hop=config.relay_service)
        roles = RelayRole.STOP | RelayRole.CLIENT
        if config.relay_service:
            roles |= RelayRole.HOP
        self.relay_transport = CircuitV2Transport(host, self.relay, RelayConfig(roles=roles))
        host.set_stream_handler(STOP_PROTOCOL_ID, self._guard(self.relay._handle_stop_stream))
        if config.relay_service:
            host.set_stream_handler(HOP_PROTOCOL_ID, self._guard(self.relay._handle_hop_stream))
        host.get_network().register_notifee(_Notifee(self))
        self.set_handler(RECORD_PROTOCOL, self._serve_record, max_request_bytes=64)

    # --- lifecycle -----------------------------------------------------------------------

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        async with (
            background_trio_service(self.pubsub),
            background_trio_service(self.gossipsub),
            background_trio_service(self.dht),
            background_trio_service(self.relay),
            trio.open_nursery() as nursery,
        ):
            self._nursery = nursery
            try:
                with trio.fail_after(10):
                    await self.pubsub.wait_until_ready()
                await self._bootstrap()
                nursery.start_soon(self._bootstrap_loop)
                nursery.start_soon(self._pubsub_repair_loop)
                if self._config.reachability is Reachability.PRIVATE:
                    await self._reserve_relays()
                yield
            finally:
                self._closed = True
                self._close_inboxes()
                nursery.cancel_scope.cancel()
                self.pubsub.seen_messages.stop()
                await self._close_connections()

    async def _close_connections(self) -> None:
        """Close every connection: py-libp2p's shutdown leaves them (and their fds) open."""
        network = self._host.get_network()

        async def close(peer: ID) -> None:
            with contextlib.suppress(Exception):
                await network.close_peer(peer)

        with trio.CancelScope(shield=True), trio.move_on_after(5):
            async with trio.open_nursery() as nursery:
                for peer in list(network.connections):
                    nursery.start_soon(close, peer)

    def _guard(self, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Wrap a libp2p stream handler so that nothing escapes into the host."""

        async def guarded(stream: Any) -> None:
            try:
                await handler(stream)
            except Exception as exc:
                self._counters.requests_rejected += 1
                log.debug("stream handler %s failed: %r", handler.__name__, exc)
                await _reset(stream)

        return guarded

    # --- identity ------------------------------------------------------------------------

    @property
    def local_peer(self) -> PeerKey:
        return self._peer

    @property
    def chain_id(self) -> str:
        return self._config.chain_id

    @property
    def counters(self) -> NetworkCounters:
        return self._counters

    def addresses(self) -> tuple[str, ...]:
        own = protocol.peer_id(self._peer)
        out: list[str] = []
        for addr in self._host.get_addrs():
            text = str(addr)
            if "/p2p/" not in text:
                text = f"{text}/p2p/{own}"
            out.append(text)
        return tuple(out + self._relay_addresses)

    def reachability(self) -> Reachability:
        return self._reachability

    def connected_peers(self) -> frozenset[PeerKey]:
        return frozenset(self._connected)

    def _check_open(self) -> None:
        if self._closed:
            raise NetworkClosed("this network is closed: open a new one")

    # --- connections ---------------------------------------------------------------------

    def _on_connected(self, peer: ID) -> None:
        key = _key_of(peer)
        if key is None or self._closed:
            return
        if self._nursery is not None:
            self._nursery.start_soon(self._add_to_routing_table, peer)
        if key not in self._connected:
            self._connected.add(key)
            self._emit(PeerEvent(key, True))

    def _on_disconnected(self, peer: ID, conn: Any) -> None:
        key = _key_of(peer)
        if key is None:
            return
        with contextlib.suppress(Exception):
            others = [
                c
                for c in self._host.get_network().get_connections(peer)
                if c is not conn and not getattr(c.muxed_conn, "is_closed", False)
            ]
            if others:
                return
        for pk in [k for k in self._pool if k[0] == key]:
            del self._pool[pk]
        if key in self._connected:
            self._connected.discard(key)
            self._emit(PeerEvent(key, False))

    async def _add_to_routing_table(self, peer: ID) -> None:
        """py-libp2p's DHT does not add connected peers itself, and cannot add one before
        identify has stored its listen addresses: retry a few times (bounded)."""
        for delay in (0.0, 0.2, 0.5, 1.0, 2.0, 4.0):
            await trio.sleep(delay)
            if _key_of(peer) not in self._connected:
                return
            with contextlib.suppress(Exception), trio.move_on_after(5):
                if await self.dht.add_peer(peer, skip_server_mode_check=True):
                    return

    def _emit(self, event: PeerEvent) -> None:
        for inbox in list(self._event_inboxes):
            inbox.deliver(event)

    def peer_events(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> Inbox[PeerEvent]:
        self._check_open()
        inbox: Inbox[PeerEvent] = Inbox(queue_size, self._event_inboxes.discard)
        self._event_inboxes.add(inbox)
        return inbox

    def _close_inboxes(self) -> None:
        for inbox in list(self._event_inboxes):
            inbox.close()
        for subs in list(self._subscriptions.values()):
            for sub in list(subs):
                sub.close()

    async def connect(self, address: str) -> PeerKey:
        self._check_open()
        info, circuit = _info_of(address)
        key = _key_of(info.peer_id)
        assert key is not None
        if key == self._peer:
            raise NetworkError("cannot dial ourselves")
        with trio.move_on_after(self._config.dial_timeout):
            await self._dial(info, circuit)
            return key
        raise NetworkTimeout(f"could not connect to {address} in {self._config.dial_timeout:g} s")

    async def _dial(self, info: PeerInfo, circuit: bool) -> None:
        try:
            if circuit:
                await self.relay_transport.dial(info.addrs[0])
            else:
                await self._host.connect(info)
        except trio.Cancelled:
            raise
        except Exception as exc:
            raise PeerUnreachable(f"cannot connect to {info.peer_id}: {exc}") from None

    async def _ensure_connected(self, peer: PeerKey) -> None:
        if peer in self._connected:
            return
        pid = _peer_id_of(peer)
        addrs = list(self._host.get_peerstore().addrs(pid) or [])
        circuit = [a for a in addrs if "/p2p-circuit" in str(a)]
        direct = [a for a in addrs if "/p2p-circuit" not in str(a)]
        if not addrs:
            with contextlib.suppress(Exception), trio.move_on_after(self._config.dial_timeout):
                found = await self.dht.find_peer(pid)
                if found is not None:
                    direct = list(found.addrs)
        if direct:
            try:
                await self._dial(PeerInfo(pid, direct), False)
                return
            except PeerUnreachable:
                if not circuit:
                    raise
        for addr in circuit:
            text = str(addr)
            if "/p2p/" not in text.rpartition("/p2p-circuit")[2]:
                text = f"{text}/p2p/{protocol.peer_id(peer)}"
            with contextlib.suppress(PeerUnreachable):
                await self._dial(PeerInfo(pid, [multiaddr.Multiaddr(text)]), True)
                return
        raise PeerUnreachable(f"no known address of peer {protocol.peer_id(peer)} answers")

    async def _bootstrap(self) -> None:
        async def one(address: str) -> None:
            try:
                await self.connect(address)
            except NetworkError as exc:
                log.warning("bootstrap peer %s: %s", address, exc)

        async with trio.open_nursery() as nursery:
            for address in self._config.bootstrap:
                nursery.start_soon(one, address)

    async def _bootstrap_loop(self) -> None:
        while self._config.bootstrap:
            await trio.sleep(self._config.bootstrap_retry_interval)
            if not self._connected:
                await self._bootstrap()

    async def _pubsub_repair_loop(self) -> None:
        while True:
            await trio.sleep(self._config.gossip.heartbeat_interval)
            self._repair_pubsub()

    def _repair_pubsub(self) -> None:
        """Re-register pubsub peers whose stream died while the peer stayed connected.

        py-libp2p's per-peer sending loop exits silently when a write fails on a connection
        that was closed (simultaneous dials leave duplicates that get trimmed), leaving the
        peer registered with a queue nobody drains: every later message to it is dropped.
        """
        ps = self.pubsub
        network = self._host.get_network()
        for peer, stream in list(ps.peers.items()):
            muxed = getattr(stream, "muxed_conn", None)
            state = getattr(stream, "_state", None)
            live = any(c.muxed_conn is muxed for c in network.get_connections(peer))
            if live and state not in _DEAD_STREAM_STATES:
                continue
            self._counters.pubsub_repaired += 1
            with contextlib.suppress(Exception):
                ps._handle_dead_peer(peer)

    # --- relay ---------------------------------------------------------------------------

    async def _reserve_relays(self) -> None:
        relays = self._config.relays
        if relays is None:
            relays = self._config.bootstrap
        for address in relays:
            try:
                expire = await self._reserve(address)
            except NetworkError as exc:
                log.warning("relay reservation at %s failed: %s", address, exc)
                continue
            own = protocol.peer_id(self._peer)
            self._relay_addresses.append(f"{address}/p2p-circuit/p2p/{own}")
            assert self._nursery is not None
            self._nursery.start_soon(self._keep_reservation, address, expire)

    async def _reserve(self, address: str) -> float:
        """Take a reservation at the relay; returns its expiry (Unix seconds)."""
        info, _ = _info_of(address)
        with trio.move_on_after(self._config.dial_timeout * 2):
            if _key_of(info.peer_id) not in self._connected:
                await self._dial(info, False)
            try:
                stream = await self._host.new_stream(info.peer_id, [HOP_PROTOCOL_ID])
            except Exception as exc:
                raise PeerUnreachable(f"relay {address} does not relay: {exc}") from None
            try:
                request = HopMessage(
                    type=HopMessage.RESERVE,
                    peer=CircuitPeer(id=self._host.get_id().to_bytes()),
                )
                await write_delimited_msg(stream, request)
                response = await read_delimited_msg(stream, HopMessage)
            except Exception as exc:
                raise PeerUnreachable(f"relay {address} reservation failed: {exc}") from None
            finally:
                with contextlib.suppress(Exception):
                    await stream.close()
            if response.type != HopMessage.STATUS or (
                response.HasField("status") and response.status != 100  # OK
            ):
                raise RemoteError(f"relay {address} refused the reservation")
            if response.HasField("reservation") and response.reservation.expire:
                return float(response.reservation.expire)
            return time.time() + 3600
        raise NetworkTimeout(f"relay {address} did not answer the reservation")

    async def _keep_reservation(self, address: str, expire: float) -> None:
        while True:
            await trio.sleep(max(10.0, (expire - time.time()) * 0.75))
            try:
                expire = await self._reserve(address)
            except NetworkError as exc:
                log.warning("relay reservation refresh at %s failed: %s", address, exc)
                expire = time.time() + 40

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
        entry = HandlerEntry(handler, check_frame_limit(max_request_bytes))
        fresh = protocol_id not in self._handlers
        self._handlers[protocol_id] = entry
        if fresh:

            async def stream_handler(stream: Any) -> None:
                await self._serve_stream(protocol_id, stream)

            self._host.set_stream_handler(protocol_id, stream_handler)

    def remove_handler(self, protocol_id: str) -> None:
        if self._handlers.pop(protocol_id, None) is not None:
            with contextlib.suppress(Exception):
                self._host.get_mux().remove_handler(protocol_id)

    async def _serve_stream(self, protocol_id: str, stream: Any) -> None:
        """Serve request frames on one inbound stream until it ends, idles or misbehaves.
        Never raises: this runs inside the host."""
        try:
            self._inbound.acquire_nowait()
        except trio.WouldBlock:
            self._counters.requests_rejected += 1
            await _reset(stream)
            return
        try:
            sender = _key_of(stream.muxed_conn.peer_id)
            if sender is None:
                await _reset(stream)
                return
            reader = FrameReader(stream.read)
            config = self._config
            while True:
                with trio.move_on_after(config.stream_idle_timeout):
                    try:
                        await reader.wait_data()
                    except EndOfStream:
                        with contextlib.suppress(Exception):
                            await stream.close()
                        return
                    entry = self._handlers.get(protocol_id)
                    limit = entry.max_request_bytes if entry else MAX_FRAME_BYTES
                    try:
                        with trio.fail_after(config.frame_timeout):
                            data = await reader.read_request(limit)
                    except MessageTooLarge as exc:
                        self._counters.requests_rejected += 1
                        with (
                            trio.move_on_after(config.frame_timeout),
                            contextlib.suppress(Exception),
                        ):
                            await stream.write(
                                response_frame(STATUS_TOO_LARGE, str(exc).encode()[:1024])
                            )
                        await _reset(stream)
                        return
                    except (MalformedFrame, trio.TooSlowError) as exc:
                        self._counters.requests_rejected += 1
                        log.debug("bad request frame on %s: %r", protocol_id, exc)
                        await _reset(stream)
                        return
                    status, body = await answer(
                        entry, sender, protocol_id, data, self._counters, log
                    )
                    with trio.fail_after(config.frame_timeout):
                        await stream.write(response_frame(status, body))
                    continue
                await _reset(stream)  # idle
                return
        except Exception as exc:
            log.debug("request stream on %s ended: %r", protocol_id, exc)
            await _reset(stream)
        finally:
            self._inbound.release()

    async def _serve_record(self, peer: PeerKey, data: bytes) -> bytes:
        return self._record.raw if self._record is not None else b""

    async def _checkout(self, peer: PeerKey, protocol_id: str) -> tuple[_Pooled, bool]:
        pool = self._pool.get((peer, protocol_id))
        while pool:
            item = pool.pop()
            if item.reader.buffered == 0:
                return item, True
            await _reset(item.stream)
        await self._ensure_connected(peer)
        try:
            stream = await self._host.new_stream(_peer_id_of(peer), [protocol_id])
        except trio.Cancelled:
            raise
        except Exception as exc:
            cause = exc.__cause__ or exc
            text = f"{type(cause).__name__}: {cause}"
            if "protocol" in text.lower() and "not" in text.lower():
                raise ProtocolNotSupported(
                    f"peer {protocol.peer_id(peer)} does not serve {protocol_id}"
                ) from None
            raise PeerUnreachable(
                f"cannot open a stream to {protocol.peer_id(peer)}: {text}"
            ) from None
        return _Pooled(stream, FrameReader(stream.read)), False

    def _checkin(self, peer: PeerKey, protocol_id: str, item: _Pooled) -> None:
        pool = self._pool.setdefault((peer, protocol_id), [])
        if len(pool) < _POOL_PER_KEY and not self._closed:
            pool.append(item)
        elif self._nursery is not None:
            self._nursery.start_soon(_reset, item.stream)

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
        if peer == self._peer:
            entry = self._handlers.get(protocol_id)
            status, body = await answer(entry, peer, protocol_id, data, self._counters, log)
            if status != STATUS_OK:
                raise error_for(status, body)
            return body
        frame = request_frame(bytes(data))
        with trio.move_on_after(timeout):
            for attempt in range(2):
                item, reused = await self._checkout(peer, protocol_id)
                try:
                    await item.stream.write(frame)
                    status, body = await item.reader.read_response(max_response_bytes)
                except (MalformedFrame, MessageTooLarge) as exc:
                    await _reset(item.stream)
                    if isinstance(exc, MessageTooLarge):
                        raise
                    raise RemoteError(f"malformed response on {protocol_id}: {exc}") from None
                except trio.Cancelled:
                    await _reset(item.stream)
                    raise
                except Exception as exc:
                    await _reset(item.stream)
                    if reused and attempt == 0:
                        continue  # a pooled stream the peer had closed: one fresh try
                    raise PeerUnreachable(
                        f"stream to {protocol.peer_id(peer)} broke: {exc!r}"
                    ) from None
                if status == STATUS_OK:
                    self._checkin(peer, protocol_id, item)
                    return body
                if status == STATUS_TOO_LARGE:
                    await _reset(item.stream)
                else:
                    self._checkin(peer, protocol_id, item)
                raise error_for(status, body)
        raise NetworkTimeout(
            f"no answer from {protocol.peer_id(peer)} on {protocol_id} within {timeout:g} s"
        )

    # --- publish / subscribe -----------------------------------------------------------

    async def publish(self, topic: str, data: bytes) -> None:
        self._check_open()
        check_topic(topic)
        if len(data) > MAX_PUBSUB_BYTES:
            raise MessageTooLarge(f"pubsub message of {len(data)} bytes is over {MAX_PUBSUB_BYTES}")
        try:
            await self.pubsub.publish(topic, bytes(data))
        except trio.Cancelled:
            raise
        except Exception as exc:
            raise NetworkError(f"could not publish on {topic}: {exc}") from None

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
                scope = self._pumps.pop(topic, None)
                if scope is not None:
                    scope.cancel()

        inbox: Inbox[PubsubMessage] = Inbox(queue_size, forget)
        self._subscriptions.setdefault(topic, set()).add(inbox)
        if topic not in self._pumps and self._nursery is not None:
            scope = trio.CancelScope()
            self._pumps[topic] = scope
            self._nursery.start_soon(self._pump, topic, scope)
        return inbox

    async def _pump(self, topic: str, scope: trio.CancelScope) -> None:
        lock = self._topic_locks.setdefault(topic, trio.Lock())
        try:
            with scope:
                async with lock:
                    subscription = await self.pubsub.subscribe(topic)
                while True:
                    message = await subscription.get()
                    sender = _key_of(ID(message.from_id))
                    if sender is None or sender == self._peer:
                        continue
                    if len(message.data) > MAX_PUBSUB_BYTES:
                        self._counters.pubsub_dropped += 1
                        continue
                    item = PubsubMessage(topic, sender, bytes(message.data))
                    for inbox in list(self._subscriptions.get(topic, ())):
                        if not inbox.deliver(item):
                            self._counters.pubsub_dropped += 1
        finally:
            if not self._closed:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    async with lock:
                        if not self._subscriptions.get(topic):
                            with contextlib.suppress(Exception):
                                await self.pubsub.unsubscribe(topic)

    # --- capability records ------------------------------------------------------------

    async def advertise(self, record: Signed[Advert], *, renew: RenewRecord | None = None) -> None:
        self._check_open()
        check_own_record(record, self._peer, self.chain_id, self._config.now_ms())
        self._record = record
        self._renew = renew
        await self._announce(record)
        if self._refresh_scope is not None:
            self._refresh_scope.cancel()
        self._refresh_scope = trio.CancelScope()
        assert self._nursery is not None
        self._nursery.start_soon(self._refresh, self._refresh_scope)

    async def _announce(self, record: Signed[Advert]) -> None:
        """Store the record under our key and provider records under each class."""

        async def put() -> None:
            try:
                await self.dht.put_value(record_key(self._peer), record.raw)
            except Exception as exc:
                log.warning("could not store the capability record: %s", exc)

        async def provide(cls: str) -> None:
            try:
                await self.dht.provide(provider_key(self.chain_id, cls))
            except Exception as exc:
                log.warning("could not announce provider record for %s: %s", cls, exc)

        with trio.move_on_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(put)
                for cls in record.message.capability_classes:
                    nursery.start_soon(provide, cls)

    async def _refresh(self, scope: trio.CancelScope) -> None:
        """Re-announce periodically; renew the record before it expires."""
        with scope:
            while self._record is not None:
                record = self._record
                now = self._config.now_ms()
                renew_in = (record.message.expires_ms - REFRESH_MARGIN_MS - now) / 1000
                if self._renew is None and record.message.expires_ms <= now:
                    return
                wait = self._config.republish_interval
                if self._renew is not None:
                    wait = min(wait, max(0.0, renew_in))
                await trio.sleep(wait)
                if self._renew is not None and self._config.now_ms() >= (
                    record.message.expires_ms - REFRESH_MARGIN_MS
                ):
                    try:
                        new = self._renew()
                        check_own_record(new, self._peer, self.chain_id, self._config.now_ms())
                    except (RecordError, protocol.ProtocolError) as exc:
                        log.error("could not renew the capability record: %s", exc)
                        self._renew = None
                        continue
                    self._record = new
                self._counters.records_refreshed += 1
                await self._announce(self._record)

    async def _record_of(self, peer: ID, capability_class: str) -> Signed[Advert] | None:
        key = _key_of(peer)
        if key is None:
            return None
        now = self._config.now_ms()
        if key == self._peer:
            own = self._record
            return verify_record(own.raw, self.chain_id, capability_class, now) if own else None
        record: Signed[Advert] | None = None
        if key in self._connected:
            with contextlib.suppress(NetworkError):
                raw = await self.request(key, RECORD_PROTOCOL, b"", timeout=2.0)
                record = self._check_fetched(raw, key, now)
        cached = self._records.get(key)
        if record is None and cached is not None and cached.message.expires_ms > now:
            return verify_record(cached.raw, self.chain_id, capability_class, now)
        if record is None:
            # not connected, nothing cached: ask the DHT and the peer itself at once,
            # the first valid record wins (a DHT lookup takes 0.3-0.8 s, a dial 0.25 s)
            winner: list[Signed[Advert]] = []

            async def from_dht(scope: trio.CancelScope) -> None:
                with contextlib.suppress(Exception), trio.move_on_after(3):
                    found = self._check_fetched(await self.dht.get_value(record_key(key)), key, now)
                    if found is not None:
                        winner.append(found)
                        scope.cancel()

            async def from_peer(scope: trio.CancelScope) -> None:
                with contextlib.suppress(NetworkError):
                    raw = await self.request(key, RECORD_PROTOCOL, b"", timeout=3.0)
                    found = self._check_fetched(raw, key, now)
                    if found is not None:
                        winner.append(found)
                        scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(from_dht, nursery.cancel_scope)
                nursery.start_soon(from_peer, nursery.cancel_scope)
            record = winner[0] if winner else None
        if record is not None:
            self._remember(record)
            with contextlib.suppress(Exception):
                addrs = [_parse_multiaddr(a) for a in record.message.addresses]
                self._host.get_peerstore().add_addrs(peer, addrs, 600)
        else:
            record = self._records.get(key)  # unreachable now: the last record seen
        if record is None:
            return None
        return verify_record(record.raw, self.chain_id, capability_class, now)

    def _check_fetched(self, raw: bytes | None, key: PeerKey, now: int) -> Signed[Advert] | None:
        if not raw:
            return None
        record = verify_record(raw, self.chain_id, None, now)
        if record is None or record.signer != key:
            self._counters.records_rejected += 1
            return None
        return record

    def _remember(self, record: Signed[Advert]) -> None:
        """Cache a verified record (highest seq wins) until it expires; bounded."""
        old = self._records.get(record.signer)
        if old is not None and old.message.seq > record.message.seq:
            return
        if len(self._records) >= _MAX_CACHED_RECORDS and record.signer not in self._records:
            now = self._config.now_ms()
            for peer in [p for p, r in self._records.items() if r.message.expires_ms <= now]:
                del self._records[peer]
            if len(self._records) >= _MAX_CACHED_RECORDS:
                oldest = min(self._records, key=lambda p: self._records[p].message.expires_ms)
                del self._records[oldest]
        self._records[record.signer] = record

    async def _lookup_providers(self, key: bytes, count: int, within: float) -> list[PeerInfo]:
        """Provider records for ``key``: the local store and an iterative lookup, always
        both (py-libp2p's ``find_providers`` stops at the local store when it has any).
        The lookup gets ``within`` seconds; what it found by then is kept."""
        store = self.dht.provider_store
        found: dict[ID, PeerInfo] = {p.peer_id: p for p in store.get_providers(key)}
        me = self._host.get_id()
        with trio.move_on_after(within):
            try:
                closest = list(await self.dht.peer_routing.find_closest_peers_network(key))
            except trio.Cancelled:
                raise
            except Exception as exc:
                log.debug("closest-peer lookup failed: %r", exc)
                closest = []
            candidates = [p for p in dict.fromkeys(closest) if p != me]
            queried: set[ID] = set()
            for _ in range(8):  # lookup rounds, bounded
                batch = [p for p in candidates if p not in queried][:ALPHA]
                if not batch or len(found) >= count:
                    break
                closer: list[ID] = []

                async def ask(peer: ID, closer: list[ID] = closer) -> None:
                    queried.add(peer)
                    with contextlib.suppress(Exception), trio.move_on_after(3):
                        providers, nearer = await store._get_providers_from_peer_with_closers(
                            peer, key
                        )
                        for info in providers or ():
                            found.setdefault(info.peer_id, info)
                        closer.extend(nearer or ())

                async with trio.open_nursery() as nursery:
                    for peer in batch:
                        nursery.start_soon(ask, peer)
                candidates.extend(p for p in closer if p != me and p not in queried)
                candidates = sort_peer_ids_by_distance(key, list(dict.fromkeys(candidates)))
        return list(found.values())

    async def find_providers(
        self,
        capability_class: str,
        *,
        limit: int = DEFAULT_FIND_LIMIT,
        timeout: float = DEFAULT_FIND_TIMEOUT,
    ) -> list[Signed[Advert]]:
        self._check_open()
        found: list[Signed[Advert]] = []
        # Peers whose fetch is under way, with their cached record: a fetch the timeout
        # cuts off (a request to a peer that has just left can wait seconds) returns that.
        pending: dict[ID, Signed[Advert]] = {}
        with trio.move_on_after(timeout):
            peers: dict[ID, None] = {}
            if self._record is not None and capability_class in (
                self._record.message.capability_classes
            ):
                peers[self._host.get_id()] = None
            # A lookup that hangs (a peer that has just left) must not use up the time
            # the providers already found need for their records.
            infos = await self._lookup_providers(
                bytes.fromhex(provider_key(self.chain_id, capability_class)),
                max(limit, 1) * 2,
                within=timeout * LOOKUP_SHARE,
            )
            for info in infos:
                peers.setdefault(info.peer_id, None)
                with contextlib.suppress(Exception):
                    if info.addrs:
                        self._host.get_peerstore().add_addrs(info.peer_id, info.addrs, 600)

            async def fetch(peer: ID) -> None:
                key = _key_of(peer)
                cached = self._records.get(key) if key is not None else None
                now = self._config.now_ms()
                if cached is not None and (
                    fallback := verify_record(cached.raw, self.chain_id, capability_class, now)
                ):
                    pending[peer] = fallback
                record = await self._record_of(peer, capability_class)
                pending.pop(peer, None)
                if record is not None:
                    found.append(record)

            async with trio.open_nursery() as nursery:
                for peer in peers:
                    nursery.start_soon(fetch, peer)
        found.extend(pending.values())
        return best_per_peer(found, limit)


def _listen_addrs(config: Libp2pConfig) -> list[multiaddr.Multiaddr]:
    addrs = [_parse_multiaddr(a) for a in config.listen]
    for addr in addrs:
        if "tcp" not in [p.name for p in addr.protocols()]:
            raise NetworkError(f"only TCP listen addresses are supported, not {addr}")
    return addrs


def _build_host(key: nacl.signing.SigningKey, config: Libp2pConfig, listen: Sequence[Any]) -> Any:
    key_pair = create_new_key_pair(bytes(key))  # the ledger key's seed: same identity
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): cast(Any, Yamux)},
        listen_addrs=list(listen),
        enable_mDNS=config.enable_mdns,
        # one connection per peer (ends the 250 ms dial wait early); no auto-dialing of
        # every known peer to keep 50 connections: bootstrap and lookups connect as needed
        connection_config=ConnectionConfig(
            max_connections_per_peer=MAX_CONNECTIONS_PER_PEER,
            dial_timeout=config.dial_timeout,
            min_connections=0,
            low_watermark=0,
        ),
    )


@asynccontextmanager
async def open_libp2p_network(
    key: nacl.signing.SigningKey, config: Libp2pConfig
) -> AsyncIterator[Libp2pNetwork]:
    """Start a libp2p node with ``key`` (the node's ledger key) and ``config``; it is
    listening, bootstrapped and (if private) reserved at its relays when this yields."""
    route_libp2p_logs(config.libp2p_log_level)
    install_libp2p_tuning()
    listen = _listen_addrs(config)
    for address in config.bootstrap:
        _info_of(address)
    host = _build_host(key, config, listen)
    net = Libp2pNetwork(host, key, config)
    started = False
    try:
        async with host.run(listen_addrs=listen), net._running():
            started = True
            yield net
    except OSError as exc:
        if started:
            raise
        raise NetworkError(f"cannot listen on {', '.join(config.listen)}: {exc}") from None
    finally:
        # connections that finished opening while we shut down: close them too
        await net._close_connections()
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await host.close()


def _conforms(net: Libp2pNetwork) -> Network:
    """Type check only: Libp2pNetwork implements the Network interface."""
    return net
