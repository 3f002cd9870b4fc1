"""Inbound stream slots shared fairly between peers (specs/network.md, "Limits").

A global cap on the streams served at once is what keeps a node's memory and tasks bounded,
but a cap alone is a door a few keys can hold shut: five fresh keys each holding their share
of 256 request streams open, and idle, refused every other peer's requests for as long as
they liked, never counted (review round 16, A1); two keys did the same to the 64 DHT
slots (A2a). So when the slots are full a newcomer is not refused: it takes the slot of the
peer holding the most (more than the newcomer does), its oldest idle one, whose stream is
cancelled. A peer holding few slots keeps them however many keys hold the rest, and a key
that reopens what it lost only takes from the largest holder, which is then itself or
another key of the flood.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from ._interface import PeerKey


@dataclass(eq=False, slots=True)
class Slot:
    """One stream's place: ``scope`` is cancelled if the slot is taken from it; ``idle``
    unless its handler is answering a request (only an idle slot is taken)."""

    peer: PeerKey
    since: float
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    idle: bool = True
    evicted: bool = False


class FairSlots:
    """At most ``total`` slots at once and ``per_peer`` for one peer. ``min_age``: a slot
    younger than this (seconds) is not taken, for handlers that do not say when they are
    idle (py-libp2p's DHT, whose honest streams live for one query, milliseconds): 65
    keys reopening one slot each rotated the table through honest queries in flight
    (review round 17, R17-A4)."""

    def __init__(self, total: int, per_peer: int, *, min_age: float = 0.0) -> None:
        self.total = total
        self.per_peer = per_peer
        self._min_age = min_age
        self._of: dict[PeerKey, list[Slot]] = {}
        self._count = 0
        #: Slots taken from their holders so far.
        self.evicted = 0

    def __len__(self) -> int:
        return self._count

    def held_by(self, peer: PeerKey) -> int:
        return len(self._of.get(peer, ()))

    def enter(self, peer: PeerKey) -> Slot | None:
        """A slot for a new stream of ``peer``, or None (it holds ``per_peer``, or every
        slot is held by peers holding no more than it does, or none of theirs may go)."""
        mine = self.held_by(peer)
        if mine >= self.per_peer:
            return None
        if self._count >= self.total and not self._evict_for(mine):
            return None
        slot = Slot(peer, trio.current_time())
        self._of.setdefault(peer, []).append(slot)
        self._count += 1
        return slot

    def leave(self, slot: Slot) -> None:
        """The slot's stream ended (a taken slot was released when it was taken)."""
        if not slot.evicted:
            self._release(slot)

    def _evict_for(self, holds: int) -> bool:
        """Take a slot from the peer holding the most, if it holds more than ``holds``."""
        born = trio.current_time() - self._min_age
        for slots in sorted(self._of.values(), key=len, reverse=True):
            if len(slots) <= holds:
                return False
            victims = [s for s in slots if s.idle and s.since <= born]
            if victims:
                victim = min(victims, key=lambda s: s.since)
                victim.evicted = True
                victim.scope.cancel()
                self._release(victim)
                self.evicted += 1
                return True
        return False

    def _release(self, slot: Slot) -> None:
        slots = self._of.get(slot.peer)
        if slots is None or slot not in slots:
            return
        slots.remove(slot)
        self._count -= 1
        if not slots:
            del self._of[slot.peer]
