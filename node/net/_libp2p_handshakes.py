"""Inbound TCP connections on a py-libp2p listener: their slots, and sockets in handshake.

py-libp2p 0.8.1 takes one of its 300 inbound slots for every socket it accepts, before a
byte is read, and its listener task then waits for the whole swarm to end: the slot and
the task were held after the connection closed, so a node took no inbound connection
after its 300th (round 35: twelve peers that connected and left held twelve slots; one
IP's 300 idle sockets, sending nothing, refused every new peer for as long as they were
reopened). Here:

- a connection's listener task, and its slot, end when its connection closes;
- a host (an IP address, an IPv6 /56) has at most :data:`MAX_HANDSHAKES_PER_HOST` sockets
  in handshake (from accept to the muxer's start); more are closed at once;
- all hosts together have at most :data:`MAX_HANDSHAKES`; a socket past that takes the
  place of the oldest of the host holding the most, whose handshake is cut short;
- with every slot held, a newcomer is let in (8 at once, 2 a host, a full table cutting
  the oldest of the host holding the most), and once its handshake is done
  takes the slot of the newest connection of the host holding the most connections, if
  that host holds at least two more than the newcomer's (fresh keys from one host, each
  completing its handshake, held every slot), else it is closed;
- a handshake lasts at most ``INBOUND_UPGRADE_TIMEOUT_S`` (the host's connection config);
- a multistream-select message, which every handshake and every stream starts with, is at
  most :data:`MAX_MULTISTREAM_MESSAGE` bytes.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Hashable
from typing import Any, Generic, Protocol, TypeVar

import trio

from ._libp2p_inbound import host_of_address, socket_ip
from ._libp2p_logging import Tally
from ._limits import (
    MAX_HANDSHAKES,
    MAX_HANDSHAKES_PER_HOST,
    MAX_NEWCOMERS,
    MAX_NEWCOMERS_PER_HOST,
)

log = logging.getLogger(__name__)


class _Inbound:
    """One accepted socket: its host, the scope that ends its listener task, its muxed
    connection once the handshake is done."""

    def __init__(self, host: Hashable, stream: Any = None) -> None:
        self.host = host
        self.stream = stream
        self.scope: trio.CancelScope | None = None
        self.upgraded = trio.Event()
        self.ended = trio.Event()
        self.muxed: Any = None
        self.newcomer = False


class _Entry(Protocol):
    host: Hashable


E = TypeVar("E", bound=_Entry)


class HostShares(Generic[E]):
    """Entries (sockets, streams) held at once: at most ``per_host`` a host and ``total`` in
    all, by host, oldest first; a full table gives a newcomer the place of the oldest of
    the host holding the most."""

    def __init__(self, per_host: int, total: int) -> None:
        self.per_host = per_host
        self.total = total
        self.by_host: dict[Hashable, list[E]] = {}
        self.count = 0

    def admit(self, entry: E) -> tuple[bool, E | None]:
        """Count ``entry``, unless its host already has its share; and the entry it takes
        the place of when the table is full, no longer counted, for the caller to end."""
        if len(self.by_host.get(entry.host, ())) >= self.per_host:
            return False, None
        evicted = None
        if self.count >= self.total:
            evicted = max(self.by_host.values(), key=len)[0]
            self.leave(evicted)
        self.by_host.setdefault(entry.host, []).append(entry)
        self.count += 1
        return True, evicted

    def leave(self, entry: E) -> None:
        held = self.by_host.get(entry.host)
        if held is None or entry not in held:
            return
        held.remove(entry)
        self.count -= 1
        if not held:
            del self.by_host[entry.host]


class Handshakes(HostShares[_Inbound]):
    """A swarm's sockets in handshake, and its inbound connections, by host, oldest first."""

    def __init__(self) -> None:
        super().__init__(MAX_HANDSHAKES_PER_HOST, MAX_HANDSHAKES)
        self.connected: dict[Hashable, list[_Inbound]] = {}
        self.newcomers: HostShares[_Inbound] = HostShares(MAX_NEWCOMERS_PER_HOST, MAX_NEWCOMERS)

    def upgraded(self, entry: _Inbound) -> None:
        """``entry``'s handshake is done: it holds a connection now."""
        self.leave(entry)
        self.connected.setdefault(entry.host, []).append(entry)

    def ended(self, entry: _Inbound) -> None:
        self.leave(entry)
        held = self.connected.get(entry.host)
        if held is not None and entry in held:
            held.remove(entry)
            if not held:
                del self.connected[entry.host]

    def room_for(self, host: Hashable) -> _Inbound | None:
        """The connection a newcomer from ``host`` takes the slot of when every slot is held:
        the newest of the host holding the most, if that holds at least two more than
        ``host`` (a host's only connection is never taken, nor one that would only move
        the imbalance to the newcomer's host)."""
        if not self.connected:
            return None
        largest = max(self.connected.values(), key=len)
        if len(largest) < len(self.connected.get(host, ())) + 2:
            return None
        return largest[-1]


