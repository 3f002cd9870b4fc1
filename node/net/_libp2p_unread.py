"""The node's budget for its peers' unread bytes (specs/network.md, "Transport limits").

Each yamux stream holds what its peer wrote and nobody read yet, up to the window we gave
it (256 KiB), and a connection's fully closed streams keep theirs within
:data:`~node.net._limits.MAX_CLOSED_UNREAD_BYTES`. Those bounds are per stream and per
connection: strangers' connections, each with streams whose handler reads slowly or not
yet (pubsub, kad, a request stream idling), or that the node opened once per connection
(identify, pubsub's outbound stream), could hold a few GiB together (round 47, Y3; round
48, L1; round 50, O1). A node's unread bytes, all its connections together, are kept
within :data:`~node.net._limits.MAX_UNREAD_BYTES`: once over it, the streams holding the
most are reset (their buffers dropped), largest first, until the node is back under
:data:`~node.net._limits.UNREAD_TARGET_BYTES`. Honest streams are read as their bytes come
and hold little, so those shed are the ones a peer filled and left.

The total is recounted from the buffers after every
:data:`~node.net._limits.UNREAD_CHECK_BYTES` received, or
:data:`~node.net._limits.UNREAD_CHECK_PER_STREAM` bytes for each stream the node holds if
more (a count kept on every read would patch each of py-libp2p's read paths, and a count
over many streams held open costs its time: so it costs a bounded share of what the bytes
cost to receive); what arrives between two counts is the most the node may go over.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import trio

from ._libp2p_logging import Tally
from ._limits import (
    MAX_UNREAD_BYTES,
    UNREAD_CHECK_BYTES,
    UNREAD_CHECK_PER_STREAM,
    UNREAD_TARGET_BYTES,
)

log = logging.getLogger(__name__)
_TALLY = Tally(log)


class UnreadBudget:
    """One node's (one swarm's) muxed connections and what their streams hold unread."""

    def __init__(self) -> None:
        self._muxers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._since_count = 0
        self._next_count = UNREAD_CHECK_BYTES
        self._shedding = False
        #: Streams reset to keep within the budget, and the bytes they held.
        self.streams_shed = 0
        self.bytes_shed = 0

    def add(self, muxer: Any) -> None:
        """Count ``muxer``'s streams (its connection joined the node)."""
        self._muxers.add(muxer)
        muxer._aimx_unread_budget = self

    def held(self) -> int:
        """The bytes the node's streams hold unread now."""
        return self._count()[0]

    def _count(self) -> tuple[int, int]:
        """The bytes the node's streams hold unread, and how many streams it holds."""
        held = streams = 0
        for muxer in list(self._muxers):
            buffers = list(muxer.stream_buffers.values())
            streams += len(buffers)
            held += sum(len(buffer) for buffer in buffers)
        return held, streams

    def received(self, size: int) -> None:
        """``size`` bytes went into a stream's buffer: recount now and then (see the
        module), and shed once over :data:`MAX_UNREAD_BYTES`."""
        self._since_count += size
        if self._since_count < self._next_count or self._shedding:
            return
        self._since_count = 0
        held, streams = self._count()
        self._next_count = max(UNREAD_CHECK_BYTES, streams * UNREAD_CHECK_PER_STREAM)
        if held > MAX_UNREAD_BYTES:
            self._shedding = True
            trio.lowlevel.spawn_system_task(self._shed, name="aimx-unread-shed")

    def _largest(self) -> list[tuple[int, Any, int]]:
        """Every stream holding unread bytes: (bytes, muxer, stream id), most first."""
        held = [
            (len(buffer), muxer, stream_id)
            for muxer in list(self._muxers)
            for stream_id, buffer in list(muxer.stream_buffers.items())
            if buffer
        ]
        held.sort(key=lambda entry: entry[0], reverse=True)
        return held

    async def _shed(self) -> None:
        """Reset the streams holding the most until the node holds at most
        :data:`UNREAD_TARGET_BYTES` (a system task: nothing may escape it)."""
        try:
            total = self.held()
            for _, muxer, stream_id in self._largest():
                if total <= UNREAD_TARGET_BYTES:
                    break
                buffer = muxer.stream_buffers.get(stream_id)
                if buffer is None:
                    continue  # read, or gone, meanwhile
                total -= len(buffer)
                self.streams_shed += 1
                self.bytes_shed += len(buffer)
                _TALLY.note("streams reset: the node held too many unread bytes", muxer.peer_id)
                await _drop(muxer, stream_id)
        except Exception:
            log.exception("shedding unread stream data failed")
        finally:
            self._shedding = False


async def _drop(muxer: Any, stream_id: int) -> None:
    """Reset a stream and drop its buffer (an open one is reset, which also tells its peer;
    a closed one only has its unread bytes left, which go)."""
    from ._libp2p_inbound import reset
    from ._libp2p_yamux import forget_stream

    stream = muxer.streams.get(stream_id)
    if stream is not None and not stream.closed:
        await reset(stream)
    forget_stream(muxer, stream_id)


def install() -> None:
    """Give each swarm an :class:`UnreadBudget` and each of its connections' muxers to it
    (once per process, by :func:`node.net._libp2p_tuning.install`)."""
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


def budget_of(swarm: Any) -> UnreadBudget | None:
    """A swarm's budget (``None`` before its first connection)."""
    budget = getattr(swarm, "_aimx_unread_budget", None)
    return budget if isinstance(budget, UnreadBudget) else None
