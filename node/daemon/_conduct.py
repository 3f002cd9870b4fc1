"""Peers' misbehaviour as the daemon counts it: a peer's bad message is counted and logged
(once per peer), never raised; a peer whose score passes ``BAN_SCORE`` is disconnected and
refused for ``BAN_SECONDS`` (specs/daemon.md, "Misbehaving peers").

The score: each misbehaviour adds ``OFFENCE_POINTS``; the score decays by
``DECAY_PER_SECOND`` of trio's clock (the node's clock), so an honest peer's occasional
fault (a timeout, a lost race) never adds up, while a steady stream of bad messages does.
The genesis coordinators and the node itself are never banned (a replica must keep
following the chain); their misbehaviour is still counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

import trio

import protocol

from ._metrics import NodeMetrics

log = logging.getLogger(__name__)

#: Peers whose misbehaviour is remembered; beyond this the count starts over.
MAX_PEERS_COUNTED = 4096
#: Points one misbehaviour adds to a peer's score.
OFFENCE_POINTS = 10.0
#: Points the score loses per second.
DECAY_PER_SECOND = 1.0
#: A peer whose score reaches this is banned.
BAN_SCORE = 100.0
#: How long a ban lasts, seconds.
BAN_SECONDS = 600.0


class Conduct:
    """Misbehaviour counted per peer (a bounded map), with a metric and a log line; bans
    through ``ban(peer, seconds)`` (the network's)."""

    def __init__(
        self,
        metrics: NodeMetrics,
        *,
        ban: Callable[[bytes, float], None] | None = None,
        protected: Collection[bytes] = (),
        ban_score: float = BAN_SCORE,
    ) -> None:
        self._metrics = metrics
        self._ban = ban
        self._protected = frozenset(protected)
        self.ban_score = ban_score
        self.counts: dict[str, int] = {}
        #: Per peer: (score, at trio seconds).
        self._scores: dict[bytes, tuple[float, float]] = {}
        self.bans = 0

    def misbehaved(self, peer: bytes | None, reason: str) -> None:
        self._metrics.bad_messages.inc()
        who = protocol.peer_id(peer) if peer and len(peer) == 32 else "unknown"
        if who not in self.counts and len(self.counts) >= MAX_PEERS_COUNTED:
            self.counts.clear()
        self.counts[who] = self.counts.get(who, 0) + 1
        if self.counts[who] == 1:
            log.warning("peer %s misbehaved: %s", who, reason)
        if peer and who != "unknown":
            self._score(peer, who, reason)

    def score(self, peer: bytes) -> float:
        """The peer's score now."""
        score, at = self._scores.get(peer, (0.0, 0.0))
        return max(0.0, score - (trio.current_time() - at) * DECAY_PER_SECOND)

    def _make_room(self) -> None:
        """Forget the peers whose scores decayed to 0, or else the lowest scored tenth:
        clearing the table let 4,096 one-off keys wipe the score of a key near its ban
        (review round 16, A5), and one peer at a time cost a pass over all of them per
        new offender (round 17, R17-A5)."""
        scores = {p: self.score(p) for p in self._scores}
        gone = [p for p, v in scores.items() if v <= 0.0]
        if not gone:  # a tenth at once: one pass per 409 new peers, not per new peer
            gone = sorted(scores, key=scores.__getitem__)[: max(1, len(scores) // 10)]
        for p in gone:
            del self._scores[p]

    def _score(self, peer: bytes, who: str, reason: str) -> None:
        if peer in self._protected or self._ban is None:
            return
        now = trio.current_time()
        score = self.score(peer) + OFFENCE_POINTS
        if peer not in self._scores and len(self._scores) >= MAX_PEERS_COUNTED:
            self._make_room()
        if score < self.ban_score:
            self._scores[peer] = (score, now)
            return
        self._scores.pop(peer, None)
        self.bans += 1
        self._metrics.peers_banned.inc()
        log.warning("peer %s banned for %g s: misbehaved again (%s)", who, BAN_SECONDS, reason)
        self._ban(peer, BAN_SECONDS)