_TALLY = Tally(log)

#: Each swarm's table, and each accepted socket's entry (by its listener stream).
_TABLES: weakref.WeakKeyDictionary[Any, Handshakes] = weakref.WeakKeyDictionary()
_ENTRIES: weakref.WeakKeyDictionary[Any, _Inbound] = weakref.WeakKeyDictionary()


def handshakes(swarm: Any) -> Handshakes:
    table = _TABLES.get(swarm)
    if table is None:
        table = _TABLES[swarm] = Handshakes()
    return table


async def _close(stream: Any) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(1):
        try:
            await stream.close()
        except Exception:
            log.debug("closing a refused socket failed", exc_info=True)


async def _end_with_connection(entry: _Inbound, scope: trio.CancelScope) -> None:
    await entry.upgraded.wait()
    closed = getattr(entry.muxed, "event_closed", None)
    if closed is None:
        return  # no way to tell: py-libp2p's own lifetime
    await closed.wait()
    scope.cancel()


async def _let_in(swarm: Any, table: Handshakes, entry: _Inbound) -> None:
    """Every inbound slot is held, and a connection could be taken for ``entry``'s host: let
    it in on a slot of its own; whose connection it takes is decided once its handshake is
    done (:func:`_take_for`). Decided at once, a socket that sent nothing took one, and one
    address cut an honest host from 6 connections to 1 (round 37, N1)."""
    admitted, evicted = table.newcomers.admit(entry)
    if not admitted:
        return
    swarm._inbound_limiter.total_tokens += 1
    entry.newcomer = True
    if evicted is not None:  # its handshake fails, and its place is given back (_let_in_done)
        _TALLY.note("newcomers cut short (every newcomer place taken)", evicted.host)
        await _close(evicted.stream)


def _let_in_done(swarm: Any, table: Handshakes, entry: _Inbound) -> None:
    if entry.newcomer:
        entry.newcomer = False
        table.newcomers.leave(entry)
        swarm._inbound_limiter.total_tokens -= 1


async def _close_connection(entry: _Inbound, *, wait: bool) -> None:
    """Close ``entry``'s connection and end its listener task (waited for if ``wait``:
    not from that task itself)."""
    with trio.CancelScope(shield=True), trio.move_on_after(1):
        try:
            await entry.muxed.close()
        except Exception:
            log.debug("closing a connection for a newcomer failed", exc_info=True)
        if entry.scope is not None:
            entry.scope.cancel()
        if wait:
            await entry.ended.wait()


