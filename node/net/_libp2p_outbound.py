"""Streams the node opens for py-libp2p's one-shot exchanges (DHT queries, the relay
client's RESERVE and CONNECT), bounded against the peer that answers them (specs/network.md,
"Limits").

py-libp2p half-closes such a stream when it is done with it, and a peer that answered,
wrote up to a window more and never closed made us keep the stream and the bytes for the
connection's life, with nothing bounding how many: a DHT peer padding its answers left 800
streams and 191 MiB over 400 lookups (round 49, K1), and a relay padding its answers to
our CONNECTs 9.4 MiB over 20 dials (round 50, O2). Here:

- :class:`ResettingStreams` is a view of the host whose streams are reset once closed: each
  exchange closes its stream after reading its answer (or after a fire-and-forget write),
  and the peer still reads what came before the reset (py-libp2p's and go-yamux's reads
  return it after a reset that follows a FIN);
- :func:`reset_when_cancelled` wraps an opener (a relayed dial, its connection's upgrade
  included) so that the streams its own task opened through such a view are reset when it
  fails or is cancelled (a dial cut by its timeout skipped py-libp2p's close altogether,
  and one cut in the handshake after the relay's OK left the circuit's stream open: round
  51, N1); the stream a successful dial returns its connection on is kept. Only the
  opener's own task is tracked: tasks it starts (a new connection's handlers) inherit its
  context, and their streams were counted as the dial's (round 51, N2).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import trio

from ._libp2p_inbound import reset

T = TypeVar("T")

#: The task of the current opener and the streams it opened through a
#: :class:`ResettingStreams` view.
_opened: ContextVar[tuple[Any, list[Any]] | None] = ContextVar("aimx_opened_streams", default=None)


class ResettingStreams:
    """The host as an exchange that opens one-shot streams sees it: a stream it opens is
    reset once it is closed; the rest is the host's."""

    def __init__(self, host: Any) -> None:
        self.host = host

    def __getattr__(self, name: str) -> Any:
        return getattr(self.host, name)

    async def new_stream(self, peer_id: Any, protocol_ids: Any) -> Any:
        stream = await self.host.new_stream(peer_id, protocol_ids)
        close = stream.close

        async def close_then_reset() -> None:
            try:
                await close()
            finally:
                await reset(stream)

        stream.close = close_then_reset
        opening = _opened.get()
        if opening is not None and opening[0] is trio.lowlevel.current_task():
            opening[1].append(stream)
        return stream


def reset_when_cancelled(opener: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """``opener``, whose streams opened through a :class:`ResettingStreams` view are reset
    if it raises or is cancelled."""

    @functools.wraps(opener)
    async def opening(*args: Any, **kwargs: Any) -> T:
        task = trio.lowlevel.current_task()
        outer = _opened.get()
        if outer is not None and outer[0] is task:
            return await opener(*args, **kwargs)  # inside an opener already tracking
        opened: list[Any] = []
        token = _opened.set((task, opened))
        try:
            return await opener(*args, **kwargs)
        except BaseException:
            for stream in opened:
                await reset(stream)
            raise
        finally:
            _opened.reset(token)

    return opening
