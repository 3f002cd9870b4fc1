"""Inbound stream slots shared fairly between peers (specs/network.md, "Limits").

A global cap on the streams served at once is what keeps a node's memory and tasks bounded,
but a cap alone is a door a few keys can hold shut: five fresh keys each holding their share
of 256 request streams open, and idle, refused every other peer's requests for as long as
they liked, never counted (review round 16, A1); two keys did the same to the 64 DHT
slots (A2a). So when the slots are full a newcomer takes the slot of the peer holding the
most (more than the newcomer does), the one *stalled* longest, whose stream is cancelled.

A slot waiting for its peer's next request may be taken at once (five keys keeping their
streams open with an empty request before each idle timeout held every slot: round 16,
A1). One moving a request or an answer is taken only once *stalled*: nothing moved on it
for ``stall_s``, at least ``PROGRESS_BYTES`` per ``stall_s``, counted in bytes, whatever
the frames (a peer trickling its frames, a byte and then the rest 7 s later, stalls: round
17, R17-A1; so does one pipelining tiny frames: R19-1; a transfer making progress keeps its
slot, where keys rotating one-slot streams had cut honest uploads mid-frame: round 18,
R18-1). One whose handler is answering is never taken, nor, for a short grace, one writing
that answer to a request that was not pipelined (round 22, R22-2). Streams that say nothing
of their exchanges (py-libp2p's DHT) count as exchanging from the start, so a slot is
taken only once ``stall_s`` old. A newcomer
finding nothing takeable waits up to ``wait_s`` for a slot to stall, ahead of streams that
arrive after it and of waiters whose peers hold more slots (a flood timing its reopenings
to the moment each slot came of age kept out 92-98 % of a newcomer's streams: R18-2). A
peer waits with two streams at most, and only if some peer holds more slots than it does.

Peers are grouped by host (``group``: the address a direct connection comes from; a relayed
one is a group of its own): a newcomer takes first from another host holding more slots
than its own host does, and within its own host from a key holding more than its key
does. Keys were counted alone before, and one host's fresh keys (each holding none, as a
newcomer does) opening 50-200 DHT streams a second took most slots that came free and
filled the waiting line, so an honest newcomer got 0-50 % of its streams in (round 19,
R19-3). The waiting line serves the newcomer whose host holds the fewest first, and a full
line gives a newcomer the place of the waiter whose host holds the most, if more than its
own. Peers of one host (every test on loopback) share slots by key, as before.

Each slot counts under its own host: one key may reach us over two addresses (IPv4 and
IPv6, or a relay and a direct connection), and its slots were all judged by the host of
its first, so that one idle stream over the second address hid 63 over the first, and
honest hosts' requests fell from 77 to 19 a second; one host also ran 60 handlers past
its cap of 32 (round 24, F1). Slots are kept per (host, key), and within a host a key is
compared by what it holds there. Running handlers are counted as they start and end.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import trio

from ._interface import PeerKey

#: Bytes that count as progress on a slot (a frame completing counts too).
PROGRESS_BYTES = 16 << 10
#: Newcomers waiting for a slot at once, and from one peer; more are refused at once.
MAX_WAITING = 64
MAX_WAITING_PER_PEER = 2
#: Handlers one key, and one host, may have running at once (their slots are never taken
#: meanwhile); a stream of theirs past it waits before reading on, takeable.
MAX_RUNNING_PER_PEER = 16
MAX_RUNNING_PER_HOST = 32


@dataclass(eq=False, slots=True)
class Slot:
    """One stream's place: ``scope`` is cancelled if the slot is taken from it."""

    peer: PeerKey
    group: Hashable
    progress_at: float
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    #: A request or answer is moving on it (else it waits for the peer's next request,
    #: and may be taken at once): taken only once stalled.
    exchanging: bool = False
    #: A request read from the stream went to our handler and its answer is not all
    #: written: a slot taken now may have run the request (else the stream's owner is told
    #: to send it again: _libp2p_streams.py).
    handled: bool = False
    #: Its handler's answer to a request that was not pipelined is being written: not
    #: taken before this time (_libp2p_streams.py, ANSWER_GRACE_S).
    answering_until: float = float("-inf")
    evicted: bool = False
    _moved: int = 0
    _busy: bool = False
    #: The table it is in, which counts its running handlers (None once it left).
    _table: FairSlots | None = None

    @property
    def busy(self) -> bool:
        """Our handler is answering on it: never taken then."""
        return self._busy

    @busy.setter
    def busy(self, value: bool) -> None:
        if value != self._busy:
            self._busy = value
            if self._table is not None:
                self._table._running(self, 1 if value else -1)

    def moved(self, count: int) -> None:
        """``count`` bytes were read or written on the stream."""
        self._moved += count
        if self._moved >= PROGRESS_BYTES:
            self.progress()

    def progress(self, *, age: float = 0.0) -> None:
        """Something moved (a chunk of bytes, a handler's answer): the slot counts as
        progressing since ``age`` seconds ago."""
        self._moved = 0
        self.progress_at = trio.current_time() - age


