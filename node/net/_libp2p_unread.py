"""The node's budget for its peers' unread bytes (specs/network.md, "Transport limits").

Each yamux stream holds what its peer wrote and nobody read yet, up to the window we gave
it (256 KiB), and a connection's fully closed streams keep theirs within
:data:`~node.net._limits.MAX_CLOSED_UNREAD_BYTES`. Those bounds are per stream and per
connection: strangers' connections, each with streams whose handler reads slowly or not
yet (pubsub, kad, a request stream idling), or that the node opened once per connection
(identify, pubsub's outbound stream), could hold a few GiB together (round 47, Y3; round
48, L1; round 50, O1). Bytes read off a stream or a connection into a frame that is not
complete yet are held too: a yamux DATA frame's body (up to 16 MiB a connection, read
whole before yamux looks at its stream), a pubsub RPC (1 MiB a stream) and a request to
one of our protocols (:class:`CountedReader`) were held for as long as their sender kept
the last byte back (round 52, F1 and F2).

A node's unread bytes, all its connections together, frames being read included, are kept
within :data:`~node.net._limits.MAX_UNREAD_BYTES`: once over it, what stalled goes first
(see :class:`Pace`; the connection holding the most, and in it the largest first), then
what still moves, the slowest first, until the node is back under
:data:`~node.net._limits.UNREAD_TARGET_BYTES`: a stream's buffer is dropped and the stream
reset, a pubsub RPC being read is dropped and its stream reset, a DATA frame being read
ends its connection. The bytes go at once; the peers are told afterwards, each in a bounded
task of its own, so a peer that does not read what we write holds up nothing (round 52,
F3). Honest streams are read as their bytes come and hold little, and an honest frame
being read moves, so what is shed is what a peer filled and left: by size alone, strangers
each holding a frame a byte short on many connections made the shed take an honest large
request still arriving, every count (round 54, F1).

The total is recounted after every :data:`~node.net._limits.UNREAD_CHECK_BYTES` received,
or :data:`~node.net._limits.UNREAD_CHECK_PER_STREAM` bytes for each stream the node holds
if more (a count kept on every read would patch each of py-libp2p's read paths, and a
count over many streams held open costs its time: so it costs a bounded share of what the
bytes cost to receive); what arrives between two counts is the most the node may go over.
"""

from __future__ import annotations

import contextlib
import logging
import math
import struct
import time
import weakref
from collections.abc import Callable
from typing import Any

import trio

from ._libp2p_logging import Tally
from ._limits import (
    MAX_UNREAD_BYTES,
    UNREAD_CHECK_BYTES,
    UNREAD_CHECK_PER_STREAM,
    UNREAD_PACE_HALF_LIFE_S,
    UNREAD_STALLED_S,
    UNREAD_TARGET_BYTES,
)

log = logging.getLogger(__name__)
_TALLY = Tally(log)

#: A frame being read is read, and counted, this many bytes at a time.
READ_CHUNK = 64 << 10
#: How long a peer has to take our reset (or our connection's end) before we give up on
#: telling it, seconds.
TELL_TIMEOUT_S = 1.0


class Pace:
    """How fast a holder's bytes came lately: the bytes received, each weighed down by half
    every :data:`UNREAD_PACE_HALF_LIFE_S`. A holder whose bytes came in a burst and stalled
    looks old within seconds, however it trickles after; one a transfer is filling looks as
    old as the transfer (at a steady pace, its bytes over its rate)."""

    __slots__ = ("recent", "stamp")

    def __init__(self) -> None:
        self.recent = 0.0
        self.stamp = 0.0

    def note(self, size: int, now: float) -> None:
        self.recent = (
            self.recent * math.pow(0.5, (now - self.stamp) / UNREAD_PACE_HALF_LIFE_S) + size
        )
        self.stamp = now

    def age(self, held: int, now: float) -> float:
        """How long ``held`` bytes would have taken at the pace of late, seconds."""
        half_life = UNREAD_PACE_HALF_LIFE_S
        recent = self.recent * math.pow(0.5, (now - self.stamp) / half_life)
        if recent <= 0.0:
            return math.inf
        return held * half_life / (recent * math.log(2))


class Partial:
    """Bytes read off a stream or a connection into a frame not complete yet, counted
    against the node's budget while it is read; :meth:`drop` (the budget's) empties it
    and tells its reader, whose next read raises."""

    def __init__(self, on_drop: Callable[[], None]) -> None:
        self.data = bytearray()
        self.dropped = False
        self.pace = Pace()
        self._on_drop = on_drop

    def drop(self) -> None:
        self.dropped = True
        self.data = bytearray()
        self._on_drop()


