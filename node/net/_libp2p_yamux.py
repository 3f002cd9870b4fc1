"""py-libp2p's yamux, bounded against a stranger (specs/network.md, "Transport limits").

- A stream's receive buffer takes no more than the window we gave it
  (:class:`_WindowedBuffer`, round 34, Y1).
- A connection has at most :data:`MAX_INBOUND_STREAMS` streams its peer opened being served
  at once, from the SYN through negotiation to the handler's end: py-libp2p made a stream
  and a task for every SYN, and each waited up to 10 s for a protocol, so one stranger's
  50,000 SYNs (600 KB) took a node from 121 to 315 MB (round 34, Y2). A SYN past the cap is
  reset at once (go-yamux's ``MaxIncomingStreams``); a stream that names no protocol within
  :data:`~node.net._limits.INBOUND_NEGOTIATION_TIMEOUT_S` is reset (set in the host's
  connection config);
- streams naming their protocol are at most :data:`MAX_NEGOTIATING_PER_HOST` a host (all
  its connections together) and :data:`MAX_NEGOTIATING` in all; past the second a stream
  takes the place of the oldest of the host holding the most, which is reset: forty keys'
  10,200 such streams held 81 MB (round 37, N3);
- a stream that is reset by us, or by its peer before its FIN, keeps none of its unread
  data (py-libp2p never reads it again: a read raises the reset first); a connection's
  fully closed streams (a peer's reset after its FIN included: the data before the FIN is
  still read, as our own answers rely on) keep their unread data only up to
  :data:`MAX_CLOSED_UNREAD_BYTES` and :data:`MAX_CLOSED_UNREAD_STREAMS`, the newest
  always, the oldest dropped first: py-libp2p kept it 60-90 s whoever would read it, and
  one stranger's streams filled within their windows and reset made a node hold 476 MiB
  in 21 s, as much as it could upload in 90 s (round 46, Y1);
- all of a node's connections together hold at most
  :data:`~node.net._limits.MAX_UNREAD_BYTES` unread (:mod:`._libp2p_unread`).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Hashable
from typing import Any

from ._libp2p_logging import Tally
from ._libp2p_unread import Pace
from ._limits import (
    MAX_CLOSED_UNREAD_BYTES,
    MAX_CLOSED_UNREAD_STREAMS,
    MAX_INBOUND_STREAMS,
    MAX_NEGOTIATING,
    MAX_NEGOTIATING_PER_HOST,
)

log = logging.getLogger(__name__)
_TALLY = Tally(log)


def install() -> None:
    """Patch py-libp2p's yamux muxer and swarm connections (once per process, by
    :func:`node.net._libp2p_tuning.install`)."""
    _enforce_windows()
    _cap_inbound_streams()
    _bound_negotiations()
    _bound_dead_buffers()


class _WindowedBuffer(bytearray):
    """A yamux stream's receive buffer that takes no more than the window we gave: py-libp2p
    logs data past it and keeps it, so a peer writing to a stream nobody reads (an
    identify stream we answered) grew our memory without bound, 300 MiB in 2 s (round 34,
    Y1). Data past the window is dropped (go-yamux ends the session) and logged."""

    def __init__(self, muxer: Any, stream_id: int, data: bytes = b"") -> None:
        super().__init__(data)
        self._muxer = muxer
        self._stream_id = stream_id
        self.pace = Pace()  # how fast its bytes came lately: the budget's shed order

    def extend(self, data: Any) -> None:
        stream = self._muxer.streams.get(self._stream_id)
        if stream is not None and len(data) > max(stream.recv_window, 0):
            # a line a dropped frame would be the peer's to multiply: tallied
            _TALLY.note("yamux frames past their stream's window dropped", self._muxer.peer_id)
            return
        super().extend(data)
        budget = getattr(self._muxer, "_aimx_unread_budget", None)
        if budget is not None:  # the node's budget (_libp2p_unread.py)
            self.pace.note(len(data), time.monotonic())
            # a stream the count sheds now is still in py-libp2p's hands: it is ended
            # when they are done with it (round 54, F2)
            self._muxer._aimx_extending = self._stream_id
            try:
                budget.received(len(data))
            finally:
                self._muxer._aimx_extending = None


class _WindowedBuffers(dict[int, bytearray]):
    """A yamux connection's receive buffers, each a :class:`_WindowedBuffer`."""

    def __init__(self, muxer: Any) -> None:
        super().__init__()
        self._muxer = muxer

    def __setitem__(self, stream_id: int, buffer: bytearray) -> None:
        super().__setitem__(stream_id, _WindowedBuffer(self._muxer, stream_id, bytes(buffer)))


def _enforce_windows() -> None:
    """Every yamux connection's receive buffers hold no more than their windows
    (:class:`_WindowedBuffer`)."""
    from libp2p.stream_muxer.yamux import yamux

    init = yamux.Yamux.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        buffers = _WindowedBuffers(self)
        for stream_id, buffer in self.stream_buffers.items():
            buffers[stream_id] = buffer
        self.stream_buffers = buffers

    yamux.Yamux.__init__ = __init__  # type: ignore[method-assign]


