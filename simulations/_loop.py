"""The discrete-event loop: a heap of ``(time_ms, seq, kind, node, a, b)``, virtual time in
milliseconds, and a trace hash over every delivered event.

Not trio: a plain heap delivers an order of magnitude more events per second, and nothing
here waits on I/O. ``seq`` breaks ties in scheduling order, so a run is a pure function of
its inputs. The trace hash is BLAKE2b-256 over each delivered event's ``(time, kind,
node, digest)``; ``digest`` is what the scheduler passed (for a message, the tail of its
signature; for a timer, the job id and timer kind).
"""

from __future__ import annotations

import hashlib
import heapq
import random
import struct
from collections.abc import Callable
from typing import Any

_PACK = struct.Struct("<qHq").pack

Handler = Callable[[int, int, Any, Any], None]


def derive_rng(seed: int, concern: str) -> random.Random:
    """A generator for one concern of a run (``network``, ``jobs``, ...): drawing more in
    one concern never shifts another's draws."""
    return random.Random(f"aimx-sim/{seed}/{concern}")


class Loop:
    """Runs handlers in virtual-time order. ``handlers[kind](now_ms, node, a, b)``."""

    def __init__(self) -> None:
        self.now_ms = 0
        self.events = 0
        self._heap: list[tuple[int, int, int, int, Any, Any, bytes]] = []
        self._seq = 0
        self._trace = hashlib.blake2b(digest_size=32)
        self.handlers: list[Handler] = []

    def at(
        self, time_ms: int, kind: int, node: int, a: Any = None, b: Any = None, digest: bytes = b""
    ) -> None:
        """Schedule event ``kind`` for ``node`` at ``time_ms`` (never in the past)."""
        self._seq += 1
        t = time_ms if time_ms > self.now_ms else self.now_ms
        heapq.heappush(self._heap, (t, self._seq, kind, node, a, b, digest))

    def run(self, until_ms: int) -> None:
        """Deliver events in order until the heap is empty or the next is past ``until_ms``."""
        heap = self._heap
        handlers = self.handlers
        update = self._trace.update
        pop = heapq.heappop
        while heap and heap[0][0] <= until_ms:
            t, _, kind, node, a, b, digest = pop(heap)
            self.now_ms = t
            self.events += 1
            update(_PACK(t, kind, node))
            if digest:
                update(digest)
            handlers[kind](t, node, a, b)
        self.now_ms = max(self.now_ms, until_ms)

    def trace_hash(self) -> str:
        return self._trace.hexdigest()

    def pending(self) -> int:
        return len(self._heap)
