"""The dashboard's live updates: one snapshot per tick shared by every open page, as
server-sent events (specs/dashboard.md).

:class:`SnapshotHub` computes a snapshot at most once per tick (:data:`TICK_S`) for all
listeners, and only while someone listens; at most :data:`MAX_LISTENERS` event streams
are open at once, and an unchanged stream is kept alive with a comment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

import trio

log = logging.getLogger(__name__)

#: Seconds between snapshots while someone listens.
TICK_S = 1.0
#: Event streams open at once, at most (a further one is answered 503).
MAX_LISTENERS = 8
#: An unchanged stream sends a comment this often (proxies and browsers keep it open).
KEEPALIVE_S = 15.0


class SnapshotHub:
    """One snapshot per tick for every listener, none while nobody listens.

    A listener asks :meth:`next_frame` for the frame after the one it has; the first
    listener to need a new frame computes it, the others get the same bytes."""

    def __init__(
        self,
        compute: Callable[[], Awaitable[bytes]],
        *,
        tick_s: float = TICK_S,
        max_listeners: int = MAX_LISTENERS,
    ) -> None:
        self._compute = compute
        self.tick_s = tick_s
        self.max_listeners = max_listeners
        self.listeners = 0
        #: Snapshots computed, and the CPU time of this thread they took (an upper bound:
        #: other tasks that ran while one waited for the ledger store count too).
        self.computed = 0
        self.cpu_s = 0.0
        self._frame: tuple[int, float, bytes] | None = None  # seq, trio time, data
        self._busy: trio.Event | None = None

    async def next_frame(self, seen: int) -> tuple[int, bytes]:
        """The frame after ``seen`` (``-1``: the current one, computed if stale)."""
        while True:
            frame, now = self._frame, trio.current_time()
            if frame is not None and frame[0] != seen and now - frame[1] < self.tick_s:
                return frame[0], frame[2]
            if frame is not None and frame[0] == seen:
                await trio.sleep_until(frame[1] + self.tick_s)
                if self._frame is not frame:
                    continue
            if self._busy is not None:  # another listener computes it: take that one
                await self._busy.wait()
                continue
            busy = self._busy = trio.Event()
            try:
                cpu = time.thread_time()
                try:
                    data = await self._compute()
                except Exception:  # a bug here must not end the API's server
                    log.exception("the dashboard's snapshot failed")
                    data = b'{"error":"the snapshot failed; see the node\'s log"}'
                self.cpu_s += time.thread_time() - cpu
                seq = frame[0] + 1 if frame is not None else 0
                self._frame = (seq, trio.current_time(), data)
                self.computed += 1
            finally:
                self._busy = None
                busy.set()

    async def stream(self) -> AsyncGenerator[bytes, None]:
        """One listener's event stream (``text/event-stream``): a ``snapshot`` event
        whenever the snapshot changed, a comment every ``KEEPALIVE_S`` otherwise."""
        if self.listeners >= self.max_listeners:
            yield b"event: full\ndata: {}\n\n"
            return
        self.listeners += 1
        try:
            yield b"retry: 2000\n\n"
            seen, last, sent_at = -1, b"", trio.current_time()
            while True:
                seen, data = await self.next_frame(seen)
                now = trio.current_time()
                if data != last:
                    last, sent_at = data, now
                    yield b"event: snapshot\ndata: " + data + b"\n\n"
                elif now - sent_at >= KEEPALIVE_S:
                    sent_at = now
                    yield b": keepalive\n\n"
        finally:
            self.listeners -= 1
