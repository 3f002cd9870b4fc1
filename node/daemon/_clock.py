"""The daemon's clock: Unix-epoch milliseconds that advance with trio's clock.

The machines take ``now_ms`` in milliseconds since the Unix epoch. The daemon anchors
trio's clock to the wall clock once, at start, so a ``trio.testing.MockClock`` drives every
node of an in-process test in virtual time, while real daemons agree with each other
through their wall clocks.
"""

from __future__ import annotations

import math
import time

import trio


class Clock:
    """``now_ms()`` = ``base_ms`` + milliseconds of trio time since the clock was made.

    Make it inside ``trio.run``. ``base_ms`` defaults to the wall clock now.
    """

    def __init__(self, base_ms: int | None = None) -> None:
        self._base_ms = time.time_ns() // 1_000_000 if base_ms is None else base_ms
        self._base_t = trio.current_time()

    def now_ms(self) -> int:
        return self._base_ms + math.floor((trio.current_time() - self._base_t) * 1000)

    def trio_time(self, at_ms: int) -> float:
        """The trio time at which ``now_ms()`` reaches ``at_ms``."""
        return self._base_t + (at_ms - self._base_ms) / 1000
