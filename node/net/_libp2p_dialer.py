"""Dialling peers over libp2p: by address, by peer key, the bootstrap peers and the peers
remembered from the last run.

- :meth:`Dialer.connect`: one address (direct or ``/p2p-circuit``), within the dial timeout;
- :meth:`Dialer.ensure_connected`: a peer by its key, from the addresses the peerstore (or
  else the DHT) knows, direct ones first and relayed ones overlapping (:mod:`.relay`);
- :meth:`Dialer.keep_bootstrap`: a bootstrap peer redialled with backoff whenever there is
  no connection to it, past py-libp2p's negative cache;
- :meth:`Dialer.remember_peers`: the peers of ``peers.json`` dialled once, and the list
  kept up to date (:mod:`._peer_memory`).

The network (:mod:`.libp2p_host`) owns the connections and their events; this module only
opens them.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Set
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p.peer.peerinfo import PeerInfo

import protocol

from . import _peer_memory
from ._errors import NetworkError, NetworkTimeout, PeerUnreachable
from ._interface import PeerKey
from ._libp2p_config import Backoff, Libp2pConfig
from ._libp2p_inbound import socket_ip
from ._libp2p_transport import info_of, key_of, parse_multiaddr, peer_id_of
from .relay import circuit_addresses, dial_direct_then_relayed

log = logging.getLogger(__name__)


class Dialer:
    """Opens connections from ``host``, with the limits of ``config``.

    ``dht`` finds a peer's addresses when the peerstore has none; ``dial_relayed`` dials
    one ``/p2p-circuit`` address (the relay transport). The rest is the network's (the
    node ``local_peer``): its live set of ``connected`` peers, ``is_banned``,
    ``check_open``, ``peers_changed()``, an event set when a peer connects or
    disconnects, and ``own_peers()``, the peers ``peers.json`` keeps first (bootstrap
    peers, peers the node asked something)."""

    def __init__(
        self,
        host: Any,
        dht: Any,
        dial_relayed: Callable[[Any], Awaitable[Any]],
        config: Libp2pConfig,
        *,
        local_peer: PeerKey,
        connected: Set[PeerKey],
        is_banned: Callable[[PeerKey], bool],
        check_open: Callable[[], None],
        peers_changed: Callable[[], trio.Event],
        own_peers: Callable[[], Set[PeerKey]] = frozenset,
    ) -> None:
        self._host, self._dht, self._dial_relayed = host, dht, dial_relayed
        self._config = config
        # the network's side
        self._peer, self._connected = local_peer, connected
        self._is_banned, self._check_open = is_banned, check_open
        self._peers_changed = peers_changed
        self._own_peers = own_peers

    async def connect(self, address: str) -> PeerKey:
        """Connect to the peer at ``address``; see :meth:`node.net.Network.connect`."""
        self._check_open()
        info, circuit = info_of(address)
        key = key_of(info.peer_id)
        assert key is not None
        if key == self._peer:
            raise NetworkError("cannot dial ourselves")
        with trio.move_on_after(self._config.dial_timeout):
            await self.dial(info, circuit)
            return key
        raise NetworkTimeout(f"could not connect to {address} in {self._config.dial_timeout:g} s")

    async def dial(self, info: PeerInfo, circuit: bool) -> None:
        """Connect to ``info`` (through a relay if ``circuit``); a failure is
        :class:`PeerUnreachable`."""
        try:
            if circuit:
                await self._dial_relayed(info.addrs[0])
            else:
                await self._host.connect(info)
        except trio.Cancelled:
            raise
        except Exception as exc:
            raise PeerUnreachable(f"cannot connect to {info.peer_id}: {exc}") from None

    async def ensure_connected(self, peer: PeerKey) -> None:
        """Connected to ``peer``, dialled if need be from the addresses known for it."""
        if peer in self._connected:
            return
        pid = peer_id_of(peer)
        addrs: list[Any] = []
        with contextlib.suppress(Exception):  # py-libp2p raises for a peer it never saw
            addrs = list(self._host.get_peerstore().addrs(pid) or [])
        # By protocol, not by text: an address taken in binary (identify, a DHT answer)
        # may print as text that holds "/p2p-circuit" as a value (/dns4/p2p-circuit/...)
        # and that no parser takes back.
        circuit = [a for a in addrs if _is_circuit(a)]
        direct = [a for a in addrs if not _is_circuit(a)]
        if not addrs:
            with contextlib.suppress(Exception), trio.move_on_after(self._config.dial_timeout):
                found = await self._dht.find_peer(pid)
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
            # parsed in the attempt: one that does not parse fails as a NetworkError
            return lambda: self.dial(PeerInfo(pid, [parse_multiaddr(text)]), True)

        try:
            await dial_direct_then_relayed(
                (lambda: self.dial(PeerInfo(pid, direct), False)) if direct else None,
                [through(text) for text in relayed],
            )
        except PeerUnreachable as exc:
            raise PeerUnreachable(
                f"no known address of peer {protocol.peer_id(peer)} answers ({exc})"
            ) from None

    async def bootstrap(self) -> None:
        """Dial every bootstrap peer at once; a failure is logged."""

        async def one(address: str) -> None:
            try:
                await self.connect(address)
            except NetworkError as exc:
                log.warning("bootstrap peer %s: %s", address, exc)

        async with trio.open_nursery() as nursery:
            for address in self._config.bootstrap:
                nursery.start_soon(one, address)

    async def keep_bootstrap(self, address: str) -> None:
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
                await self._peers_changed().wait()
                continue
            if lost_at is None:
                lost_at = trio.current_time()
                log.warning("lost bootstrap peer %s; redialling", address)
            await trio.sleep(backoff.delay())
            if key in self._connected or self._is_banned(key):
                continue
            with contextlib.suppress(Exception):
                self._host.get_network().unblock_peer(info.peer_id)
            try:
                await self.connect(address)
            except NetworkError as exc:
                log.debug("redialling bootstrap peer %s: %s", address, exc)

    def _peer_addresses(self, peer: PeerKey, at: str | None = None) -> list[str]:
        """Up to ``PER_PEER`` direct addresses the peerstore holds for ``peer`` (identify's
        listen addresses), each ending in ``/p2p/<peer id>``; with ``at``, only those at
        that IP address."""
        pid = peer_id_of(peer)
        suffix = f"/p2p/{protocol.peer_id(peer)}"
        out: list[str] = []
        with contextlib.suppress(Exception):
            for addr in self._host.get_peerstore().addrs(pid) or []:
                text = str(addr)
                if "/p2p-circuit" in text or (at is not None and _ip_of(text) != at):
                    continue
                out.append(text if "/p2p/" in text else text + suffix)
        return out[: _peer_memory.PER_PEER]

    def _remembered_now(self) -> tuple[list[str], list[str]]:
        """The addresses to remember of the peers connected now: the node's own peers'
        (all their listen addresses), and any other peer's, only at the IP address its
        connection comes from, one address an IP (what strangers choose is dialled at the
        next start: 20 keys named 62 addresses, round 40, F2)."""
        own = self._own_peers()
        ours: list[str] = []
        others: list[str] = []
        hosts: set[str] = set()
        for key in list(self._connected):
            if key in own:
                ours.extend(self._peer_addresses(key))
                continue
            ip: str | None = None
            with contextlib.suppress(Exception):
                conns = self._host.get_network().get_connections(peer_id_of(key))
                ip = socket_ip(conns[0].muxed_conn) if conns else None
            if ip is None or ip in hosts:
                continue
            found = self._peer_addresses(key, at=ip)[:1]
            if found:
                hosts.add(ip)
                others.extend(found)
        return ours, others

    async def remember_peers(self, path: Path) -> None:
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
                        await self.dial(PeerInfo(pid, addrs), False)

            async with trio.open_nursery() as nursery:
                for key, addrs in by_peer.items():
                    nursery.start_soon(dial, key, addrs)
        saved = kept
        while True:
            await trio.sleep(self._config.peers_save_interval)
            ours, others = self._remembered_now()
            merged = _peer_memory.merge(ours, saved, others)
            if merged != saved:
                await trio.to_thread.run_sync(_peer_memory.save, path, merged)
                saved = merged


def _ip_of(address: str) -> str | None:
    """The IP address of a ``/ip4/...`` or ``/ip6/...`` multiaddress's text."""
    parts = address.split("/")
    if len(parts) > 2 and parts[1] in ("ip4", "ip6"):
        return parts[2]
    return None


def _is_circuit(address: multiaddr.Multiaddr) -> bool:
    """Whether ``address`` goes through a relay (has a ``p2p-circuit`` part)."""
    try:
        return any(p.name == "p2p-circuit" for p in address.protocols())
    except Exception:  # a peer's address py-libp2p took but cannot read back: not ours
        return False
