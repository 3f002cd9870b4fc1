"""How a libp2p node is set up: where it listens, whom it bootstraps from, its limits and
GossipSub's parameters (specs/network.md)."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ._interface import Reachability


def wall_ms() -> int:
    """The wall clock in ms: what records expire by on a real network."""
    return math.floor(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """GossipSub parameters for this workload (specs/network.md, "Choices of this
    implementation")."""

    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    heartbeat_interval: int = 1
    heartbeat_initial_delay: float = 0.1
    #: py-libp2p drops messages above this rate per peer and topic (its default is 10).
    max_messages_per_topic_per_second: float = 200.0
    time_to_live: int = 60
    gossip_window: int = 3
    gossip_history: int = 5
    seen_ttl: int = 120
    max_inbound_rpc_bytes: int = 1 << 20
    max_pending_messages_per_peer: int = 1000


@dataclass(frozen=True, slots=True)
class Libp2pConfig:
    """How a libp2p node listens, whom it bootstraps from, and its limits."""

    chain_id: str
    listen: tuple[str, ...] = ("/ip4/0.0.0.0/tcp/4001",)
    #: Coordinator addresses (``.../p2p/<peer id>``) to connect to at start.
    bootstrap: tuple[str, ...] = ()
    #: Act as a circuit relay v2 (hop) for other nodes: coordinators do.
    relay_service: bool = False
    #: What the node was told about itself. ``PRIVATE``: take a relay reservation.
    reachability: Reachability = Reachability.UNKNOWN
    #: Relays to reserve at when private; ``None`` means the bootstrap peers.
    relays: tuple[str, ...] | None = None
    enable_mdns: bool = False
    gossip: GossipConfig = field(default_factory=GossipConfig)
    dial_timeout: float = 5.0
    #: A started frame must be complete within this; a stalled stream is reset.
    frame_timeout: float = 10.0
    #: An inbound request stream idle this long is closed.
    stream_idle_timeout: float = 60.0
    max_inbound_streams: int = 256
    #: Re-announce the record and provider records this often.
    republish_interval: float = 600.0
    #: A new record is announced a second time this long after the first: a provider
    #: record sent before the routing table filled, or dropped by a busy peer (py-libp2p
    #: sends ``ADD_PROVIDER`` without waiting for an answer and drops what is past its
    #: limits), would otherwise be held only by this node until the next republish. Past
    #: py-libp2p's 10 s rate window, so that the second announcement is not dropped too.
    reannounce_after: float = 12.0
    #: A bootstrap peer we are not connected to is redialled after this long, doubling
    #: (each delay drawn in its upper half) up to ``bootstrap_redial_max``; the py-libp2p
    #: negative cache is lifted for it before each dial (specs/network.md, "Connections").
    bootstrap_redial_first: float = 0.25
    #: While a bootstrap peer is down this costs it one refused TCP connection per node
    #: per interval; when it is back, each node reconnects within it.
    bootstrap_redial_max: float = 1.0
    libp2p_log_level: int = logging.WARNING
    now_ms: Callable[[], int] = wall_ms
    #: Where the addresses of peers seen lately are kept (``peers.json``); at start each is
    #: dialled once, so a coordinator back on another address is found by the nodes it
    #: knew (``_peer_memory``). ``None``: nothing is kept.
    peers_file: Path | None = None
    #: How often the remembered peers are written while they change (seconds).
    peers_save_interval: float = 5.0


class Backoff:
    """Delays between redials of one peer: ``first``, doubling up to ``most``, each drawn
    uniformly from its upper half (so nodes that lost the same peer at the same moment do
    not dial it in step). No clock: the caller sleeps; :meth:`reset` after a success."""

    def __init__(self, first: float, most: float, rng: random.Random) -> None:
        if not 0 < first <= most:
            raise ValueError("a backoff needs 0 < first <= most")
        self.first = first
        self.most = most
        self._rng = rng
        self._next = first

    def delay(self) -> float:
        """The next delay (seconds); the one after it doubles, up to ``most``."""
        full = self._next
        self._next = min(self.most, full * 2)
        return self._rng.uniform(full / 2, full)

    def reset(self) -> None:
        self._next = self.first
