"""The network over py-libp2p 0.8.1: TCP, Noise, Yamux, Kademlia, GossipSub, circuit relay v2.

``open_libp2p_network(signing_key, Libp2pConfig(...))`` is an async context manager that
yields a :class:`Libp2pNetwork` (the :class:`node.net.Network` interface). Nothing of
libp2p leaks through it. py-libp2p 0.8.1 has defects that a node on an open network must
not inherit (specs/network.md, "Known defects of py-libp2p 0.8.1"); each part works around
its own:

- the host (:mod:`._libp2p_transport`): Noise only, Yamux only, one connection per peer;
- requests (:mod:`._libp2p_streams`): every stream handler, ours and the relay's, is
  guarded: an exception never escapes into the host, bad frames are counted in
  :attr:`Libp2pNetwork.counters`;
- pubsub (:mod:`._libp2p_pubsub`): GossipSub tuned for this workload, dead peer streams
  repaired;
- discovery (:mod:`._libp2p_dht`): the DHT's routing table holds the connected peers that
  serve the DHT (added here, :meth:`Libp2pNetwork._add_to_routing_table`, and dropped when
  they disconnect); it stores only capability records, and reports the records peers sent
  that it refused; provider lookups ask the network even with local results, are
  deduplicated by peer, and every record is verified;
- logs: py-libp2p's lines written while serving a peer's stream name the peer;
- relay (:mod:`._libp2p_relay`): reservations when private;
- py-libp2p's logs go through ours (:func:`route_libp2p_logs`), and its per-message costs
  are cut (:mod:`._libp2p_tuning`).

This module wires them into one network, and owns connections (dial, bootstrap peers
redialled with backoff whenever not connected and past py-libp2p's negative cache, connect
and disconnect events) and shutdown: our tasks, then pubsub (``seen_messages.stop()``),
DHT, relay, then ``host.close()``; every connection is closed on the way (py-libp2p's
shutdown leaves them open).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import multiaddr
import nacl.signing
import trio
from libp2p.abc import INotifee
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service import background_trio_service

import protocol
from protocol import Advert, Signed

from . import _peer_memory
from ._base import NetworkBase
from ._errors import NetworkError, NetworkTimeout, PeerUnreachable
from ._framing import STATUS_OK
from ._interface import Network, PeerEvent, PeerKey, Reachability, RenewRecord
from ._libp2p_config import Backoff
from ._libp2p_config import GossipConfig as GossipConfig
from ._libp2p_config import Libp2pConfig as Libp2pConfig
from ._libp2p_config import wall_ms as wall_ms
from ._libp2p_dht import RECORD_PROTOCOL, CapabilityRecords, open_dht, serves_dht
from ._libp2p_dht import provider_key as provider_key
from ._libp2p_dht import record_key as record_key
from ._libp2p_logging import Serving, route_libp2p_logs, serving_peer
from ._libp2p_pubsub import GossipPubsub
from ._libp2p_relay import Relay
from ._libp2p_streams import GuardedHandlers, RequestStreams, guard, reset
from ._libp2p_transport import build_host, info_of, key_of, listen_addrs, peer_id_of
from ._libp2p_tuning import install as install_libp2p_tuning
from ._limits import MAX_INBOUND_PER_PEER
from ._serving import error_for
from .relay import circuit_addresses, dial_direct_then_relayed

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
        self._relay = Relay(
            host,
            config,
            self._peer,
            self._connected,
            self._dial,
            lambda handler: guard(handler, self._counters),
            lambda: self._peers_changed,
        )
        host.get_network().register_notifee(_Notifee(self))
        self._streams = RequestStreams(
            host, config, self._counters, self._handlers, self._ensure_connected
        )
        self._records = CapabilityRecords(
            host, self.dht, self._peer, config, self._counters, self._connected, self._fetch_record
        )
        self.set_handler(RECORD_PROTOCOL, self._records.serve_record, max_request_bytes=64)
        # every stream handler, py-libp2p's own included, behind the trust boundary
        mux = host.get_mux()
        mux.handlers = GuardedHandlers(mux.handlers, self._guard_stream)
        self._streams_of: dict[PeerKey, int] = {}
        #: Set (and replaced) whenever a peer connects or disconnects.
        self._peers_changed = trio.Event()

    def _guard_stream(
        self, protocol_id: str, handler: Callable[[Any], Awaitable[None]]
    ) -> Callable[[Any], Awaitable[None]]:
        """An inbound stream on ``protocol_id``: refused from a banned peer or one with
        ``MAX_INBOUND_PER_PEER`` streams open; whatever the handler raises on the peer's
        bytes resets the stream and counts against the peer, never reaches the host."""

        async def guarded(stream: Any) -> None:
            try:
                peer = key_of(stream.muxed_conn.peer_id)
            except Exception:
                peer = None
            if peer is None:
                await reset(stream)
                return
            who = protocol.peer_id(peer)
            if self.is_banned(peer):
                self._counters.refused_banned += 1
                log.debug("refused a stream on %s from banned peer %s", protocol_id, who)
                await reset(stream)
                return
            if self._streams_of.get(peer, 0) >= MAX_INBOUND_PER_PEER:
                self._counters.requests_rejected += 1
                log.info(
                    "refused a stream on %s from peer %s: %d of its streams are open",
                    protocol_id,
                    who,
                    MAX_INBOUND_PER_PEER,
                )
                await reset(stream)
                return
            self._streams_of[peer] = self._streams_of.get(peer, 0) + 1
            # py-libp2p's own handlers log a peer's bad bytes without naming the peer:
            # its records from this task name it (our handlers name it themselves)
            token = (
                serving_peer.set(Serving(peer, who, protocol_id))
                if protocol_id not in self._handlers
                else None
            )
            try:
                await handler(stream)
            except Exception as exc:
                self._counters.requests_rejected += 1
                log.info("a stream on %s from peer %s failed: %r", protocol_id, who, exc)
                await reset(stream)
                self._peer_misbehaved(peer, f"broke {protocol_id}: {exc!r}"[:300])
            finally:
                if token is not None:
                    serving_peer.reset(token)
                left = self._streams_of.get(peer, 1) - 1
                if left > 0:
                    self._streams_of[peer] = left
                else:
                    self._streams_of.pop(peer, None)

        guarded.aimx_guarded = True  # type: ignore[attr-defined]
        return guarded

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
            for part in (self._streams, self._gossip, self._records):
                part.start(nursery)
            try:
                with trio.fail_after(10):
                    await self._gossip.pubsub.wait_until_ready()
                await self._bootstrap()
                for address in dict.fromkeys(self._config.bootstrap):
                    nursery.start_soon(self._keep_bootstrap, address)
                if self._config.peers_file is not None:
                    nursery.start_soon(self._remember_peers, self._config.peers_file)
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
        self._check_open()
        info, circuit = info_of(address)
        key = key_of(info.peer_id)
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
                await self._relay.transport.dial(info.addrs[0])
            else:
                await self._host.connect(info)
        except trio.Cancelled:
            raise
        except Exception as exc:
            raise PeerUnreachable(f"cannot connect to {info.peer_id}: {exc}") from None

    async def _ensure_connected(self, peer: PeerKey) -> None:
        if peer in self._connected:
            return
        pid = peer_id_of(peer)
        addrs: list[Any] = []
        with contextlib.suppress(Exception):  # py-libp2p raises for a peer it never saw
            addrs = list(self._host.get_peerstore().addrs(pid) or [])
        circuit = [a for a in addrs if "/p2p-circuit" in str(a)]
        direct = [a for a in addrs if "/p2p-circuit" not in str(a)]
        if not addrs:
            with contextlib.suppress(Exception), trio.move_on_after(self._config.dial_timeout):
                found = await self.dht.find_peer(pid)
                if found is not None:
                    direct = list(found.addrs)
        # relayed addresses after the direct ones, overlapping (node/net/relay.py); a
        # peer whose relayed address we do not know is tried through our own relays
        relays = self._config.relays if self._config.relays is not None else self._config.bootstrap
        relayed = circuit_addresses(
            [str(a) for a in circuit],
            relays,
            protocol.peer_id(peer),
            protocol.peer_id(self._peer),
        )

        def through(text: str) -> Callable[[], Awaitable[None]]:
            return lambda: self._dial(PeerInfo(pid, [multiaddr.Multiaddr(text)]), True)

        try:
            await dial_direct_then_relayed(
                (lambda: self._dial(PeerInfo(pid, direct), False)) if direct else None,
                [through(text) for text in relayed],
            )
        except PeerUnreachable as exc:
            raise PeerUnreachable(
                f"no known address of peer {protocol.peer_id(peer)} answers ({exc})"
            ) from None

    async def _bootstrap(self) -> None:
        async def one(address: str) -> None:
            try:
                await self.connect(address)
            except NetworkError as exc:
                log.warning("bootstrap peer %s: %s", address, exc)

        async with trio.open_nursery() as nursery:
            for address in self._config.bootstrap:
                nursery.start_soon(one, address)

    async def _keep_bootstrap(self, address: str) -> None:
        """Stay connected to the bootstrap peer at ``address``: whenever there is no
        connection to it, redial with :class:`Backoff` (``bootstrap_redial_first``
        doubling to ``bootstrap_redial_max``), lifting py-libp2p's negative cache for it
        before each dial (a failed dial would otherwise refuse every dial to it for 60 s,
        and a coordinator restarted after 5 s would stay unreachable for a minute)."""
        info, _ = info_of(address)
        key = key_of(info.peer_id)
        if key is None or key == self._peer:
            return
        config = self._config
        backoff = Backoff(
            config.bootstrap_redial_first, config.bootstrap_redial_max, random.Random()
        )
        lost_at: float | None = None if key in self._connected else trio.current_time()
        while True:
            if key in self._connected:
                if lost_at is not None:
                    log.info(
                        "reconnected to bootstrap peer %s after %.1f s",
                        address,
                        trio.current_time() - lost_at,
                    )
                lost_at = None
                backoff.reset()
                await self._peers_changed.wait()
                continue
            if lost_at is None:
                lost_at = trio.current_time()
                log.warning("lost bootstrap peer %s; redialling", address)
            await trio.sleep(backoff.delay())
            if key in self._connected or self.is_banned(key):
                continue
            with contextlib.suppress(Exception):
                self._host.get_network().unblock_peer(info.peer_id)
            try:
                await self.connect(address)
            except NetworkError as exc:
                log.debug("redialling bootstrap peer %s: %s", address, exc)

    def _peer_addresses(self, peer: PeerKey) -> list[str]:
        """Up to ``PER_PEER`` direct addresses the peerstore holds for ``peer`` (identify's
        listen addresses), each ending in ``/p2p/<peer id>``."""
        pid = peer_id_of(peer)
        suffix = f"/p2p/{protocol.peer_id(peer)}"
        out: list[str] = []
        with contextlib.suppress(Exception):
            for addr in self._host.get_peerstore().addrs(pid) or []:
                text = str(addr)
                if "/p2p-circuit" in text:
                    continue
                out.append(text if "/p2p/" in text else text + suffix)
        return out[: _peer_memory.PER_PEER]

    async def _remember_peers(self, path: Path) -> None:
        """Dial the peers remembered from the last run (each once), then keep the list of
        peers connected lately in ``path`` (see ``_peer_memory``)."""
        kept = _peer_memory.load(path)
        others = [a for a in kept if not a.endswith(f"/p2p/{protocol.peer_id(self._peer)}")]
        if others:
            limit = trio.Semaphore(8)

            # one dial per peer with all its remembered addresses: dialled one by one, a
            # stale address's failure put the peer in py-libp2p's negative cache and the
            # dial of its current address was refused (a workspace waited 25 s)
            by_peer: dict[PeerKey, list[multiaddr.Multiaddr]] = {}
            for address in others:
                with contextlib.suppress(Exception):
                    info, _ = info_of(address)
                    key = key_of(info.peer_id)
                    if key is not None:
                        by_peer.setdefault(key, []).extend(info.addrs)
            log.info("dialling %d peers remembered from the last run", len(by_peer))

            async def dial(key: PeerKey, addrs: list[multiaddr.Multiaddr]) -> None:
                async with limit:
                    if key in self._connected:
                        return
                    pid = peer_id_of(key)
                    with contextlib.suppress(Exception):
                        self._host.get_network().unblock_peer(pid)
                    with (
                        contextlib.suppress(NetworkError),
                        trio.move_on_after(self._config.dial_timeout),
                    ):
                        await self._dial(PeerInfo(pid, addrs), False)

            async with trio.open_nursery() as nursery:
                for key, addrs in by_peer.items():
                    nursery.start_soon(dial, key, addrs)
        saved = kept
        while True:
            await trio.sleep(self._config.peers_save_interval)
            recent = [a for key in list(self._connected) for a in self._peer_addresses(key)]
            merged = _peer_memory.merge(recent, saved)
            if merged != saved:
                await trio.to_thread.run_sync(_peer_memory.save, path, merged)
                saved = merged

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
        return await self._streams.request(peer, protocol_id, data, timeout, max_response)

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
    listen = listen_addrs(config)
    for address in config.bootstrap:
        info_of(address)
    host = build_host(key, config, listen)
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
