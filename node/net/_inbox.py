"""A bounded, drop-on-overflow queue that a network fills and a caller iterates."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Generic, Self, TypeVar

import trio

T = TypeVar("T")


class Inbox(Generic[T]):
    """Messages for one subscriber: ``async with`` it, then ``async for`` over it.

    The network never waits for a slow subscriber: when ``size`` items are queued, new ones
    are dropped and counted in :attr:`dropped`. Iteration ends when the inbox or the network
    is closed.
    """

    def __init__(self, size: int, on_close: Callable[[Inbox[T]], None]) -> None:
        self._send, self._receive = trio.open_memory_channel[T](size)
        self._on_close = on_close
        self.dropped = 0
        self.closed = False

    def deliver(self, item: T) -> bool:
        """Queue ``item`` without waiting; False (and counted) if full or closed."""
        if self.closed:
            return False
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self.dropped += 1
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    async def receive(self) -> T:
        """The next item; raises ``trio.EndOfChannel`` once closed and drained."""
        return await self._receive.receive()

    def close(self) -> None:
        """Stop receiving; idempotent. Queued items can still be read."""
        if not self.closed:
            self.closed = True
            self._send.close()
            self._on_close(self)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        self._receive.close()
