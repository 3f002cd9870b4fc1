"""The trust boundary of a libp2p host: every inbound stream, ours and py-libp2p's.

py-libp2p lets an exception in a stream handler escape into the host, serves any number of
streams from one peer, and accepts streams from a peer we banned. Here:

- :class:`GuardedHandlers` replaces the host's table of stream handlers, so that every
  handler set on it (meshsub, kad, identify, ping, relay, ours, and those set later) is
  wrapped as it is set;
- :class:`InboundGuard` is that wrapper: a stream from a banned peer, or from a peer with
  ``MAX_INBOUND_PER_PEER`` streams open, is reset; whatever the handler raises on the
  peer's bytes resets the stream, is counted and counts against the peer; the streams of
  a protocol given slots (the DHT's) share them fairly (:mod:`._fair_slots`); a stream
  whose handler is done and which its peer left open is ended (:func:`finish`: nothing
  reads it again);
- :func:`guard` is the plain wrapper for handlers set outside that table (the relay's).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Container, Hashable, Iterator, Mapping
from typing import Any

import trio
from libp2p.relay.circuit_v2.protocol import STOP_PROTOCOL_ID

import protocol

from ._fair_slots import FairSlots
from ._interface import NetworkCounters, PeerKey
from ._libp2p_logging import Serving, Tally, serving_peer
from ._libp2p_transport import key_of
from ._limits import MAX_INBOUND_PER_PEER

log = logging.getLogger(__name__)
_TALLY = Tally(log)

StreamHandler = Callable[[Any], Awaitable[None]]


async def reset(stream: Any) -> None:
    """Reset a stream, bounded and shielded: also on the way out of a cancelled task."""
    with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
        await stream.reset()


#: Protocols whose handler hands its stream on when it returns: a relayed connection runs
#: on its ``STOP`` stream.
HANDED_ON = frozenset({str(STOP_PROTOCOL_ID)})


#: A stream whose handler returned is reset this long after our close unless its peer
#: closed it meanwhile (seconds), and its closing is looked for this often.
FINISH_GRACE_S = 1.0
FINISH_POLL_S = 0.05


async def finish(stream: Any) -> None:
    """The handler of an inbound stream returned: nothing reads the stream again. Unless its
    peer closed it too, our side is closed (the end of our answer), and unless the peer then
    closes its side within :data:`FINISH_GRACE_S`, the stream is reset, which drops what the
    peer left unread or still sends; the peer keeps what came before our close (py-libp2p's
    and go-yamux's reads return it after a reset that follows it). py-libp2p kept such a
    stream, and its unread data, until the connection closed: one stranger's 4,000
    identify-push streams written to and never closed held 953 MiB (round 47, Y2). The
    grace is for a peer that reads its answers late: a reset at once made each answer a
    fully closed stream on its side, and past 32 of those unread on a connection it
    dropped the oldest (round 48, I1). The handler's slot is held meanwhile."""
    muxed = getattr(stream, "muxed_stream", None)
    if muxed is None or getattr(muxed, "closed", True):
        return
    try:
        if not muxed.send_closed:
            with trio.move_on_after(1), contextlib.suppress(Exception):
                await stream.close()
        with trio.move_on_after(FINISH_GRACE_S):
            while not muxed.closed:
                await trio.sleep(FINISH_POLL_S)
    finally:
        if not muxed.closed:
            await reset(stream)


def host_of(stream: Any, peer: PeerKey) -> Hashable:
    """The host a stream's peer shares inbound slots with (:mod:`._fair_slots`): the IP
    address its direct connection comes from (an IPv6 address standing for an IPv4 one as
    that; IPv6 by its /56, a usual delegation to one subscriber: by /64, one /56 was 256
    hosts, round 23, R23-2); a direct connection whose address cannot be read shares one
    host with every other such; a relayed connection (whose address is the relay's) is its
    peer's key alone."""
    from libp2p.connection_types import ConnectionType

    try:
        conn = stream.muxed_conn
        relayed = conn.get_connection_type() == ConnectionType.RELAYED
    except Exception:
        relayed = False
    if relayed:
        return peer
    return host_of_address(_peer_ip(stream))


def host_of_address(address: str | None) -> Hashable:
    """The host an IP address counts as (:func:`host_of`): IPv4 whole, IPv6 by its /56."""
    if address is None:
        return ("ip", "unknown")
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return ("ip", "unknown")
    if isinstance(ip, ipaddress.IPv6Address):
        ip = _embedded_ipv4(ip) or ip
    if isinstance(ip, ipaddress.IPv6Address):
        return ("ip6", ipaddress.ip_network(f"{ip}/56", strict=False).network_address.packed)
    return ("ip", str(ip))


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped (an IPv4 client of a
    dual-stack listener), NAT64's well-known prefix, 6to4 or Teredo (the client's)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def _peer_ip(stream: Any) -> str | None:
    """The remote IP address of ``stream``'s TCP socket (py-libp2p 0.8.1's own
    ``get_remote_address`` reads IPv4 only: an IPv6 socket's address is a 4-tuple)."""
    return socket_ip(getattr(stream, "muxed_conn", None))


def socket_ip(conn: Any) -> str | None:
    """The remote IP address of the TCP socket under ``conn`` (a muxed, secured or raw
    connection, or a listener's stream)."""
    for obj in layers(conn):
        sock = getattr(obj, "socket", None)
        if sock is not None and hasattr(sock, "getpeername"):
            try:
                address = sock.getpeername()
            except OSError:
                return None
            if isinstance(address, tuple) and address and isinstance(address[0], str):
                return address[0]
            return None
    return None