class UnreadBudget:
    """One node's (one swarm's) muxed connections and what they hold unread."""

    def __init__(self) -> None:
        self._muxers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._since_count = 0
        self._next_count = UNREAD_CHECK_BYTES
        #: Streams reset and frames dropped to keep within the budget, and the bytes they held.
        self.streams_shed = 0
        self.frames_shed = 0
        self.bytes_shed = 0

    def add(self, muxer: Any) -> None:
        """Count ``muxer``'s streams (its connection joined the node)."""
        self._muxers.add(muxer)
        muxer._aimx_unread_budget = self
        muxer._aimx_partials = {}

    def held(self) -> int:
        """The bytes the node holds unread now."""
        return self._count()[0]

    def _count(self) -> tuple[int, int]:
        """The bytes the node holds unread, and how many streams it holds."""
        held = streams = 0
        for muxer in list(self._muxers):
            buffers = list(muxer.stream_buffers.values())
            streams += len(buffers)
            held += sum(len(buffer) for buffer in buffers)
            held += sum(len(p.data) for p in list(_partials(muxer).values()))
        return held, streams

    def received(self, size: int) -> None:
        """``size`` bytes came in (into a stream's buffer or a frame being read): recount
        now and then (see the module), and shed once over :data:`MAX_UNREAD_BYTES`."""
        self._since_count += size
        if self._since_count < self._next_count:
            return
        self._since_count = 0
        held, streams = self._count()
        self._next_count = max(UNREAD_CHECK_BYTES, streams * UNREAD_CHECK_PER_STREAM)
        if held > MAX_UNREAD_BYTES:
            self._shed(held)

    def _largest(self) -> list[tuple[int, Any, Any]]:
        """What holds unread bytes: (bytes, muxer, a stream id or a :class:`Partial`), in
        the order the shed takes them. What stalled first (its bytes, at the pace they came
        lately, took over :data:`UNREAD_STALLED_S`: a frame kept a byte short, a buffer
        left unread), the connection holding the most first and in it the largest: a peer
        that filled many streams goes before one whose single stream is large (round 52 and
        53's suggestion). Then what still moves, the slowest first: an honest frame
        arriving goes last (round 54, F1). A holder with no pace counts as stalled."""
        now = time.monotonic()
        ranked: list[tuple[tuple[float, int, int], int, Any, Any]] = []
        for muxer in list(self._muxers):
            held: list[tuple[int, Pace | None, Any]] = []
            for stream_id, buffer in list(muxer.stream_buffers.items()):
                if buffer:
                    held.append((len(buffer), getattr(buffer, "pace", None), stream_id))
            for partial in list(_partials(muxer).values()):
                if partial.data:
                    held.append((len(partial.data), partial.pace, partial))
            total = sum(size for size, _, _ in held)
            for size, pace, what in held:
                age = UNREAD_STALLED_S if pace is None else pace.age(size, now)
                rank = (min(age, UNREAD_STALLED_S), total, size)
                ranked.append((rank, size, muxer, what))
        ranked.sort(key=lambda entry: entry[0], reverse=True)
        return [(size, muxer, what) for _, size, muxer, what in ranked]

    def _shed(self, total: int) -> None:
        """Drop what holds the most until the node holds at most
        :data:`UNREAD_TARGET_BYTES`: at once, the peers told in tasks of their own."""
        resets: dict[Any, list[int]] = {}
        for size, muxer, what in self._largest():
            if total <= UNREAD_TARGET_BYTES:
                break
            total -= size
            self.bytes_shed += size
            if not isinstance(what, int):  # a frame being read (a Partial, a CountedReader)
                self.frames_shed += 1
                _TALLY.note("frames dropped: the node held too many unread bytes", muxer.peer_id)
                what.drop()
            else:
                self.streams_shed += 1
                _TALLY.note("streams reset: the node held too many unread bytes", muxer.peer_id)
                if _end_stream(muxer, what):
                    resets.setdefault(muxer, []).append(what)
        for muxer, stream_ids in resets.items():
            spawn(_tell_resets, muxer, stream_ids)


def _partials(muxer: Any) -> dict[Any, Any]:
    """The frames being read on ``muxer``'s connection (set by :meth:`UnreadBudget.add`):
    each a :class:`Partial` or a :class:`CountedReader`, with ``data`` and ``drop()``."""
    partials: dict[Any, Any] | None = getattr(muxer, "_aimx_partials", None)
    return {} if partials is None else partials