def _cap_inbound_streams() -> None:
    """A connection serves at most :data:`MAX_INBOUND_STREAMS` streams its peer opened;
    past that a new one is reset before it is negotiated."""
    from libp2p.network.connection.swarm_connection import SwarmConn

    from ._libp2p_inbound import reset

    handle = SwarmConn._handle_muxed_stream

    async def handle_muxed_stream(self: Any, muxed_stream: Any) -> None:
        live = getattr(self, "_inbound_live", 0)
        if live >= MAX_INBOUND_STREAMS:
            if not getattr(self, "_inbound_capped", False):
                self._inbound_capped = True
                log.warning(
                    "peer %s opened more than %d streams at once on one connection: "
                    "its new streams are reset",
                    getattr(self.muxed_conn, "peer_id", "?"),
                    MAX_INBOUND_STREAMS,
                )
            await reset(muxed_stream)
            return
        self._inbound_live = live + 1
        try:
            await handle(self, muxed_stream)
        finally:
            self._inbound_live -= 1

    SwarmConn._handle_muxed_stream = handle_muxed_stream  # type: ignore[method-assign]


class _Negotiating:
    def __init__(self, host: Hashable, stream: Any) -> None:
        self.host = host
        self.stream = stream


def _bound_negotiations() -> None:
    """Streams our peers opened, naming their protocol, are bounded per host and in all
    (each host's :class:`~node.net._libp2p_handshakes.HostShares` of a node)."""
    from libp2p.protocol_muxer.exceptions import MultiselectError
    from libp2p.protocol_muxer.multiselect import Multiselect

    from ._libp2p_handshakes import HostShares
    from ._libp2p_inbound import host_of, reset
    from ._libp2p_transport import key_of

    negotiate = Multiselect.negotiate
    tables: weakref.WeakKeyDictionary[Any, HostShares[_Negotiating]] = weakref.WeakKeyDictionary()

    async def bounded(self: Any, communicator: Any, *args: Any, **kwargs: Any) -> Any:
        stream = communicator.read_writer
        conn = getattr(stream, "muxed_conn", None)
        if conn is None:  # a connection's own negotiation: bounded as a handshake
            return await negotiate(self, communicator, *args, **kwargs)
        try:
            host = host_of(stream, key_of(conn.peer_id) or b"")
        except Exception:
            host = ("ip", "unknown")
        table = tables.get(self)
        if table is None:
            table = tables[self] = HostShares(MAX_NEGOTIATING_PER_HOST, MAX_NEGOTIATING)
        entry = _Negotiating(host, stream)
        admitted, evicted = table.admit(entry)
        if evicted is not None:
            _TALLY.note(
                "streams reset while naming their protocol (every place taken)", evicted.host
            )
            await reset(evicted.stream)
        if not admitted:
            _TALLY.note("streams refused (their host had its share naming a protocol)", host)
            raise MultiselectError("too many streams of this host are naming their protocol")
        try:
            return await negotiate(self, communicator, *args, **kwargs)
        finally:
            table.leave(entry)

    Multiselect.negotiate = bounded  # type: ignore[method-assign]


def forget_stream(muxer: Any, stream_id: int) -> None:
    """Drop a closed stream's entry and unread data; a reader waiting on it wakes to an
    end of stream."""
    event = muxer.stream_events.pop(stream_id, None)
    if event is not None:
        event.set()
    muxer.streams.pop(stream_id, None)
    muxer.stream_buffers.pop(stream_id, None)


def _bound_dead_buffers() -> None:
    """A reset stream's unread data goes at once; fully closed streams' unread data is
    bounded per connection (:data:`MAX_CLOSED_UNREAD_BYTES`,
    :data:`MAX_CLOSED_UNREAD_STREAMS`)."""
    from libp2p.stream_muxer.yamux import yamux

    finalize = yamux.Yamux._finalize_stream_locked

    def finalize_stream_locked(self: Any, stream: Any, *, fully_closed: bool) -> None:
        finalize(self, stream, fully_closed=fully_closed)
        stream_id = stream.stream_id
        if not fully_closed or stream_id not in self.streams:
            return  # open still, or gone with nothing left to read
        if stream.reset_received and (
            getattr(stream, "_aimx_reset_here", False) or not stream.recv_closed
        ):
            # Reset by us (nothing of ours reads on), or by the peer before its FIN: py-libp2p
            # reads such a stream's buffer never again (it raises the reset first).
            forget_stream(self, stream_id)
            return
        # Unread data on a fully closed stream: the newest kept, the oldest dropped past
        # the connection's bounds. Entries the sweeper or a reader removed are skipped.
        closed: dict[int, None] = getattr(self, "_aimx_closed_unread", None) or {}
        self._aimx_closed_unread = closed
        closed.pop(stream_id, None)
        closed[stream_id] = None
        for gone in [s for s in closed if s not in self.streams]:
            del closed[gone]
        held = {s: len(self.stream_buffers.get(s) or b"") for s in closed}
        total = sum(held.values())
        for oldest in list(closed):
            if oldest == stream_id or (
                len(closed) <= MAX_CLOSED_UNREAD_STREAMS and total <= MAX_CLOSED_UNREAD_BYTES
            ):
                break
            total -= held[oldest]
            del closed[oldest]
            forget_stream(self, oldest)
            _TALLY.note("unread data of closed streams dropped past the bound", self.peer_id)

    yamux.Yamux._finalize_stream_locked = finalize_stream_locked  # type: ignore[method-assign]

    reset = yamux.YamuxStream.reset

    async def reset_here(self: Any) -> None:
        self._aimx_reset_here = True
        await reset(self)

    yamux.YamuxStream.reset = reset_here  # type: ignore[method-assign]
