"""Peers' misbehaviour as the daemon counts it: a peer's bad message is counted and logged
(once per peer), never raised."""

from __future__ import annotations

import logging

import protocol

from ._metrics import NodeMetrics

log = logging.getLogger(__name__)

#: Peers whose misbehaviour is remembered; beyond this the count starts over.
MAX_PEERS_COUNTED = 4096


class Conduct:
    """Misbehaviour counted per peer (a bounded map), with a metric and a log line."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self._metrics = metrics
        self.counts: dict[str, int] = {}

    def misbehaved(self, peer: bytes | None, reason: str) -> None:
        self._metrics.bad_messages.inc()
        who = protocol.peer_id(peer) if peer else "unknown"
        if who not in self.counts and len(self.counts) >= MAX_PEERS_COUNTED:
            self.counts.clear()
        self.counts[who] = self.counts.get(who, 0) + 1
        if self.counts[who] == 1:
            log.warning("peer %s misbehaved: %s", who, reason)