class CountedReader:
    """A reader of ours that gathers a stream's frames in a buffer of its own (our request
    streams' :class:`~node.net._framing.FrameReader`), counted against the node's budget
    while its stream is served: its bytes left the stream's buffer as it read them, and a
    peer sending a request frame but its last byte held them there (round 52's residual).
    :meth:`received` after each read; once the budget drops it, ``dropped`` is set, its
    buffer emptied and ``on_drop`` called (the stream reset)."""

    def __init__(self, stream: Any, buffer_of: Callable[[], bytearray], on_drop: Any) -> None:
        self._muxer = getattr(stream, "muxed_conn", None)
        self._budget: UnreadBudget | None = getattr(self._muxer, "_aimx_unread_budget", None)
        self._buffer_of = buffer_of
        self._on_drop = on_drop
        self.dropped = False
        self.pace = Pace()
        if self._budget is not None:
            _partials(self._muxer)[self] = self

    @property
    def data(self) -> bytearray:
        return self._buffer_of()

    def drop(self) -> None:
        self.dropped = True
        self._buffer_of().clear()
        self._on_drop()

    def received(self, size: int) -> None:
        if self._budget is not None and size:
            self.pace.note(size, time.monotonic())
            self._budget.received(size)

    def close(self) -> None:
        if self._budget is not None:
            _partials(self._muxer).pop(self, None)


def _end_stream(muxer: Any, stream_id: int) -> bool:
    """End a stream at once, as a reset of ours ends it: its buffer dropped, its reader
    woken to the reset, its place freed. Whether its peer is still to be told."""
    from ._libp2p_yamux import forget_stream

    stream = muxer.streams.get(stream_id)
    tell = stream is not None and not stream.closed
    if stream is not None:
        stream.closed = stream.send_closed = stream.recv_closed = True
        stream.reset_received = True
        stream._aimx_reset_here = True
        buffer = muxer.stream_buffers.get(stream_id)
        if buffer is not None:
            buffer.clear()
        event = muxer.stream_events.get(stream_id)
        if event is not None:
            event.set()  # its reader wakes to the reset
        if getattr(muxer, "_aimx_extending", None) == stream_id:
            # py-libp2p is adding the bytes that made this count to this stream, and looks
            # it up again after: its entry goes once they are done (gone now, they logged an
            # ERROR a shed: round 54, F2)
            spawn(_forget_later, muxer, stream)
            return tell
        with contextlib.suppress(Exception):
            muxer._finalize_stream_locked(stream, fully_closed=True)  # releases its slot
    forget_stream(muxer, stream_id)
    return tell


async def _forget_later(muxer: Any, stream: Any) -> None:
    """End a stream :func:`_end_stream` left to py-libp2p's bookkeeping, if still there."""
    from ._libp2p_yamux import forget_stream

    async with muxer.streams_lock:
        if muxer.streams.get(stream.stream_id) is stream:
            with contextlib.suppress(Exception):
                muxer._finalize_stream_locked(stream, fully_closed=True)
            forget_stream(muxer, stream.stream_id)


async def _tell_resets(muxer: Any, stream_ids: list[int]) -> None:
    """Send a RST for each stream ended (yamux's RST: a WINDOW_UPDATE with that flag)."""
    from libp2p.stream_muxer.yamux import yamux

    with trio.move_on_after(TELL_TIMEOUT_S):
        for stream_id in stream_ids:
            header = struct.pack(
                yamux.YAMUX_HEADER_FORMAT, 0, yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_RST, stream_id, 0
            )
            await muxer._write_frame(header)


def spawn(task: Callable[..., Any], *args: Any) -> None:
    """Run ``task`` on its own, bounded and guarded: a system task (no nursery of ours is at
    hand where bytes come in), which must never raise."""

    async def guarded() -> None:
        try:
            with trio.move_on_after(TELL_TIMEOUT_S * 2):
                await task(*args)
        except Exception as exc:
            log.debug("telling a peer what was shed failed: %r", exc)

    trio.lowlevel.spawn_system_task(guarded, name="aimx-unread-tell")


async def read_counted(
    budget: UnreadBudget, muxer: Any, key: Any, length: int, read: Any, on_drop: Any
) -> bytes:
    """Read a frame of ``length`` bytes with ``read(n)`` (which returns between 1 and ``n``
    bytes, at most :data:`READ_CHUNK` asked at once, or raises), each piece counted against
    ``budget`` as it comes, as one :class:`Partial` of ``muxer``'s under ``key``. If the
    budget drops it, ``on_drop`` is called and :class:`FrameDropped` raised, at once when
    this read's own count dropped it, else at the next piece."""
    partials = _partials(muxer)
    partial = Partial(on_drop)
    partials[key] = partial
    try:
        got = 0
        while got < length and not partial.dropped:
            chunk = await read(min(READ_CHUNK, length - got))
            if partial.dropped:
                break
            partial.data += chunk
            partial.pace.note(len(chunk), time.monotonic())
            got += len(chunk)
            budget.received(len(chunk))
        if partial.dropped:
            raise FrameDropped("the node held too many unread bytes: this frame was dropped")
        return bytes(partial.data)
    finally:
        if partials.get(key) is partial:
            del partials[key]


