"""Publish/subscribe over GossipSub (specs/network.md, "Topics").

GossipSub's heartbeat and spam limits are set for this workload (:class:`GossipConfig`).
The node subscribes to a topic in libp2p while it has subscribers of its own: one task per
topic (a pump) hands each message from another peer to the network's subscribers; messages
from ourselves, from peers without an Ed25519 key, or over ``MAX_PUBSUB_BYTES`` are dropped.
A repair loop re-registers peers whose pubsub stream died while they stayed connected.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any

import trio
from libp2p.network.stream.net_stream import StreamState
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import ScoreParams

import protocol

from ._errors import NetworkError
from ._interface import NetworkCounters, PeerKey, PubsubMessage
from ._libp2p_config import GossipConfig
from ._libp2p_transport import key_of
from ._limits import MAX_PUBSUB_BYTES, MAX_SUBSCRIPTIONS_PER_PEER

log = logging.getLogger(__name__)

_DEAD_STREAM_STATES = (
    StreamState.ERROR,
    StreamState.RESET,
    StreamState.CLOSE_WRITE,
    StreamState.CLOSE_BOTH,
)


class GossipPubsub:
    """GossipSub on ``host`` for the node ``local_peer``: messages received go to
    ``deliver``; a topic stays subscribed while ``has_subscribers(topic)``."""

    def __init__(
        self,
        host: Any,
        local_peer: PeerKey,
        gossip: GossipConfig,
        counters: NetworkCounters,
        deliver: Callable[[PubsubMessage], None],
        has_subscribers: Callable[[str], bool],
    ) -> None:
        self._host = host
        self._peer = local_peer
        self._gossip = gossip
        self._counters = counters
        self._deliver = deliver
        self._has_subscribers = has_subscribers
        self._pumps: dict[str, trio.CancelScope] = {}
        self._topic_locks: dict[str, trio.Lock] = {}
        self._nursery: trio.Nursery | None = None
        self._closed = False
        g = gossip
        self.gossipsub = GossipSub(
            protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11],
            degree=g.degree,
            degree_low=g.degree_low,
            degree_high=g.degree_high,
            time_to_live=g.time_to_live,
            gossip_window=g.gossip_window,
            gossip_history=g.gossip_history,
            heartbeat_initial_delay=g.heartbeat_initial_delay,
            heartbeat_interval=g.heartbeat_interval,
            max_messages_per_topic_per_second=g.max_messages_per_topic_per_second,
            max_pending_messages_per_peer=g.max_pending_messages_per_peer,
            # No peer exchange taken from anyone: py-libp2p's default threshold takes it
            # from every peer, and one stranger's PRUNE naming 16 fresh keys a topic, each
            # signed to any host:port, made the node dial them all (28 KB, 128 outbound
            # connections: round 29, F3). Peers come from bootstrap, the DHT and the
            # peers we kept; we send none either (``do_px`` is off).
            score_params=ScoreParams(accept_px_threshold=math.inf),
        )
        self.pubsub = Pubsub(
            host,
            self.gossipsub,
            seen_ttl=g.seen_ttl,
            max_inbound_rpc_size=g.max_inbound_rpc_bytes,
            # topics a peer's subscriptions are kept for (each a name of at most 128
            # characters: round 43, F2)
            max_subscriptions_per_peer=MAX_SUBSCRIPTIONS_PER_PEER,
        )
        # the topics the RPC guard takes messages on (_libp2p_tuning._keep_followed)
        pubsub = self.pubsub
        host._aimx_followed = lambda: pubsub.topic_ids

    def start(self, nursery: trio.Nursery) -> None:
        """Topics followed from now on are pumped in ``nursery``."""
        self._nursery = nursery

    def close(self) -> None:
        """The network is closing: a pump that ends leaves its topic subscribed in libp2p
        (the host is going away too)."""
        self._closed = True

    def stop(self) -> None:
        """Stop pubsub's seen-messages cache (it has a timer of its own)."""
        self.pubsub.seen_messages.stop()

    async def publish(self, topic: str, data: bytes) -> None:
        try:
            await self.pubsub.publish(topic, data)
        except trio.Cancelled:
            raise
        except Exception as exc:
            raise NetworkError(f"could not publish on {topic}: {exc}") from None

    def follow(self, topic: str) -> None:
        """Make sure ``topic`` is pumped (a subscriber of ours was added)."""
        if topic not in self._pumps and self._nursery is not None:
            scope = trio.CancelScope()
            self._pumps[topic] = scope
            self._nursery.start_soon(self._pump, topic, scope)

    def unfollow(self, topic: str) -> None:
        """Stop pumping ``topic`` (its last subscriber of ours closed)."""
        scope = self._pumps.pop(topic, None)
        if scope is not None:
            scope.cancel()

    async def _pump(self, topic: str, scope: trio.CancelScope) -> None:
        lock = self._topic_locks.setdefault(topic, trio.Lock())
        try:
            with scope:
                async with lock:
                    subscription = await self.pubsub.subscribe(topic)
                while True:
                    message = await subscription.get()
                    sender = key_of(ID(message.from_id))
                    if sender is None or sender == self._peer:
                        continue
                    if len(message.data) > MAX_PUBSUB_BYTES:
                        self._counters.pubsub_dropped += 1
                        log.debug(
                            "dropped a message of %d bytes on %s from peer %s: over %d",
                            len(message.data),
                            topic,
                            protocol.peer_id(sender),
                            MAX_PUBSUB_BYTES,
                        )
                        continue
                    self._deliver(PubsubMessage(topic, sender, bytes(message.data)))
        finally:
            if not self._closed:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    async with lock:
                        if not self._has_subscribers(topic):
                            with contextlib.suppress(Exception):
                                await self.pubsub.unsubscribe(topic)

    async def repair_loop(self) -> None:
        while True:
            await trio.sleep(self._gossip.heartbeat_interval)
            self._repair()

    def _repair(self) -> None:
        """Re-register pubsub peers whose stream died while the peer stayed connected.

        py-libp2p's per-peer sending loop exits silently when a write fails on a connection
        that was closed (simultaneous dials leave duplicates that get trimmed), leaving the
        peer registered with a queue nobody drains: every later message to it is dropped.
        """
        ps = self.pubsub
        network = self._host.get_network()
        for peer, stream in list(ps.peers.items()):
            muxed = getattr(stream, "muxed_conn", None)
            state = getattr(stream, "_state", None)
            live = any(c.muxed_conn is muxed for c in network.get_connections(peer))
            if live and state not in _DEAD_STREAM_STATES:
                continue
            self._counters.pubsub_repaired += 1
            with contextlib.suppress(Exception):
                ps._handle_dead_peer(peer)
