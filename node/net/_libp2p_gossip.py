"""py-libp2p's GossipSub, bounded against a stranger's control messages (specs/network.md,
"Pubsub"): a topic's catch-up for a subscriber (:func:`_gate_replays`), and GRAFT and PRUNE
(:func:`_bound_mesh_control`); and IDONTWANT notices, sent only for messages worth one
(:func:`_idontwant_for_large_messages_only`); and the equivocation check, which keeps a
digest of each message, not the message (:func:`_digest_equivocation`). Installed by
:func:`node.net._libp2p_tuning.install`."""

from __future__ import annotations

import hashlib
import time
from typing import Any


def install() -> None:
    _gate_replays()
    _bound_mesh_control()
    _idontwant_for_large_messages_only()
    _digest_equivocation()


#: Messages (by sender and seqno) the equivocation check remembers; past it the older half
#: is forgotten at once (py-libp2p trimmed it only at its heartbeat).
MAX_EQUIVOCATION_ENTRIES = 1000


def _digest_equivocation() -> None:
    """py-libp2p's equivocation check (the same sender and seqno with other data or topics)
    kept each message whole until 500 newer ones came, and any number between heartbeats:
    up to 1,000 messages of 260 KiB (round 44, G3). It keeps a 32-byte digest of the data
    and topics now, and is bounded at each insertion."""
    from libp2p.peer.id import ID
    from libp2p.pubsub import gossipsub

    GossipSub = gossipsub.GossipSub

    def digest(msg: Any) -> bytes:
        h = hashlib.blake2b(digest_size=32)
        h.update(len(msg.data).to_bytes(8, "big"))
        h.update(msg.data)
        for topic in msg.topicIDs:
            name = topic.encode()
            h.update(len(name).to_bytes(8, "big"))
            h.update(name)
        return h.digest()

    def check_equivocation(self: Any, msg: Any) -> bool:
        seen = self.equivocation_detection
        key = msg.from_id + msg.seqno
        mine = digest(msg)
        first = seen.get(key)
        if first is None:
            if len(seen) >= MAX_EQUIVOCATION_ENTRIES:
                for old in list(seen)[: MAX_EQUIVOCATION_ENTRIES // 2]:
                    del seen[old]
            seen[key] = mine
            return True
        if first == mine:
            return True
        gossipsub.logger.warning("Equivocation detected from peer %s", ID(msg.from_id))
        if self.scorer is not None:
            self.scorer.penalize_equivocation(ID(msg.from_id), 100.0)
        return False

    GossipSub._check_equivocation = check_equivocation  # type: ignore[method-assign]


#: A peer is sent a topic's recent messages (py-libp2p's catch-up for a new subscriber) at
#: most once in this long, seconds, whatever it unsubscribes or reconnects meanwhile.
REPLAY_INTERVAL_S = 30.0
#: (peer, topic) catch-ups remembered per pubsub; when full, none is sent until one expires.
MAX_REPLAY_GATES = 4096


def _gate_replays() -> None:
    """py-libp2p replays a topic's cached messages to a peer once per subscription, and an
    unsubscribe (or a disconnect) spends the gate again: an RPC ``[unsubscribe T,
    subscribe T]`` of 72 bytes had the whole window of T written back to its sender, 16.6 MB
    for 34 KB of toggles in one run (round 32, R1). A catch-up is now once per
    :data:`REPLAY_INTERVAL_S` per peer and topic (the cache's window is 5 s)."""
    from libp2p.pubsub.pubsub import Pubsub

    replay = Pubsub._replay_recent_messages

    async def gated_replay(self: Any, peer_id: Any, topic: str) -> None:
        if peer_id not in self.peers:
            await replay(self, peer_id, topic)  # not writable yet: a no-op, gate unspent
            return
        gates: dict[tuple[Any, str], float] = self.__dict__.setdefault("_aimx_replays", {})
        now = time.monotonic()
        while gates:  # oldest first: entries are (re)inserted in time order
            oldest = next(iter(gates))
            if now - gates[oldest] < REPLAY_INTERVAL_S:
                break
            del gates[oldest]
        key = (peer_id, topic)
        if key in gates or len(gates) >= MAX_REPLAY_GATES:
            return
        gates[key] = now
        await replay(self, peer_id, topic)

    Pubsub._replay_recent_messages = gated_replay  # type: ignore[method-assign]


#: Longest back-off a peer's PRUNE may ask of us, seconds (py-libp2p's default is 60).
MAX_PRUNE_BACKOFF_S = 600


def _bound_mesh_control() -> None:
    """py-libp2p handled every GRAFT and PRUNE of an RPC, for any topic, with no yield: a
    GRAFT for a topic we do not follow was answered with a PRUNE built and queued for each
    (10,000 in one 139 KB RPC froze a coordinator's loop 1.6 s), and a PRUNE for any topic
    stored a back-off of the sender's choosing that nothing removed (2.4 MB of PRUNEs held
    56 MB after the peer left; round 35). As go-libp2p does, GRAFTs and PRUNEs for topics
    not in our mesh are ignored, one of each per topic is taken, a back-off is at most
    :data:`MAX_PRUNE_BACKOFF_S`, and a peer's back-offs go with the peer."""
    from libp2p.pubsub.gossipsub import GossipSub

    handle_rpc = GossipSub.handle_rpc
    remove_peer = GossipSub.remove_peer

    def ours(items: Any, mesh: Any) -> None:
        kept: dict[str, Any] = {}
        for item in items:
            if item.topicID in mesh:
                kept.setdefault(item.topicID, item)
        if len(kept) != len(items):
            chosen = list(kept.values())  # they outlive the clearing (as in bounded_rpc)
            del items[:]
            items.extend(chosen)

    async def bounded_handle_rpc(self: Any, rpc: Any, sender_peer_id: Any) -> None:
        if rpc.HasField("control"):
            control = rpc.control
            ours(control.graft, self.mesh)
            ours(control.prune, self.mesh)
            for prune in control.prune:
                prune.backoff = min(prune.backoff, MAX_PRUNE_BACKOFF_S)
        await handle_rpc(self, rpc, sender_peer_id)

    def remove_peer_and_back_offs(self: Any, peer_id: Any) -> None:
        remove_peer(self, peer_id)
        for topic in [
            t for t, peers in self.back_off.items() if peers.pop(peer_id, None) and not peers
        ]:
            del self.back_off[topic]

    GossipSub.handle_rpc = bounded_handle_rpc  # type: ignore[method-assign]
    GossipSub.remove_peer = remove_peer_and_back_offs  # type: ignore[method-assign]


#: The smallest message (its data, bytes) a node sends IDONTWANT notices for (go-libp2p's
#: default ``IDontWantMessageThreshold``).
IDONTWANT_MIN_BYTES = 1024


def _idontwant_for_large_messages_only() -> None:
    """GossipSub v1.2 in py-libp2p sent an IDONTWANT to every mesh peer for every message
    it received or published, one RPC each (with the sender's record), whatever the
    message's size: on an idle devnet more RPCs than the blocks themselves (five daemons
    idle at 38.9 % of a core, 32.1 % without). As go-libp2p does, none is sent for a
    message under :data:`IDONTWANT_MIN_BYTES` (for one that small the notice costs about
    what the duplicate it saves does); one the cache does not hold is announced as before.
    Peers' IDONTWANTs are still honoured."""
    from libp2p.pubsub.gossipsub import GossipSub

    emit = GossipSub._emit_idontwant_for_message

    async def emit_for_large(self: Any, msg_id: bytes, topic_ids: Any) -> None:
        cached = self.mcache.get(msg_id)
        if cached is not None and len(cached.data) < IDONTWANT_MIN_BYTES:
            return
        await emit(self, msg_id, topic_ids)

    GossipSub._emit_idontwant_for_message = emit_for_large  # type: ignore[method-assign]