class FairSlots:
    """At most ``total`` slots at once and ``per_peer`` for one peer; a slot is takeable
    once stalled ``stall_s``; a newcomer waits up to ``wait_s`` for one."""

    def __init__(self, total: int, per_peer: int, *, stall_s: float, wait_s: float) -> None:
        self.total = total
        self.per_peer = per_peer
        self.stall_s = stall_s
        self.wait_s = wait_s
        #: The slots of each key in each host: (host, key) -> slots.
        self._of: dict[tuple[Hashable, PeerKey], list[Slot]] = {}
        self._held: dict[PeerKey, int] = {}
        self._in_group: dict[Hashable, int] = {}
        self._running_of: dict[PeerKey, int] = {}
        self._running_in: dict[Hashable, int] = {}
        self._count = 0
        self._waiting: list[_Ticket] = []
        self._arrivals = 0
        #: Slots taken from their holders so far.
        self.evicted = 0

    def __len__(self) -> int:
        return self._count

    def held_by(self, peer: PeerKey) -> int:
        return self._held.get(peer, 0)

    def _held_in(self, group: Hashable, peer: PeerKey) -> int:
        return len(self._of.get((group, peer), ()))

    def held_by_group(self, group: Hashable) -> int:
        return self._in_group.get(group, 0)

    def active_peers(self) -> set[PeerKey]:
        """The peers with a request or answer moving on a slot, or a handler running."""
        return {
            peer
            for (_, peer), slots in self._of.items()
            if any(s.exchanging or s.busy or s.handled for s in slots)
        }

    def may_run(self, slot: Slot) -> bool:
        """Whether ``slot``'s peer and host have fewer handlers running than their caps
        (``MAX_RUNNING_PER_PEER``, ``MAX_RUNNING_PER_HOST``). A running handler's slot is
        never taken, so slow handlers held every slot of a table: one key with 16 streams
        of pipelined requests taking 5 s each let 2 of 18 honest requests in (round 23,
        R23-1). Counted as handlers start and end: a check that walked the table cost
        19 % of a core with 224 streams of 256 keys waiting (round 24, F3)."""
        return (
            self._running_of.get(slot.peer, 0) < MAX_RUNNING_PER_PEER
            and self._running_in.get(slot.group, 0) < MAX_RUNNING_PER_HOST
        )

    def _running(self, slot: Slot, change: int) -> None:
        _add(self._running_of, slot.peer, change)
        _add(self._running_in, slot.group, change)

    def enter(self, peer: PeerKey, group: Hashable | None = None) -> Slot | None:
        """A slot for a new stream of ``peer`` (of host ``group``; by default a group of
        its own) now, or None (it holds ``per_peer``, or no slot is free or takeable for
        it)."""
        group = peer if group is None else group
        if self.held_by(peer) >= self.per_peer:
            return None
        if self._count >= self.total and not self._evict_for(peer, group):
            return None
        slot = Slot(peer, group, trio.current_time())
        slot._table = self
        self._of.setdefault((group, peer), []).append(slot)
        _add(self._held, peer, 1)
        _add(self._in_group, group, 1)
        self._count += 1
        return slot

    async def acquire(self, peer: PeerKey, group: Hashable | None = None) -> Slot | None:
        """A slot for a new stream of ``peer`` (of host ``group``), waiting (behind earlier
        newcomers whose hosts hold no more) up to ``wait_s`` for one to be takeable; None
        if none came."""
        group = peer if group is None else group
        if not self._waiting or self._count < self.total:
            slot = self.enter(peer, group)
            if slot is not None or self.held_by(peer) >= self.per_peer:
                return slot
        if not self._may_ever_take(peer, group):
            return None
        if sum(1 for t in self._waiting if t.peer == peer) >= MAX_WAITING_PER_PEER:
            return None
        self._arrivals += 1
        ticket = _Ticket(peer, group, self._arrivals)
        if len(self._waiting) >= MAX_WAITING and not self._displace(ticket):
            return None
        self._waiting.append(ticket)
        try:
            with trio.move_on_after(self.wait_s):
                while not ticket.dropped:
                    first = self._first_waiting() is ticket
                    if first:
                        slot = self.enter(peer, group)
                        if slot is not None:
                            return slot
                    # the first waiter checks as slots may come free; the others rarely
                    # (64 waiters polling every 10 ms cost 30 % of a core: round 19, R19-4)
                    await trio.sleep(self._next_check() if first else 0.1)
        finally:
            if not ticket.dropped:
                self._waiting.remove(ticket)
        return None

    def _order(self, ticket: _Ticket) -> tuple[int, int, int]:
        held = self._held_in(ticket.group, ticket.peer)
        return (self.held_by_group(ticket.group), held, ticket.arrival)

    def _displace(self, ticket: _Ticket) -> bool:
        """The line is full: ``ticket`` takes the place of the waiter served last, if that
        one's host holds more slots than ``ticket``'s (its wait ends with no slot)."""
        last = max(self._waiting, key=self._order)
        if self.held_by_group(last.group) <= self.held_by_group(ticket.group):
            return False
        last.dropped = True
        self._waiting.remove(last)
        return True

    def _may_take_from(
        self, peer: PeerKey, group: Hashable, holder: tuple[Hashable, PeerKey]
    ) -> bool:
        """Whether a newcomer of ``peer`` (host ``group``) may ever take a slot of
        ``holder`` (a key in a host): that host holds more than ``group`` does, or it is
        ``group`` and that key holds more there than ``peer`` does."""
        other, key = holder
        if other != group:
            return self.held_by_group(other) > self.held_by_group(group)
        return self._held_in(group, key) > self._held_in(group, peer)

    def _may_ever_take(self, peer: PeerKey, group: Hashable) -> bool:
        """Whether some slot could ever be taken for ``peer``: else its stream waiting
        would only fill the line (a key holding as many as the largest holder kept 64 such
        streams waiting, and every other new stream was refused: round 19, R19-2)."""
        return any(self._may_take_from(peer, group, holder) for holder in self._of)

    def _first_waiting(self) -> _Ticket:
        """The waiting newcomer served first: its host holding the fewest slots, then its
        key, then the earliest. (Were it the earliest alone, a flood key holding as many
        as the others, which can take from none, would stand in front of a peer holding
        none.) If it cannot take a slot, no waiter holding more can."""
        return min(self._waiting, key=self._order)

    def leave(self, slot: Slot) -> None:
        """The slot's stream ended (a taken slot was released when it was taken)."""
        if not slot.evicted:
            self._release(slot)

    def _next_check(self) -> float:
        """Seconds until a slot may next become takeable, or one is freed (waiting
        newcomers poll every 10 to 50 ms)."""
        now = trio.current_time()
        soonest = min(
            (s.progress_at + self.stall_s for ss in self._of.values() for s in ss),
            default=now,
        )
        return min(0.05, max(0.01, soonest - now))

    def _evict_for(self, peer: PeerKey, group: Hashable) -> bool:
        """Take a slot for ``peer`` of host ``group``: from the host holding the most, if
        more than ``group`` does, its key holding the most; else within ``group``, from
        the key holding the most, if more than ``peer`` does. The slot stalled longest."""
        now = trio.current_time()
        stalled = now - self.stall_s

        def rank(item: tuple[tuple[Hashable, PeerKey], list[Slot]]) -> tuple[bool, int, int]:
            (host, _), slots = item
            other = host != group
            return (other, self.held_by_group(host) if other else 0, len(slots))

        for holder, slots in sorted(self._of.items(), key=rank, reverse=True):
            if not self._may_take_from(peer, group, holder):
                if holder[0] != group:
                    continue  # another host holding no more: ours may still hold more
                return False  # within ours, the keys after it hold no more
            victims = [
                s
                for s in slots
                if not s.busy
                and s.answering_until <= now
                and (not s.exchanging or s.progress_at <= stalled)
            ]
            if victims:
                victim = min(victims, key=lambda s: s.progress_at)
                victim.evicted = True
                victim.scope.cancel()
                self._release(victim)
                self.evicted += 1
                return True
        return False

    def _release(self, slot: Slot) -> None:
        holder = (slot.group, slot.peer)
        slots = self._of.get(holder)
        if slots is None or slot not in slots:
            return
        slots.remove(slot)
        self._count -= 1
        if not slots:
            del self._of[holder]
        _add(self._held, slot.peer, -1)
        _add(self._in_group, slot.group, -1)
        if slot.busy:
            self._running(slot, -1)
        slot._table = None


def _add(counts: dict[Any, int], key: Any, change: int) -> None:
    """Add ``change`` to ``counts[key]``, dropping keys that reach 0."""
    left = counts.get(key, 0) + change
    if left:
        counts[key] = left
    else:
        counts.pop(key, None)


@dataclass(eq=False, slots=True)
class _Ticket:
    """A newcomer waiting in line; ``dropped`` once a newcomer took its place."""

    peer: PeerKey
    group: Hashable
    arrival: int
    dropped: bool = False
