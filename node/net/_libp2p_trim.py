"""Outbound connections kept to a bound, the least recently used closed first.

The node dials peers that other peers name: a DHT lookup dials the closer peers each answer
names, and nothing ends those connections when the lookup is over. A stranger answering
lookups with keys it serves could so fill the node's 600 connections (300 of them inbound),
and every dial of the node's own would then be refused, its coordinators' included (round
39, F2). py-libp2p's pruner would not help: it acts only past its high watermark, and at
the limit no dial gets that far.

So outbound connections past :data:`MAX_OUTBOUND_CONNECTIONS` are closed, those least
recently used by a request of ours first, and those to peers whose request we are
serving last. Never closed: a connection younger than :data:`OUTBOUND_GRACE_S` (a dial is
followed by its stream), one to a peer with a request of ours in flight, and one to a peer
the node keeps: a bootstrap peer, a relay holding our reservation, a peer in one of our
GossipSub meshes. A peer whose connection is closed is dialled again when the node needs
it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.rcmgr.metrics import Direction

from ._libp2p_logging import Tally
from ._limits import MAX_OUTBOUND_CONNECTIONS, OUTBOUND_GRACE_S

log = logging.getLogger(__name__)
_TALLY = Tally(log)

#: A sweep looks for outbound connections past the bound this often, seconds, besides
#: every new outbound connection (one in its grace or in use then may be closed later).
TRIM_EVERY_S = 5.0


@dataclass(frozen=True, slots=True)
class Outbound:
    """An outbound connection as the choice sees it."""

    conn: Any
    peer: Any  #: its peer's libp2p ID
    opened: float  #: trio time it was opened
    used: float  #: trio time of our last request to its peer (``opened`` if none since)


def to_close(
    conns: Iterable[Outbound],
    keep: Set[Any],
    now: float,
    bound: int,
    grace: float,
    spare: Set[Any] = frozenset(),
) -> list[Any]:
    """The connections of ``conns`` to close so that at most ``bound`` remain to peers not
    in ``keep``: those to peers in ``spare`` last, each group least recently used first;
    none younger than ``grace``. Fewer when too many are young: the next sweep takes them."""
    free = [c for c in conns if c.peer not in keep]
    excess = len(free) - bound
    if excess <= 0:
        return []
    old = sorted(
        (c for c in free if now - c.opened >= grace),
        key=lambda c: (c.peer in spare, c.used, c.opened),
    )
    return [c.conn for c in old[:excess]]


class OutboundTrim:
    """Keeps the swarm's outbound connections (told of by :meth:`opened`) to the bound.

    ``keep()`` gives the peers (libp2p IDs) whose connections are never closed;
    ``in_flight`` the peers with a request of ours under way; ``spare()`` the peers whose
    connections go last (within the bound: a stranger sending a byte of a request every
    8 s was kept for good, round 43, F1). :meth:`used` is told of each request."""

    def __init__(
        self,
        keep: Callable[[], Set[Any]],
        in_flight: Set[Any],
        *,
        spare: Callable[[], Set[Any]] = frozenset,
        bound: int = MAX_OUTBOUND_CONNECTIONS,
        grace: float = OUTBOUND_GRACE_S,
    ) -> None:
        self._keep = keep
        self._spare = spare
        self._in_flight = in_flight
        self.bound, self.grace = bound, grace
        self._opened: dict[Any, float] = {}  # outbound connections, by the connection
        self._used: dict[Any, float] = {}  # by peer id; only peers with a connection here
        self._nursery: trio.Nursery | None = None
        self._trimming = False
        self.trimmed = 0  #: connections closed past the bound, so far

    def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        nursery.start_soon(self._sweep)

    def opened(self, conn: Any) -> None:
        """A connection opened (any direction): an outbound one counts."""
        if getattr(conn, "direction", None) == Direction.OUTBOUND:
            self._opened[conn] = trio.current_time()
            if len(self._opened) > self.bound:
                self._trim_soon()

    def closed(self, conn: Any) -> None:
        self._opened.pop(conn, None)

    def peer_left(self, peer: Any) -> None:
        """``peer``'s last connection closed."""
        self._used.pop(peer, None)

    def used(self, peer: Any) -> None:
        """A request of ours to ``peer``, connected now. Remembered until its last
        connection ends (the map is cleaned if a request outlived the connection)."""
        self._used[peer] = trio.current_time()
        if len(self._used) > 4 * self.bound + 64:
            live = {c.muxed_conn.peer_id for c in self._opened}
            self._used = {p: t for p, t in self._used.items() if p in live}

    def asked(self) -> set[Any]:
        """The peers (IDs) we sent a request to while connected (until they leave)."""
        return set(self._used)

    def _trim_soon(self) -> None:
        if self._nursery is not None and not self._trimming:
            self._trimming = True
            self._nursery.start_soon(self._trim)

    async def _sweep(self) -> None:
        while True:
            await trio.sleep(TRIM_EVERY_S)
            if len(self._opened) > self.bound:
                self._trim_soon()

    def choose(self) -> list[Any]:
        now = trio.current_time()
        keep = set(self._keep()) | set(self._in_flight)
        conns = []
        for conn, opened in self._opened.items():
            with contextlib.suppress(Exception):  # a connection half torn down
                peer = conn.muxed_conn.peer_id
                conns.append(Outbound(conn, peer, opened, self._used.get(peer, opened)))
        return to_close(conns, keep, now, self.bound, self.grace, set(self._spare()))

    async def _trim(self) -> None:
        try:
            chosen = self.choose()
            if not chosen:
                return
            for conn in chosen:
                self._opened.pop(conn, None)  # not chosen twice while it closes
                _TALLY.note("outbound connections closed past the bound", conn.muxed_conn.peer_id)
            self.trimmed += len(chosen)

            async def close(conn: Any) -> None:
                with contextlib.suppress(Exception), trio.move_on_after(5):
                    await conn.close()

            async with trio.open_nursery() as nursery:
                for conn in chosen:
                    nursery.start_soon(close, conn)
        finally:
            self._trimming = False
