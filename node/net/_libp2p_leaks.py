"""A per-stream leak in py-libp2p 0.8.1's yamux, closed without changing the wire protocol.

A yamux reader waits on the connection's ``stream_events[stream_id]`` and, once woken,
puts a fresh event there before it looks at the stream again. When the stream was fully
closed (and its bookkeeping removed) while the reader waited, the next look ends the read
(``MuxedStreamEOF``) but the fresh event stays: one entry (an event and its waiter set,
about 300 bytes) per such stream, for as long as the connection lives. Every request over
the network closes a stream, and on a busy contributor this was its steadiest growth
(about 1,300 entries in 4 minutes of a soak).

:func:`install` wraps both reads (the stream's and the connection's): once a read ends and
the stream is no longer the connection's, its event is removed (and set, so that a second
reader of the same stream, if any, wakes and ends its read too).
"""

from __future__ import annotations

from typing import Any

_installed = False


def install() -> None:
    """Apply the change (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    import libp2p.stream_muxer.yamux.yamux as yamux

    def forget_closed(conn: Any, stream_id: int) -> None:
        if stream_id not in conn.streams:
            event = conn.stream_events.pop(stream_id, None)
            if event is not None:
                event.set()

    original_read_stream = yamux.Yamux.read_stream

    async def read_stream(self: Any, stream_id: int, n: int = -1) -> bytes:
        try:
            return await original_read_stream(self, stream_id, n)
        finally:
            forget_closed(self, stream_id)

    original_read = yamux.YamuxStream.read

    async def read(self: Any, n: int | None = -1) -> bytes:
        try:
            return await original_read(self, n)
        finally:
            forget_closed(self.conn, self.stream_id)

    yamux.Yamux.read_stream = read_stream  # type: ignore[method-assign]
    yamux.YamuxStream.read = read  # type: ignore[method-assign]