class FrameDropped(Exception):
    """A frame being read was dropped to keep the node within its budget."""


def install() -> None:
    """Give each swarm an :class:`UnreadBudget` and each of its connections' muxers to it;
    count yamux's DATA frame bodies and pubsub's RPCs while they are read (once per
    process, by :func:`node.net._libp2p_tuning.install`)."""
    from libp2p.network.connection.swarm_connection import SwarmConn

    budgets: weakref.WeakKeyDictionary[Any, UnreadBudget] = weakref.WeakKeyDictionary()
    init = SwarmConn.__init__

    def __init__(self: Any, muxed_conn: Any, swarm: Any, *args: Any, **kwargs: Any) -> None:
        init(self, muxed_conn, swarm, *args, **kwargs)
        if getattr(muxed_conn, "stream_buffers", None) is None:
            return  # not yamux: nothing buffered of ours to count
        budget = budgets.get(swarm)
        if budget is None:
            budget = budgets[swarm] = UnreadBudget()
            swarm._aimx_unread_budget = budget
        budget.add(muxed_conn)

    SwarmConn.__init__ = __init__  # type: ignore[method-assign]
    _count_data_bodies()
    _count_pubsub_rpcs()


def _count_data_bodies() -> None:
    """A yamux DATA frame's body is read counted; one the budget drops ends its connection
    (py-libp2p's answer to a body that comes too slowly: ``trio.TooSlowError``)."""
    from libp2p.io.utils import read_exactly
    from libp2p.stream_muxer.yamux import yamux

    read_body = yamux.Yamux._read_data_body

    async def read_data_body(self: Any, length: int) -> bytes:
        budget = getattr(self, "_aimx_unread_budget", None)
        if length <= READ_CHUNK or budget is None:
            return await read_body(self, length)

        async def read(n: int) -> bytes:
            return await read_exactly(self.secured_conn, n)

        timeout = yamux._yamux_data_read_timeout()
        try:
            with trio.fail_after(timeout):
                # a dropped frame's connection is ended under its reader (its read fails);
                # a GO_AWAY first could wait on a peer that reads nothing (round 53, N2)
                return await read_counted(
                    budget, self, "data", length, read, lambda: spawn(self.secured_conn.close)
                )
        except FrameDropped:
            raise trio.TooSlowError from None  # yamux ends the connection

    yamux.Yamux._read_data_body = read_data_body  # type: ignore[method-assign]


def _count_pubsub_rpcs() -> None:
    """A pubsub RPC is read counted; one the budget drops resets its stream."""
    from libp2p.io.exceptions import MessageTooLarge
    from libp2p.network.stream.exceptions import StreamReset
    from libp2p.pubsub import pubsub
    from libp2p.utils.varint import decode_uvarint_from_stream, read_varint_prefixed_bytes_limited

    from ._libp2p_inbound import reset

    async def read_rpc(stream: Any, max_length: int) -> bytes:
        muxer = getattr(stream, "muxed_conn", None)
        budget = getattr(muxer, "_aimx_unread_budget", None)
        if budget is None:
            return await read_varint_prefixed_bytes_limited(stream, max_length)
        length = await decode_uvarint_from_stream(stream)
        if length > max_length:  # refused before its body, as py-libp2p refuses it
            raise MessageTooLarge(f"Message length {length} exceeds maximum allowed {max_length}")

        async def read(n: int) -> bytes:
            # what the stream holds, up to n: counted as it comes (a peer sending a chunk
            # but its last byte left it in a buffer of ours, uncounted: round 53, N1)
            chunk: bytes = await stream.read(n)
            if not chunk:
                raise StreamReset("the stream ended inside an RPC")
            return chunk

        try:
            return await read_counted(
                budget, muxer, stream, length, read, lambda: spawn(reset, stream)
            )
        except FrameDropped as exc:
            raise StreamReset(str(exc)) from None

    pubsub.read_varint_prefixed_bytes_limited = read_rpc  # type: ignore[attr-defined,assignment]


def budget_of(swarm: Any) -> UnreadBudget | None:
    """A swarm's budget (``None`` before its first connection)."""
    budget = getattr(swarm, "_aimx_unread_budget", None)
    return budget if isinstance(budget, UnreadBudget) else None
