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
  (which never connect, so nothing would ever end them);
- circuits (``CONNECT``) are bounded per source: :data:`MAX_CIRCUITS_PER_SOURCE` for one
  source peer, :data:`MAX_CIRCUITS_PER_HOST_TO_PEER` from one source host to one
  destination (an eighth of a reservation's 64), so that one key, with no reservation of
  its own, no longer takes all of an honest private node's slots (round 46, R1); a
  circuit ends at its duration even when idle (py-libp2p checked it only after a read);
- each circuit is its own: its two directions run in one nursery, and it closes or
  resets only its own two streams. py-libp2p kept the streams of the newest circuit by
  peer and closed those when any circuit of that peer ended, so a stranger resetting its
  circuit to a private node cut the honest circuit opened after it (round 46, R2). When
  one direction ends cleanly its end is passed on and the other has
  :data:`HALF_CLOSED_GRACE_S` to end too.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Hashable
from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, Limit, StopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as CircuitPeerId
from libp2p.relay.circuit_v2.protocol import STOP_PROTOCOL_ID, CircuitV2Protocol
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
from libp2p.relay.circuit_v2.resources import RelayLimits, RelayResourceManager, Reservation
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

from ._libp2p_inbound import host_of, reset
from ._libp2p_logging import Tally
from ._libp2p_transport import key_of

log = logging.getLogger(__name__)
_TALLY = Tally(log)

#: Circuits one source peer may have through this relay at once.
MAX_CIRCUITS_PER_SOURCE = 16
#: Circuits from one source host (all its keys) to one destination at once.
MAX_CIRCUITS_PER_HOST_TO_PEER = 8
#: A circuit is set up (the destination reached and answering ``STOP``) within this long.
CIRCUIT_SETUP_TIMEOUT_S = 15.0
#: One direction of a circuit ended cleanly: the other has this long to end too.
HALF_CLOSED_GRACE_S = 30.0
#: A refused ``CONNECT``'s stream is reset this long after its answer (seconds).
REFUSAL_GRACE_S = 0.5
#: Bytes read from a circuit's side at once.
CIRCUIT_READ_BYTES = 64 << 10


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


def _release(counter: Counter[Any], key: Any) -> None:
    """One fewer under ``key``; a count reaching 0 is dropped."""
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class HopProtocol(CircuitV2Protocol):
    """py-libp2p's circuit relay v2 with :class:`Reservations`; a ``RESERVE`` is for the
    peer of its connection, counted under the host its stream comes from."""

    def __init__(self, host: Any, limits: RelayLimits, allow_hop: bool) -> None:
        super().__init__(host, limits=limits, allow_hop=allow_hop)
        self.reservations = Reservations(self.limits, host)
        self.resource_manager = self.reservations
        #: Circuits held (or being set up) per source peer, and per source host and
        #: destination.
        self.by_source: Counter[ID] = Counter()
        self.by_host_to_peer: Counter[tuple[Hashable, ID]] = Counter()

    async def _handle_reserve(self, stream: Any, msg: HopMessage) -> None:
        peer = stream.muxed_conn.peer_id
        msg.ClearField("peer")  # py-libp2p reserves for the peer named, if any
        self.reservations.arriving[peer] = host_of(stream, key_of(peer) or peer.to_bytes())
        try:
            await super()._handle_reserve(stream, msg)
        finally:
            self.reservations.arriving.pop(peer, None)

    async def _handle_connect(self, stream: Any, msg: HopMessage) -> None:
        """A ``CONNECT``: refused past the source's bounds, else the circuit to the
        destination, set up and relayed as its own (:meth:`_circuit`)."""
        source = stream.muxed_conn.peer_id
        try:
            dest = ID(msg.peer.id)
        except Exception:
            await self._refuse(stream, StatusCode.MALFORMED_MESSAGE, "no destination peer id")
            return
        if msg.HasField("reservation") and not self.reservations.verify_reservation(
            source, msg.reservation
        ):
            await self._refuse(stream, StatusCode.PERMISSION_DENIED, "invalid reservation")
            return
        if not self.reservations.can_accept_connection(peer_id=dest):
            await self._refuse(
                stream, StatusCode.NO_RESERVATION, "the destination has no room at this relay"
            )
            return
        group = host_of(stream, key_of(source) or source.to_bytes())
        pair = (group, dest)
        if (
            self.by_source[source] >= MAX_CIRCUITS_PER_SOURCE
            or self.by_host_to_peer[pair] >= MAX_CIRCUITS_PER_HOST_TO_PEER
        ):
            _TALLY.note("relay circuits refused (the source had its share)", group)
            await self._refuse(
                stream, StatusCode.RESOURCE_LIMIT_EXCEEDED, "too many circuits from this source"
            )
            return
        self.by_source[source] += 1
        self.by_host_to_peer[pair] += 1
        try:
            await self._circuit(stream, source, dest)
        finally:
            _release(self.by_source, source)
            _release(self.by_host_to_peer, pair)

    async def _circuit(self, stream: Any, source: ID, dest: ID) -> None:
        """Reach ``dest`` over ``STOP``, answer ``OK`` and relay until either side ends or
        the circuit's duration or data is spent; only this circuit's two streams are
        closed or reset at its end."""
        limits = self.limits
        dst_stream: Any = None
        reservation: Reservation | None = None
        answered = False
        try:
            with trio.move_on_after(limits.duration if limits.duration > 0 else math.inf):
                with trio.fail_after(CIRCUIT_SETUP_TIMEOUT_S):
                    dst_stream = await self.host.new_stream(dest, [STOP_PROTOCOL_ID])
                    stop = StopMessage(
                        type=StopMessage.CONNECT,
                        peer=CircuitPeerId(id=source.to_bytes()),
                        limit=Limit(duration=limits.duration, data=limits.data),
                    )
                    await write_delimited_msg(dst_stream, stop)
                    answer = await read_delimited_msg(dst_stream, StopMessage)
                if answer.HasField("status") and int(answer.status) != int(StatusCode.OK):
                    raise ConnectionError(f"the destination refused: status {answer.status}")
                reservation = self.reservations.get_reservation(dest)
                if reservation is not None:
                    reservation.active_connections += 1
                answered = True
                await self._send_status(
                    stream,
                    StatusCode.OK,
                    "Connection established",
                    limit=Limit(duration=limits.duration, data=limits.data),
                )
                budget = [limits.data] if limits.data > 0 else None
                async with trio.open_nursery() as nursery:
                    scope = nursery.cancel_scope
                    nursery.start_soon(self._pipe, stream, dst_stream, budget, scope)
                    nursery.start_soon(self._pipe, dst_stream, stream, budget, scope)
        except Exception as exc:  # the destination unreachable, refusing or gone
            log.debug("relay circuit %s -> %s failed: %s", source, dest, exc)
            if not answered:
                with trio.CancelScope(shield=True), trio.move_on_after(self.close_timeout):
                    await self._refuse(stream, StatusCode.CONNECTION_FAILED, str(exc)[:200])
        finally:
            if reservation is not None:
                reservation.active_connections = max(0, reservation.active_connections - 1)
            for end in (stream, dst_stream):
                if end is not None:
                    await reset(end)  # a no-op on a stream closed both ways

    async def _pipe(
        self, src: Any, dst: Any, budget: list[int] | None, circuit: trio.CancelScope
    ) -> None:
        """One direction of a circuit: ``src`` to ``dst``. Its clean end is passed on
        (``dst`` closed for writing) and gives the other direction
        :data:`HALF_CLOSED_GRACE_S`; an error, a reset or the data budget spent ends the
        circuit."""
        try:
            while True:
                data = await src.read(CIRCUIT_READ_BYTES)
                if not data:
                    with trio.fail_after(self.close_timeout):
                        await dst.close()
                    circuit.deadline = min(
                        circuit.deadline, trio.current_time() + HALF_CLOSED_GRACE_S
                    )
                    return
                if budget is not None:
                    if len(data) > budget[0]:
                        log.debug("relay circuit ended: its data limit is spent")
                        circuit.cancel()
                        return
                    budget[0] -= len(data)
                with trio.fail_after(self.write_timeout):
                    await dst.write(data)
        except Exception as exc:  # a side reset or gone, or a write that timed out
            log.debug("relay circuit ended: %s", exc)
            circuit.cancel()

    async def _refuse(self, stream: Any, code: Any, why: str) -> None:
        """Answer a ``CONNECT`` with ``code`` and reset its stream
        :data:`REFUSAL_GRACE_S` later (a reset drops what its peer has not read yet)."""
        try:
            await self._send_status(stream, code, why)
            await trio.sleep(REFUSAL_GRACE_S)
        finally:
            await reset(stream)
