"""The timer wheel: the machines' ``SetTimer``/``CancelTimer`` on trio's clock."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable

import trio

from ._clock import Clock


class Timers:
    """Timers by key; setting a key again moves it. ``run`` fires them until cancelled."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._live: dict[Hashable, int] = {}  # key -> token of its current setting
        self._heap: list[tuple[int, int, Hashable]] = []
        self._tokens = itertools.count()
        self._changed = trio.Event()

    def __len__(self) -> int:
        return len(self._live)

    def set(self, key: Hashable, at_ms: int) -> None:
        token = next(self._tokens)
        self._live[key] = token
        heapq.heappush(self._heap, (at_ms, token, key))
        if self._heap[0][1] == token:
            self._changed.set()

    def cancel(self, key: Hashable) -> None:
        self._live.pop(key, None)

    def _due(self, now_ms: int) -> list[Hashable]:
        due: list[Hashable] = []
        while self._heap and self._heap[0][0] <= now_ms:
            _, token, key = heapq.heappop(self._heap)
            if self._live.get(key) == token:
                del self._live[key]
                due.append(key)
        while self._heap and self._live.get(self._heap[0][2]) != self._heap[0][1]:
            heapq.heappop(self._heap)  # drop stale heads so the next wake-up is right
        return due

    async def run(self, fire: Callable[[Hashable], None]) -> None:
        """Call ``fire(key)`` for each timer when it is due, until cancelled."""
        while True:
            for key in self._due(self._clock.now_ms()):
                fire(key)
            self._changed = trio.Event()
            if self._heap:
                with trio.move_on_at(self._clock.trio_time(self._heap[0][0])):
                    await self._changed.wait()
            else:
                await self._changed.wait()
