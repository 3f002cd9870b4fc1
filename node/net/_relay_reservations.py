"""A relay's reservations, held only by connected peers and shared by host (round 29, F4).

py-libp2p 0.8.1's relay (``RelayResourceManager``) grants a reservation to any peer while
fewer than ``max_reservations`` are held, keeps it for its whole TTL (an hour) whether or
not the peer stays connected, and counts nothing per host. 128 fresh keys each reserving
and leaving filled a coordinator's table in 5 s, and every new home node was refused
(``RESOURCE_LIMIT_EXCEEDED``) for the hour after (review round 29, F4). Here:

- a reservation ends when its peer's last connection to us closes (:meth:`Reservations.
  forget`, called by the host's disconnection hook), and none is granted to a peer that is
  not connected: a reservation only serves while its peer is connected to take ``STOP``
  (a private node reserves again at once when it reconnects: _libp2p_relay.py);
- reservations are counted by host (:func:`._libp2p_inbound.host_of`: the IP address, an
  IPv6 /56), as inbound stream slots are (:mod:`._fair_slots`): when the table is full, a
  newcomer takes the newest reservation of the host holding the most, if that host holds
  more than the newcomer's does. There is no cap per host while the table has room: many
  honest homes can share one address (a carrier-grade NAT, a campus), and a cap would
  refuse them with places free; a flood from one host yields a place to every other host
  that asks, and one from many hosts must keep a connection open per key and loses its
  newest places first;
- a ``RESERVE`` is for the peer of the connection it came on: py-libp2p took the peer id
  the message named, so one connection could reserve under any number of made-up ids
  (which never connect, so nothing would ever end them).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any

from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits, RelayResourceManager, Reservation

from ._libp2p_inbound import host_of
from ._libp2p_transport import key_of

log = logging.getLogger(__name__)


class Reservations(RelayResourceManager):
    """py-libp2p's reservation table, held only by connected peers and shared by host."""

    def __init__(self, limits: RelayLimits, host: Any) -> None:
        super().__init__(limits, host)
        #: The host each reservation counts under.
        self._host_of: dict[ID, Hashable] = {}
        #: The host of a ``RESERVE`` being handled, by its peer (set by :class:`HopProtocol`).
        self.arriving: dict[ID, Hashable] = {}
        #: Reservations taken from their holders for a newcomer so far.
        self.evicted = 0

    def held_by_host(self, group: Hashable) -> int:
        return sum(1 for peer in self._reservations if self._host_of.get(peer) == group)

    def forget(self, peer: ID) -> None:
        """``peer``'s last connection to us closed: its reservation ends."""
        if self._reservations.pop(peer, None) is not None:
            log.debug("relay reservation of %s ended with its connection", peer)
        self._host_of.pop(peer, None)

    def can_accept_reservation(self, peer_id: ID) -> bool:
        """Whether ``peer_id`` may hold a reservation: it is connected, and it holds one or
        a place is free, or one is taken for it (:meth:`_evict_for`)."""
        self._clean_expired()
        if not self._is_peer_connected(peer_id):
            return False
        existing = self._reservations.get(peer_id)
        if existing is not None and not existing.is_expired():
            return True
        if len(self._reservations) < self.limits.max_reservations:
            return True
        return self._evict_for(self._group(peer_id))

    def create_reservation(self, peer_id: ID) -> Reservation:
        reservation = super().create_reservation(peer_id)
        self._host_of[peer_id] = self._group(peer_id)
        return reservation

    def _clean_expired(self) -> None:
        super()._clean_expired()
        for peer in [p for p in self._host_of if p not in self._reservations]:
            del self._host_of[peer]

    def _group(self, peer: ID) -> Hashable:
        """The host ``peer`` reserves from: that of the stream its ``RESERVE`` came on, else
        that of its first connection."""
        group = self.arriving.get(peer)
        if group is not None:
            return group
        key = key_of(peer) or peer.to_bytes()
        try:
            conns = self.host.get_network().get_connections(peer) if self.host else []
        except Exception:
            conns = []
        return host_of(conns[0], key) if conns else key

    def _evict_for(self, group: Hashable) -> bool:
        """Take a place for a newcomer of host ``group``: the newest reservation of the host
        holding the most (the newest of those holding as many), if it holds more than
        ``group`` does. A host's long-held places are the last it loses."""
        held: dict[Hashable, int] = {}
        for peer in self._reservations:
            other = self._host_of.get(peer)
            held[other] = held.get(other, 0) + 1
        most = max(held.values(), default=0)
        if most <= held.get(group, 0):
            return False
        victim = max(
            (p for p in self._reservations if held[self._host_of.get(p)] == most),
            key=lambda p: self._reservations[p].created_at,
        )
        log.info(
            "relay reservation of %s (its host holding %d) given up to a newcomer",
            victim,
            most,
        )
        del self._reservations[victim]
        self._host_of.pop(victim, None)
        self.evicted += 1
        return True


class HopProtocol(CircuitV2Protocol):
    """py-libp2p's circuit relay v2 with :class:`Reservations`; a ``RESERVE`` is for the
    peer of its connection, counted under the host its stream comes from."""

    def __init__(self, host: Any, limits: RelayLimits, allow_hop: bool) -> None:
        super().__init__(host, limits=limits, allow_hop=allow_hop)
        self.reservations = Reservations(self.limits, host)
        self.resource_manager = self.reservations

    async def _handle_reserve(self, stream: Any, msg: HopMessage) -> None:
        peer = stream.muxed_conn.peer_id
        msg.ClearField("peer")  # py-libp2p reserves for the peer named, if any
        self.reservations.arriving[peer] = host_of(stream, key_of(peer) or peer.to_bytes())
        try:
            await super()._handle_reserve(stream, msg)
        finally:
            self.reservations.arriving.pop(peer, None)