def layers(conn: Any) -> Iterator[Any]:
    """``conn`` and what it runs on, top down (Yamux, SecureSession, Noise's
    reader-writer, RawConnection, a TCP stream or, for a relayed connection, a stream of
    the relay's connection), at most 8."""
    obj: Any = conn
    for _ in range(8):
        if obj is None:
            return
        yield obj
        obj = next(
            (
                getattr(obj, name)
                for name in ("secured_conn", "conn", "stream")
                if getattr(obj, name, None) is not None
            ),
            None,
        )


def who(stream: Any) -> str:
    """The peer id at the other end of ``stream``, for a log line."""
    try:
        return str(stream.muxed_conn.peer_id)
    except Exception:
        return "(no peer id)"


def guard(handler: StreamHandler, counters: NetworkCounters) -> StreamHandler:
    """Wrap a libp2p stream handler so that nothing escapes into the host."""

    async def guarded(stream: Any) -> None:
        try:
            await handler(stream)
        except Exception as exc:
            counters.requests_rejected += 1
            log.debug(
                "stream handler %s failed on a stream from peer %s: %r",
                handler.__name__,
                who(stream),
                exc,
            )
            await reset(stream)

    return guarded


class GuardedHandlers(dict[Any, Any]):
    """py-libp2p's table of stream handlers (``Multiselect.handlers``) with every handler
    wrapped by ``wrap(protocol_id, handler)`` as it is set: py-libp2p's own protocols
    (meshsub, kad, identify, ping, relay) as well as ours, and those it sets later (the DHT
    sets its handler again when it changes mode). A handler is wrapped once."""

    def __init__(
        self,
        table: dict[Any, Any],
        wrap: Callable[[str, StreamHandler], StreamHandler],
    ) -> None:
        super().__init__()
        self._wrap = wrap
        for protocol_id, handler in table.items():
            self[protocol_id] = handler

    def __setitem__(self, protocol_id: Any, handler: Any) -> None:
        if handler is not None and not getattr(handler, "aimx_guarded", False):
            handler = self._wrap(str(protocol_id), handler)
        super().__setitem__(protocol_id, handler)


class InboundGuard:
    """Wraps the stream handler of a protocol (``guard(protocol_id, handler)``) for the
    network's rules: ``is_banned``, at most ``MAX_INBOUND_PER_PEER`` streams open per
    peer, failures counted in ``counters`` and reported to ``misbehaved(peer, reason)``.
    ``ours`` are the protocols the network serves itself; on the others (py-libp2p's),
    the task names the peer for py-libp2p's log lines (:data:`serving_peer`)."""

    def __init__(
        self,
        counters: NetworkCounters,
        ours: Container[str],
        is_banned: Callable[[PeerKey], bool],
        misbehaved: Callable[[PeerKey, str], None],
        slots: Mapping[str, FairSlots] | None = None,
    ) -> None:
        self._counters = counters
        self._ours = ours
        self._is_banned = is_banned
        self._misbehaved = misbehaved
        self._streams_of: dict[PeerKey, int] = {}
        #: Protocols whose streams share slots fairly (py-libp2p's DHT, whose own limit
        #: refuses newcomers while a few keys hold every slot: review round 16, A2a).
        self._slots = dict(slots or {})

    def __call__(self, protocol_id: str, handler: StreamHandler) -> StreamHandler:
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
            name = protocol.peer_id(peer)
            if self._is_banned(peer):
                self._counters.refused_banned += 1
                log.debug("refused a stream on %s from banned peer %s", protocol_id, name)
                await reset(stream)
                return
            if self._streams_of.get(peer, 0) >= MAX_INBOUND_PER_PEER:
                self._counters.requests_rejected += 1
                _TALLY.note(f"streams refused (their peer had {MAX_INBOUND_PER_PEER} open)", name)
                await reset(stream)
                return
            shared = self._slots.get(protocol_id)
            slot = await shared.acquire(peer, host_of(stream, peer)) if shared is not None else None
            if slot is not None:
                slot.exchanging = True  # nothing said of its exchanges: its age decides
            if shared is not None and slot is None:
                self._counters.requests_rejected += 1
                log.debug("refused a stream on %s from peer %s: no slot", protocol_id, name)
                await reset(stream)
                return
            self._streams_of[peer] = self._streams_of.get(peer, 0) + 1
            # py-libp2p's own handlers log a peer's bad bytes without naming the peer:
            # its records from this task name it (our handlers name it themselves)
            token = (
                serving_peer.set(Serving(peer, name, protocol_id))
                if protocol_id not in self._ours
                else None
            )
            try:
                if slot is None:
                    await handler(stream)
                else:
                    with slot.scope:
                        await handler(stream)
                    if slot.evicted:
                        log.debug(
                            "took the slot of a stream on %s from peer %s (a peer holding "
                            "fewer needed one)",
                            protocol_id,
                            name,
                        )
                        await reset(stream)
                if protocol_id not in HANDED_ON:
                    await finish(stream)
            except Exception as exc:
                self._counters.requests_rejected += 1
                _TALLY.note(f"streams on {protocol_id} failed", f"{name} ({exc!r:.200})")
                await reset(stream)
                self._misbehaved(peer, f"broke {protocol_id}: {exc!r}"[:300])
            finally:
                if shared is not None and slot is not None:
                    shared.leave(slot)
                if token is not None:
                    serving_peer.reset(token)
                left = self._streams_of.get(peer, 1) - 1
                if left > 0:
                    self._streams_of[peer] = left
                else:
                    self._streams_of.pop(peer, None)

        guarded.aimx_guarded = True  # type: ignore[attr-defined]
        return guarded