async def _take_for(table: Handshakes, newcomer: _Inbound) -> None:
    """``newcomer``'s handshake is done with every slot held: it takes the newest
    connection of the host holding the most, if that host still holds at least two more
    than its own (fresh keys from one host held all 300), else it is closed itself."""
    victim = table.room_for(newcomer.host)
    if victim is None:  # its listener task, ours, forgets it as it ends
        _TALLY.note("newcomers closed (every inbound slot held)", newcomer.host)
        await _close_connection(newcomer, wait=False)
        return
    table.upgraded(newcomer)
    _TALLY.note("connections closed for newcomers (every inbound slot held)", victim.host)
    table.ended(victim)
    await _close_connection(victim, wait=True)


def install() -> None:
    """Patch py-libp2p's swarm (once per process, by :func:`node.net._libp2p_tuning.install`)."""
    from libp2p.network.swarm import Swarm

    handle = Swarm._handle_inbound_connection
    upgrade = Swarm.upgrade_inbound_raw_conn

    async def handle_inbound_connection(self: Any, stream: Any, maddr: Any) -> None:
        entry = _Inbound(host_of_address(socket_ip(stream)), stream)
        table = handshakes(self)
        admitted, evicted = table.admit(entry)
        if evicted is not None:
            # Closed, not cancelled: py-libp2p's upgrade then fails as on any lost socket
            # and releases what it holds; cancelled, its resource manager kept the
            # connection counted for good, and five hosts' idle sockets cut the node off
            # in and out within seconds (round 36, F1).
            _TALLY.note("handshakes cut short (every place taken)", evicted.host)
            await _close(evicted.stream)
        if not admitted:
            _TALLY.note("sockets closed (their host had its share in handshake)", entry.host)
            await _close(stream)
            return
        _ENTRIES[stream] = entry
        try:
            if (
                self._inbound_limiter.available_tokens == 0
                and table.room_for(entry.host) is not None
            ):
                await _let_in(self, table, entry)
            async with trio.open_nursery() as nursery:
                entry.scope = nursery.cancel_scope
                nursery.start_soon(_end_with_connection, entry, nursery.cancel_scope)
                await handle(self, stream, maddr)
                nursery.cancel_scope.cancel()
        finally:
            _let_in_done(self, table, entry)  # its handshake failed, if still let in
            table.ended(entry)
            entry.ended.set()
            _ENTRIES.pop(stream, None)

    async def upgrade_inbound_raw_conn(self: Any, raw_conn: Any, maddr: Any) -> Any:
        muxed = await upgrade(self, raw_conn, maddr)
        entry = _ENTRIES.get(getattr(raw_conn, "stream", None))
        if entry is not None:  # a listener's socket (not a relayed one): its handshake is over
            entry.muxed = muxed
            table = handshakes(self)
            if entry.newcomer:
                _let_in_done(self, table, entry)
                entry.upgraded.set()
                await _take_for(table, entry)
            else:
                table.upgraded(entry)
                entry.upgraded.set()
        return muxed

    _bound_multistream_messages()
    Swarm._handle_inbound_connection = handle_inbound_connection  # type: ignore[method-assign,assignment]
    Swarm.upgrade_inbound_raw_conn = upgrade_inbound_raw_conn  # type: ignore[method-assign]


#: Longest multistream-select message read (a protocol id, "na", "ls"); go-multistream's
#: own bound is of this size.
MAX_MULTISTREAM_MESSAGE = 1024


def _bound_multistream_messages() -> None:
    """py-libp2p read a multistream-select message of whatever length its varint declared,
    before any key was exchanged: one socket with no key added 200 MB to a node while it
    sent 200 MiB (round 35). A longer message is refused as malformed."""
    from libp2p.exceptions import ParseError
    from libp2p.protocol_muxer import multiselect_communicator
    from libp2p.utils.varint import read_varint_prefixed_bytes_limited

    async def read_delim(reader: Any) -> bytes:
        message = await read_varint_prefixed_bytes_limited(reader, MAX_MULTISTREAM_MESSAGE)
        if not message.endswith(b"\n"):
            raise ParseError("a multistream message must end with a newline")
        return message[:-1]

    multiselect_communicator.read_delim = read_delim  # type: ignore[attr-defined]
