"""The network over py-libp2p 0.8.1: TCP, Noise, Yamux, Kademlia, GossipSub, circuit relay v2.

``open_libp2p_network(signing_key, Libp2pConfig(...))`` is an async context manager that
yields a :class:`Libp2pNetwork` (the :class:`node.net.Network` interface). Nothing of
libp2p leaks through it. py-libp2p 0.8.1 has defects that a node on an open network must
not inherit (specs/network.md, "Known defects of py-libp2p 0.8.1"); each part works around
its own:

- the host (:mod:`._libp2p_transport`): Noise only, Yamux only, one connection per peer;
- inbound streams (:mod:`._libp2p_inbound`): every stream handler, ours, py-libp2p's and
  the relay's, is guarded: an exception never escapes into the host, a banned peer or one
  with too many streams open is refused, failures are counted in
  :attr:`Libp2pNetwork.counters`;
- requests (:mod:`._libp2p_streams`): request and response frames, bad ones counted;
- pubsub (:mod:`._libp2p_pubsub`): GossipSub tuned for this workload, dead peer streams
  repaired;
- discovery (:mod:`._libp2p_dht`): the DHT's routing table holds the connected peers that
  serve the DHT (added here, :meth:`Libp2pNetwork._add_to_routing_table`, and dropped when
  they disconnect); it stores only capability records, and reports the records peers sent
  that it refused;
- records (:mod:`._libp2p_records`): ours announced and renewed; provider lookups ask the
  network even with local results, are deduplicated by peer, and every record is verified;
- dialling (:mod:`._libp2p_dialer`): addresses and peers, bootstrap peers redialled with
  backoff whenever not connected and past py-libp2p's negative cache, the peers
  remembered from the last run;
- logs: py-libp2p's lines written while serving a peer's stream name the peer;
- relay (:mod:`._libp2p_relay`): reservations when private; relayed connections only
  from our relays;
- py-libp2p's logs go through ours (:func:`route_libp2p_logs`), its per-message costs
  are cut (:mod:`._libp2p_tuning`), and a per-stream leak of its yamux is closed
  (:mod:`._libp2p_leaks`);
- what a stranger could make py-libp2p hold is bounded: inbound connections and sockets
  in handshake (:mod:`._libp2p_handshakes`), yamux streams and their buffers
  (:mod:`._libp2p_yamux`), GossipSub control and catch-ups (:mod:`._libp2p_gossip`);
- outbound connections past a bound are closed, the least recently used first
  (:mod:`._libp2p_trim`): lookups dial the peers answers name.

This module wires them into one network, and owns connections (connect and disconnect
events, bans) and shutdown: our tasks, then pubsub (``seen_messages.stop()``), DHT, relay,
then ``host.close()``; every connection is closed on the way (py-libp2p's shutdown leaves
them open).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nacl.signing
import trio
from libp2p.abc import INotifee
from libp2p.peer.id import ID
from libp2p.tools.anyio_service import background_trio_service

import protocol
from protocol import Advert, Signed

from ._base import NetworkBase
from ._errors import NetworkError
from ._framing import STATUS_OK
from ._interface import Network, PeerEvent, PeerKey, Reachability, RenewRecord
from ._libp2p_config import GossipConfig as GossipConfig
from ._libp2p_config import Libp2pConfig as Libp2pConfig
from ._libp2p_config import wall_ms as wall_ms
from ._libp2p_dht import KAD_PROTOCOL, dht_slots, open_dht, serves_dht
from ._libp2p_dht import provider_key as provider_key
from ._libp2p_dht import record_key as record_key
from ._libp2p_dialer import Dialer
from ._libp2p_inbound import GuardedHandlers, InboundGuard, guard
from ._libp2p_leaks import install as install_libp2p_leak_fixes
from ._libp2p_logging import route_libp2p_logs
from ._libp2p_pubsub import GossipPubsub
from ._libp2p_records import RECORD_PROTOCOL, CapabilityRecords
from ._libp2p_relay import Relay
from ._libp2p_streams import RequestStreams
from ._libp2p_transport import build_host, info_of, key_of, listen_addrs, peer_id_of
from ._libp2p_trim import OutboundTrim
from ._libp2p_tuning import install as install_libp2p_tuning
from ._libp2p_tuning import protect_connected
from ._serving import error_for

__all__ = [
    "GossipConfig",
    "Libp2pConfig",
    "Libp2pNetwork",
    "open_libp2p_network",
    "provider_key",
    "record_key",
    "wall_ms",
]

log = logging.getLogger(__name__)


class _Notifee(INotifee):
    def __init__(self, net: Libp2pNetwork) -> None:
        self.net = net

    async def opened_stream(self, network: Any, stream: Any) -> None:
        pass

    async def closed_stream(self, network: Any, stream: Any) -> None:
        pass

    async def connected(self, network: Any, conn: Any) -> None:
        self.net._on_connected(conn.muxed_conn.peer_id)
        self.net._trim.opened(conn)

    async def disconnected(self, network: Any, conn: Any) -> None:
        self.net._on_disconnected(conn.muxed_conn.peer_id, conn)

    async def listen(self, network: Any, multiaddr: Any) -> None:
        pass

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        pass


class Libp2pNetwork(NetworkBase):
    """One node on a libp2p network; implements :class:`node.net.Network`."""

    def __init__(self, host: Any, key: nacl.signing.SigningKey, config: Libp2pConfig) -> None:
        super().__init__(bytes(key.verify_key), config.chain_id, config.reachability, log)
        self._host = host
        self._config = config
        self._nursery: trio.Nursery | None = None
        self.dht = open_dht(host, config, self._dht_record_refused)
        self._gossip = GossipPubsub(
            host, self._peer, config.gossip, self._counters, self._deliver, self._has_subscribers
        )
        self._dialer = Dialer(
            host,
            self.dht,
            lambda address: self._relay.transport.dial(address),
            config,
            local_peer=self._peer,
            connected=self._connected,
            is_banned=self.is_banned,
            check_open=self._check_open,
            peers_changed=lambda: self._peers_changed,
            own_peers=self._own_peers,
        )
        self._relay = Relay(
            host,
            config,
            self._peer,
            self._connected,
            self._dialer.dial,
            lambda handler: guard(handler, self._counters),
            lambda: self._peers_changed,
        )
        #: Our requests under way, by peer (libp2p ID): their connections are kept.
        self._requests_to: dict[ID, int] = {}
        self._bootstrap_ids = frozenset(info_of(a)[0].peer_id for a in config.bootstrap)
        # peers whose request we are serving go last (a provider's Result or content fetch
        # on the connection we dialled was cut mid-way: round 41, F1), not never (one byte
        # of a request every 8 s kept a stranger's for good: round 43, F1)
        self._trim = OutboundTrim(
            self._kept_peers,
            self._requests_to.keys(),
            spare=lambda: {peer_id_of(k) for k in self._streams.serving()},
        )
        host.get_network().register_notifee(_Notifee(self))
        self._streams = RequestStreams(
            host, config, self._counters, self._handlers, self._dialer.ensure_connected
        )
        self._records = CapabilityRecords(
            host, self.dht, self._peer, config, self._counters, self._connected, self._fetch_record
        )
        self.set_handler(RECORD_PROTOCOL, self._records.serve_record, max_request_bytes=64)
        # every stream handler, py-libp2p's own included, behind the trust boundary
        mux = host.get_mux()
        mux.handlers = GuardedHandlers(
            mux.handlers,
            InboundGuard(
                self._counters,
                self._handlers,
                self.is_banned,
                self._peer_misbehaved,
                {KAD_PROTOCOL: dht_slots()},
            ),
        )
        #: Set (and replaced) whenever a peer connects or disconnects.
        self._peers_changed = trio.Event()

    def _disconnect(self, peer: PeerKey) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._close_peer, peer)

    async def _close_peer(self, peer: PeerKey) -> None:
        with trio.move_on_after(5), contextlib.suppress(Exception):
            await self._host.get_network().close_peer(peer_id_of(peer))

    # --- lifecycle -----------------------------------------------------------------------

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        async with (
            background_trio_service(self._gossip.pubsub),
            background_trio_service(self._gossip.gossipsub),
            background_trio_service(self.dht),
            background_trio_service(self._relay.protocol),
            trio.open_nursery() as nursery,
        ):
            self._nursery = nursery
            for part in (self._streams, self._gossip, self._records, self._trim):
                part.start(nursery)
            try:
                with trio.fail_after(10):
                    await self._gossip.pubsub.wait_until_ready()
                await self._dialer.bootstrap()
                for address in dict.fromkeys(self._config.bootstrap):
                    nursery.start_soon(self._dialer.keep_bootstrap, address)
                if self._config.peers_file is not None:
                    nursery.start_soon(self._dialer.remember_peers, self._config.peers_file)
                nursery.start_soon(self._gossip.repair_loop)
                if self._config.reachability is Reachability.PRIVATE:
                    nursery.start_soon(self._relay.run_dcutr)
                    await self._relay.reserve_all(nursery)
                yield
            finally:
                self._closed = True
                self._streams.close()
                self._gossip.close()
                self._close_inboxes()
                nursery.cancel_scope.cancel()
                self._gossip.stop()
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

    def _now_ms(self) -> int:
        return self._config.now_ms()

    def relays(self) -> tuple[PeerKey, ...]:
        return self._relay.relays()

    def relayed_peers(self) -> frozenset[PeerKey]:
        return frozenset(p for p in self._connected if self._relay.relayed_only(peer_id_of(p)))

    def addresses(self) -> tuple[str, ...]:
        own = protocol.peer_id(self._peer)
        out: list[str] = []
        for addr in self._host.get_addrs():
            text = str(addr)
            if "/p2p/" not in text:
                text = f"{text}/p2p/{own}"
            out.append(text)
        return tuple(out + self._relay.addresses)

    # --- connections ---------------------------------------------------------------------

    def _on_connected(self, peer: ID) -> None:
        key = key_of(peer)
        if key is None or self._closed:
            return
        if self.is_banned(key):
            self._disconnect(key)
            return
        # reachable now: a failed dial before must not block dials for a minute
        with contextlib.suppress(Exception):
            self._host.get_network().unblock_peer(peer)
        self._peers_changed_now()
        if self._nursery is not None:
            self._nursery.start_soon(self._add_to_routing_table, peer)
        if key not in self._connected:
            self._connected.add(key)
            self._emit(PeerEvent(key, True))

    def _on_disconnected(self, peer: ID, conn: Any) -> None:
        self._trim.closed(conn)
        key = key_of(peer)
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
        self._streams.forget_peer(key)
        self._relay.peer_left(peer)
        self._trim.peer_left(peer)
        # a peer that left is not handed out to lookups (ServerRoutingTable)
        with contextlib.suppress(Exception):
            self.dht.routing_table.remove_peer(peer)
        if key in self._connected:
            self._connected.discard(key)
            self._emit(PeerEvent(key, False))
        self._peers_changed_now()

    def _peers_changed_now(self) -> None:
        self._peers_changed.set()
        self._peers_changed = trio.Event()

    async def _add_to_routing_table(self, peer: ID) -> None:
        """py-libp2p's DHT does not add connected peers itself, and cannot add one before
        identify has stored its listen addresses and protocols: retry a few times
        (bounded). A peer that does not serve the DHT (a client) is not added."""
        for delay in (0.0, 0.2, 0.5, 1.0, 2.0, 4.0):
            await trio.sleep(delay)
            if key_of(peer) not in self._connected:
                return
            if serves_dht(self._host, peer) is False:
                return
            with contextlib.suppress(Exception), trio.move_on_after(5):
                if await self.dht.add_peer(peer):
                    return

    def _dht_record_refused(self, peer: PeerKey, reason: str) -> None:
        """A peer sent our DHT a record it does not store: the peer only learns of it as a
        reset stream (Kademlia has no error reply), so the refusal is ours to report."""
        self._counters.records_rejected += 1
        log.info("refused a DHT record from peer %s: %s", protocol.peer_id(peer), reason)
        self._peer_misbehaved(peer, f"sent {reason}"[:300])

    async def connect(self, address: str) -> PeerKey:
        return await self._dialer.connect(address)

    # --- the parts' side of the interface ----------------------------------------------

    def _serve_protocol(self, protocol_id: str) -> None:
        self._streams.serve(protocol_id)

    def _stop_serving(self, protocol_id: str) -> None:
        self._streams.stop_serving(protocol_id)

    async def _request(
        self, peer: PeerKey, protocol_id: str, data: bytes, timeout: float, max_response: int
    ) -> bytes:
        if peer == self._peer:
            status, body = await self._handle(peer, protocol_id, data)
            if status != STATUS_OK:
                raise error_for(status, body)
            return body
        pid = peer_id_of(peer)
        self._requests_to[pid] = self._requests_to.get(pid, 0) + 1
        try:
            return await self._streams.request(peer, protocol_id, data, timeout, max_response)
        finally:
            if (left := self._requests_to.pop(pid) - 1) > 0:
                self._requests_to[pid] = left
            if peer in self._connected:
                self._trim.used(pid)

    def _own_peers(self) -> set[PeerKey]:
        """The peers whose addresses ``peers.json`` keeps first: the bootstrap peers and
        those we asked something while connected."""
        ids = self._bootstrap_ids | self._trim.asked()
        return {k for k in map(key_of, ids) if k is not None}

    def _kept_peers(self) -> set[ID]:
        """Peers whose outbound connections are never closed to keep them to the bound:
        bootstrap peers, our relays, peers in our GossipSub meshes."""
        kept = set(self._bootstrap_ids)
        kept.update(peer_id_of(k) for k in self._relay.relays())
        for peers in self._gossip.gossipsub.mesh.values():
            kept.update(peers)
        return kept

    async def _fetch_record(self, peer: PeerKey, timeout: float) -> bytes:
        return await self.request(peer, RECORD_PROTOCOL, b"", timeout=timeout)

    async def _publish(self, topic: str, data: bytes) -> None:
        await self._gossip.publish(topic, data)

    def _topic_added(self, topic: str) -> None:
        self._gossip.follow(topic)

    def _topic_dropped(self, topic: str) -> None:
        self._gossip.unfollow(topic)

    async def _advertise(self, record: Signed[Advert], renew: RenewRecord | None) -> None:
        await self._records.advertise(record, renew)

    async def _find_providers(
        self, capability_class: str, limit: int, timeout: float
    ) -> list[Signed[Advert]]:
        return await self._records.find_providers(capability_class, limit, timeout)


@asynccontextmanager
async def open_libp2p_network(
    key: nacl.signing.SigningKey, config: Libp2pConfig
) -> AsyncIterator[Libp2pNetwork]:
    """Start a libp2p node with ``key`` (the node's ledger key) and ``config``; it is
    listening, bootstrapped and (if private) reserved at its relays when this yields."""
    route_libp2p_logs(config.libp2p_log_level)
    install_libp2p_tuning()
    install_libp2p_leak_fixes()
    listen = listen_addrs(config)
    for address in config.bootstrap:
        info_of(address)
    host = build_host(key, config, listen)
    protect_connected(host)
    net = Libp2pNetwork(host, key, config)
    started = False
    try:
        async with host.run(listen_addrs=listen), net._running():
            if listen and not host.get_network().listeners:
                # py-libp2p logs a failed listen and carries on, listening nowhere
                raise NetworkError(
                    f"cannot listen on {', '.join(config.listen)}: no address could be "
                    "opened; use an address of this machine (e.g. /ip4/0.0.0.0/tcp/4001)"
                )
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
