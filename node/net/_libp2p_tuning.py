"""Per-message costs of py-libp2p 0.8.1, removed without changing the wire protocol.

Measured on loopback (2-core machine), these dominated a busy node's CPU:

- Every pubsub RPC carries the sender's signed peer record, and building it calls
  ``host.get_addrs()``, which parses each listen address into a multiaddr again (about
  0.3-0.4 ms a call). The envelope only changes when the addresses do: it is kept per host
  for :data:`ENVELOPE_TTL_S`, so a new address (a relay reservation) is sent within that.
- Every pubsub RPC received verifies that record's signature and stores it (about 0.25 ms),
  although a peer sends the same record bytes until its addresses change. A record already
  verified and stored for that peer is accepted for :data:`RECORD_TTL_S` by its bytes.
- Yamux sends a WINDOW_UPDATE frame after nearly every read (its "partial slack" and
  release-on-read rules), doubling the frames of small messages: on a busy requester that
  was 7-9% of its CPU. Here a stream's window is released as go-yamux releases it: once
  at least half of it has been consumed (plus py-libp2p's window auto-tuning, unchanged).
  Flow control itself is unchanged: a sender never has more than the window unacknowledged.
- Yamux formats a debug line for every frame it writes, whether debug logging is on or not,
  and reads its ``PY_YAMUX_*`` tuning variables from the environment several times per
  frame. Frames are written without the line unless debug logging is on, and the variables
  are read once, at :func:`install`.

:func:`install` patches the library's module attributes once per process; the caches are
keyed by host, so nodes in one process (tests) do not share entries.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

import trio
from libp2p.pubsub.pb import rpc_pb2

from . import _libp2p_gossip, _libp2p_handshakes, _libp2p_unread, _libp2p_yamux
from ._limits import MAX_PUBSUB_BYTES, is_topic

#: How long a host's own signed peer record envelope is reused.
ENVELOPE_TTL_S = 5.0
#: How long a verified peer record (by its bytes) is accepted again without a signature check.
RECORD_TTL_S = 60.0
#: Verified records remembered per host (peers), before expired ones are dropped.
MAX_RECORDS = 4096

log = logging.getLogger(__name__)

_installed = False


def install() -> None:
    """Apply the changes (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    _cache_envelopes()
    _cache_consumed_records()
    _batch_window_updates()
    _evict_peers_in_batches()
    _bound_peer_records()
    _find_parent_tasks_at_once()
    _bound_iwant_answers()
    _libp2p_yamux.install()
    _libp2p_unread.install()
    _libp2p_handshakes.install()
    _bound_protocol_books()
    _libp2p_gossip.install()


def _cache_envelopes() -> None:
    import libp2p.identity.identify.identify as identify
    import libp2p.kad_dht.kad_dht as kad_dht
    import libp2p.kad_dht.peer_routing as peer_routing
    import libp2p.kad_dht.provider_store as provider_store
    import libp2p.kad_dht.value_store as value_store
    import libp2p.peer.peerstore as peerstore
    import libp2p.pubsub.floodsub as floodsub
    import libp2p.pubsub.gossipsub as gossipsub
    import libp2p.pubsub.pubsub as pubsub

    original: Callable[[Any], tuple[bytes, bool]] = peerstore.env_to_send_in_RPC
    cache: weakref.WeakKeyDictionary[Any, tuple[float, bytes]] = weakref.WeakKeyDictionary()

    def env_to_send_in_rpc(host: Any) -> tuple[bytes, bool]:
        now = time.monotonic()
        hit = cache.get(host)
        if hit is not None and hit[0] > now:
            return hit[1], False
        envelope, created = original(host)
        cache[host] = (now + ENVELOPE_TTL_S, envelope)
        return envelope, created

    for module in (
        peerstore,
        identify,
        pubsub,
        gossipsub,
        floodsub,
        kad_dht,
        peer_routing,
        provider_store,
        value_store,
    ):
        if getattr(module, "env_to_send_in_RPC", None) is original:
            module.env_to_send_in_RPC = env_to_send_in_rpc  # type: ignore[attr-defined]


#: Most messages, subscriptions, and IHAVE or IWANT message ids one pubsub RPC from a peer
#: may carry: a node's own RPCs carry a few, an answer to an IWANT at most
#: :data:`MAX_IWANT_IDS` messages.
MAX_RPC_MESSAGES = 256
MAX_RPC_SUBSCRIPTIONS = 128
MAX_RPC_GOSSIP_IDS = 1024
#: GRAFTs, and PRUNEs, one RPC may carry (one per topic the node follows is what it takes).
MAX_RPC_MESH_CONTROL = 64
#: A pubsub message's bytes besides its data (sender, seqno, topics, signature, key).
MAX_MESSAGE_OVERHEAD_BYTES = 4096
#: Its fields that name it: py-libp2p's message id is ``from_id + seqno``, kept in the
#: seen cache for 120 s and refreshed on each sighting; a seqno of 260 KiB made one key's
#: messages hold 514 MiB of ids (round 44, G2). A seqno is 8 bytes, a peer id under 64.
MAX_SEQNO_BYTES = 8
MAX_FROM_BYTES = 64
MAX_KEY_BYTES = 256
MAX_SIGNATURE_BYTES = 128
MAX_MESSAGE_TOPICS = 1
#: IHAVE, IWANT and IDONTWANT entries one RPC may carry: empty ones counted nothing, and
#: 209,000 in one RPC kept a node's loop busy 2.5 s (round 44, G1).
MAX_RPC_GOSSIP_ENTRIES = 128


def bounded_rpc(rpc: Any) -> bool:
    """Whether a pubsub RPC from a peer is taken, after its oversized messages are dropped
    from it. py-libp2p starts a task per message and three per new subscription, and each
    start walked every task of the service: one RPC of 6,000 empty messages froze a
    coordinator for 14.5 s, one of 2,500 subscribe-unsubscribe pairs for 25 s (round 31,
    G2). A message over ``MAX_PUBSUB_BYTES`` was cached and forwarded before our pump
    dropped it, and an IWANT for it made us copy it thousands of times (G1); its IHAVE and
    IWANT lists are bounded too (G4), and so are its GRAFT and PRUNE lists (round 35). A
    subscription or message naming a topic that has no topic's form (``is_topic``: 1-128
    characters) is dropped: py-libp2p kept 100 topic names a peer of up to 1 MiB each, and
    10 keys made a node hold 999 MiB (round 43, F2); a message is bounded whole, not only
    its data (F3)."""
    if len(rpc.publish) > MAX_RPC_MESSAGES or len(rpc.subscriptions) > MAX_RPC_SUBSCRIPTIONS:
        return False
    if not all(is_topic(s.topicid) for s in rpc.subscriptions):
        kept_subs = [s for s in rpc.subscriptions if is_topic(s.topicid)]
        del rpc.subscriptions[:]
        rpc.subscriptions.extend(kept_subs)
    if not all(_message_bounded(m) for m in rpc.publish):
        kept = [m for m in rpc.publish if _message_bounded(m)]
        del rpc.publish[:]
        rpc.publish.extend(kept)
    if rpc.HasField("control"):
        control = rpc.control
        for entries in (control.ihave, control.iwant, control.idontwant):
            if (
                len(entries) > MAX_RPC_GOSSIP_ENTRIES
                or sum(len(e.messageIDs) for e in entries) > MAX_RPC_GOSSIP_IDS
            ):
                del entries[:]
        if len(control.graft) > MAX_RPC_MESH_CONTROL:
            del control.graft[:]
        if len(control.prune) > MAX_RPC_MESH_CONTROL:
            del control.prune[:]
    return True


def _keep_followed(rpc: Any, followed: Any) -> None:
    """Drop an RPC's messages on topics we do not follow: py-libp2p's scorer made an entry
    for every topic a message named, before its signature was checked, and one key's
    messages naming made-up topics left 2.15 million (+231 MB, 1 s heartbeats: round 45,
    H1). Nobody forwards a topic it does not follow."""
    if any(t not in followed for m in rpc.publish for t in m.topicIDs):
        kept = [m for m in rpc.publish if all(t in followed for t in m.topicIDs)]
        del rpc.publish[:]
        rpc.publish.extend(kept)


def _message_bounded(message: Any) -> bool:
    """A pubsub message's data within ``MAX_PUBSUB_BYTES``, the whole within that and its
    overhead, the fields that name it within theirs, and every topic it names of a topic's
    form."""
    return (
        len(message.data) <= MAX_PUBSUB_BYTES
        and message.ByteSize() <= MAX_PUBSUB_BYTES + MAX_MESSAGE_OVERHEAD_BYTES
        and len(message.seqno) <= MAX_SEQNO_BYTES
        and len(message.from_id) <= MAX_FROM_BYTES
        and len(message.key) <= MAX_KEY_BYTES
        and len(message.signature) <= MAX_SIGNATURE_BYTES
        and len(message.topicIDs) <= MAX_MESSAGE_TOPICS
        and all(is_topic(t) for t in message.topicIDs)
    )


#: Largest signed peer record read from a pubsub RPC: 64 addresses of a few dozen bytes,
#: a key and a signature fit in far less.
MAX_RECORD_BYTES = 8 << 10


def _cache_consumed_records() -> None:
    import libp2p.pubsub.floodsub as floodsub
    import libp2p.pubsub.gossipsub as gossipsub
    import libp2p.pubsub.pubsub as pubsub
    import libp2p.pubsub.utils as utils

    original: Callable[[Any, Any, Any], bool] = utils.maybe_consume_signed_record
    seen: weakref.WeakKeyDictionary[Any, dict[Any, tuple[bytes, float]]] = (
        weakref.WeakKeyDictionary()
    )

    def maybe_consume_signed_record(msg: Any, host: Any, peer_id: Any) -> bool:
        # py-libp2p calls this first on every pubsub RPC it parses: the RPC is bounded here
        if isinstance(msg, rpc_pb2.RPC) and not bounded_rpc(msg):
            return False
        followed = getattr(host, "_aimx_followed", None)
        if isinstance(msg, rpc_pb2.RPC) and followed is not None:
            _keep_followed(msg, followed())
        if not msg.HasField("senderRecord"):
            return True
        record: bytes = msg.senderRecord
        if len(record) > MAX_RECORD_BYTES:
            return False  # refused unparsed: it holds more than MAX_RECORD_ADDRS (round 31, G3)
        now = time.monotonic()
        per_host = seen.setdefault(host, {})
        hit = per_host.get(peer_id)
        if hit is not None and hit[0] == record and hit[1] > now:
            return True
        ok = original(msg, host, peer_id)
        if ok:
            if len(per_host) >= MAX_RECORDS:
                for key in [k for k, (_, t) in per_host.items() if t <= now]:
                    del per_host[key]
                if len(per_host) >= MAX_RECORDS:
                    per_host.clear()
            per_host[peer_id] = (record, now + RECORD_TTL_S)
        return ok

    for module in (utils, pubsub, gossipsub, floodsub):
        if getattr(module, "maybe_consume_signed_record", None) is original:
            module.maybe_consume_signed_record = maybe_consume_signed_record  # type: ignore[attr-defined]


def _batch_window_updates() -> None:
    import libp2p.stream_muxer.yamux.yamux as yamux

    # The tuning variables, read once (the module reads them on every call).
    debug = yamux._perf_yamux_debug_enabled()
    no_hysteresis = yamux._yamux_disable_hysteresis()
    divisor = yamux._yamux_batch_threshold_divisor()
    read_timeout = yamux._yamux_data_read_timeout()
    yamux._perf_yamux_debug_enabled = lambda: debug
    yamux._yamux_disable_hysteresis = lambda: no_hysteresis
    yamux._yamux_batch_threshold_divisor = lambda: divisor
    yamux._yamux_data_read_timeout = lambda: read_timeout
    yamux._yamux_release_on_read = lambda: False

    async def release_window(self: Any, *, bytes_read: int = 0) -> None:
        # go-yamux ``sendWindowUpdate``: what the window lacks of its target, counting
        # what is still buffered unread, is released once it reaches half the target.
        # No checkpoint between reading and updating the window fields: no lock needed.
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        delta = self.target_recv_window - (self.recv_window + buffered)
        if delta <= 0 or delta < self._grow_threshold():
            return
        self.recv_window += delta
        self._pending_recv_release = 0
        delta += self._apply_autotune_epoch(buffered)
        await self.send_window_update(delta, skip_lock=True)

    yamux.YamuxStream._auto_tune_and_send_window_update = release_window  # type: ignore[method-assign]

    async def write_frame(self: Any, data: bytes) -> None:
        # ``Yamux._write_frame`` without its per-frame debug line (built unconditionally).
        if yamux.logger.isEnabledFor(logging.DEBUG):
            await original_write_frame(self, data)
            return
        async with self._write_lock:
            await self.secured_conn.write(data)
        await trio.lowlevel.checkpoint()

    original_write_frame = yamux.Yamux._write_frame
    yamux.Yamux._write_frame = write_frame  # type: ignore[method-assign]


#: Past its limit the peer store evicts down to this share of it, at once.
PEERSTORE_EVICT_TO = 0.9


def _evict_peers_in_batches() -> None:
    """py-libp2p's peer store, past ``max_peers``, sorts its whole map on every peer added
    to evict one: 0.5 ms an add at 1,000 peers, and a stranger's answers naming thousands
    of peers froze the node's loop for seconds (round 29, F2). Evicting down to 90 % of
    the limit at once sorts once per hundred adds; the order is py-libp2p's (entries
    without addresses, then expired ones, then the oldest), but a connected peer is never
    evicted (a flood of fake peers pushed out the bootstrap coordinator's entry: round 30,
    N2): :func:`protect_connected` tells a host's store which peers are."""
    from libp2p.peer.peerstore import PeerStore

    def enforce_peer_limit(self: Any) -> None:
        if len(self.peer_data_map) <= self.max_peers:
            return
        keep = int(self.max_peers * PEERSTORE_EVICT_TO)
        connected = getattr(self, "_aimx_connected", None)
        protected = connected() if connected is not None else frozenset()

        def priority(item: tuple[Any, Any]) -> tuple[bool, bool]:
            _, data = item
            return (not data.get_addrs(), data.is_expired())

        ranked = [
            item
            for item in sorted(self.peer_data_map.items(), key=priority, reverse=True)
            if item[0] not in protected
        ]
        for peer_id, _ in ranked[: len(self.peer_data_map) - keep]:
            self.peer_record_map.pop(peer_id, None)
            del self.peer_data_map[peer_id]

    PeerStore._enforce_peer_limit = enforce_peer_limit  # type: ignore[method-assign]


#: Most addresses a signed peer record may carry to be taken: a node lists its listen and
#: relayed addresses (an Advert names at most 16), and py-libp2p caps identify at 1,000.
MAX_RECORD_ADDRS = 64


def _bound_peer_records() -> None:
    """Every pubsub RPC, DHT request and DHT answer may carry a signed peer record, which
    the peer store takes whole, deduplicating addresses by scanning a list: one RPC from a
    fresh key with a record of 24,000 addresses froze a coordinator's loop for 25 s, no
    block produced meanwhile (round 30, N1). A record with more than
    :data:`MAX_RECORD_ADDRS` addresses is refused (its RPC or answer is dropped, as for a
    bad signature: a signed record cannot be cut), and addresses are deduplicated with a
    set, in order, whatever path adds them."""
    from libp2p.peer.peerdata import PeerData
    from libp2p.peer.peerstore import PeerStore

    consume = PeerStore.consume_peer_record

    def consume_peer_record(self: Any, envelope: Any, ttl: int) -> bool:
        try:
            addresses = len(envelope.record().addrs)
        except Exception:
            return False
        if addresses > MAX_RECORD_ADDRS:
            return False
        return bool(consume(self, envelope, ttl))

    def add_addrs(self: Any, addrs: Any) -> None:
        # the set is kept with the list (py-libp2p adds identify's addresses one call
        # each: a set built per call made 1,000 addresses cost 500,000 hashes, 80 ms of
        # loop a message; round 38, M1); rebuilt when the list was replaced or changed
        kept = self.__dict__.get("_aimx_addrs")
        if kept is None or kept[0] is not self.addrs or len(kept[1]) != len(self.addrs):
            kept = self._aimx_addrs = (self.addrs, set(self.addrs))
        known = kept[1]
        for addr in addrs:
            if addr not in known:
                known.add(addr)
                self.addrs.append(addr)

    PeerStore.consume_peer_record = consume_peer_record  # type: ignore[method-assign]
    PeerData.add_addrs = add_addrs  # type: ignore[method-assign]
    _bound_identify_addrs()


def _bound_identify_addrs() -> None:
    """An identify answer or push may carry 1,000 listen addresses, each stored (round 38,
    M1: 96 pushes of 1,000 from 24 keys froze a node's loop 1.9 s and left 24,000
    addresses behind): its first :data:`MAX_RECORD_ADDRS` are kept, as for a signed
    record."""
    import libp2p.host.basic_host as basic_host
    import libp2p.identity.identify_push.identify_push as identify_push
    import libp2p.identity.update as update

    original = update.update_peerstore_from_identify

    async def bounded(peerstore: Any, peer_id: Any, identify_msg: Any) -> None:
        if len(identify_msg.listen_addrs) > MAX_RECORD_ADDRS:
            del identify_msg.listen_addrs[MAX_RECORD_ADDRS:]
        await original(peerstore, peer_id, identify_msg)

    for module in (update, identify_push, basic_host):
        module.update_peerstore_from_identify = bounded  # type: ignore[attr-defined]


def protect_connected(host: Any) -> None:
    """``host``'s peer store never evicts a peer ``host`` is connected to (round 30, N2)."""
    network = host.get_network()
    host.get_peerstore()._aimx_connected = lambda: frozenset(network.connections)


#: The running service tasks (py-libp2p's ``FunctionTask``) by their trio task: entered
#: when one starts, removed when it ends.
RUNNING_TASKS: dict[Any, Any] = {}


def _find_parent_tasks_at_once() -> None:
    """py-libp2p's service manager finds the task that starts a task by walking every task
    it runs, so a peer's RPC of n messages (a task each) cost n²/2 steps (round 31, G2).
    The task is looked up by its trio task instead (:data:`RUNNING_TASKS`); it is the
    caller's parent only if it belongs to this manager (its root is one of the manager's),
    as the walk found. An entry leaves when its task ends: held in a weak-keyed map whose
    value held its key, every task and its arguments (each pubsub message) were kept for
    good (round 32, T1)."""
    from libp2p.tools.anyio_service.trio_manager import TrioManager
    from libp2p.tools.anyio_service.trio_tasks import FunctionTask

    trio_task: Any = FunctionTask.__dict__["trio_task"]
    run = FunctionTask.run

    def set_trio_task(self: Any, value: Any) -> None:
        trio_task.fset(self, value)
        RUNNING_TASKS[value] = self

    async def run_then_forget(self: Any) -> None:
        try:
            await run(self)
        finally:
            if self._trio_task is not None:
                RUNNING_TASKS.pop(self._trio_task, None)

    def find_parent_task(self: Any, current: Any) -> Any:
        task = RUNNING_TASKS.get(current)
        if task is None:
            return None
        root = task
        while root.parent is not None:
            root = root.parent
        return task if root in self._root_tasks else None

    setattr(FunctionTask, "trio_task", property(trio_task.fget, set_trio_task))  # noqa: B010
    setattr(FunctionTask, "run", run_then_forget)  # noqa: B010
    setattr(TrioManager, "_find_parent_task", find_parent_task)  # noqa: B010


#: Message ids of one IWANT answered, and times one message is sent to one peer that way
#: (go-libp2p-pubsub's ``GossipRetransmission``).
MAX_IWANT_IDS = 64
IWANT_RETRANSMISSIONS = 3
#: Bytes of messages one IWANT is answered with at most (py-libp2p's outbound chunk).
MAX_IWANT_BYTES = 1 << 20
#: (peer, message id) pairs whose retransmissions are counted before the count restarts.
MAX_IWANT_COUNTED = 16_384


def _bound_iwant_answers() -> None:
    """py-libp2p answers an IWANT with every message it names, repeats included: one
    stranger's IWANT naming its own 200 KB cached message 6,000 times built 1.2 GB, and
    four froze a coordinator 9-16 s (round 31, G1). An IWANT's ids are deduplicated, the
    first :data:`MAX_IWANT_IDS` answered, and each message sent to one peer this way
    :data:`IWANT_RETRANSMISSIONS` times at most, :data:`MAX_IWANT_BYTES` an answer. Only
    ids of cached messages are counted (made-up ids filled the count's table and reset it:
    round 32, R2), and only for an IWANT the rate limit lets through; a full table forgets
    messages no longer cached, then the counts of the peer holding the most (cleared
    whole, 16 fresh peers naming 1,024 cached messages each reset every peer's: round 33)."""
    from libp2p.pubsub.gossipsub import GossipSub
    from libp2p.pubsub.utils import safe_bytes_from_hex

    handle_iwant = GossipSub.handle_iwant
    served: weakref.WeakKeyDictionary[Any, dict[tuple[Any, bytes], int]] = (
        weakref.WeakKeyDictionary()
    )

    async def bounded_handle_iwant(self: Any, iwant_msg: Any, sender_peer_id: Any) -> None:
        if not self._check_iwant_rate_limit(sender_peer_id):
            return
        counts = served.setdefault(self, {})
        if len(counts) >= MAX_IWANT_COUNTED:
            for gone in [k for k in counts if self.mcache.get(k[1]) is None]:
                del counts[gone]
            if len(counts) >= MAX_IWANT_COUNTED:
                top, _ = Counter(peer for peer, _ in counts).most_common(1)[0]
                for gone in [k for k in counts if k[0] == top]:
                    del counts[gone]
        wanted = rpc_pb2.ControlIWant()
        asked: set[bytes] = set()
        size = 0
        for wire in iwant_msg.messageIDs:
            if len(wanted.messageIDs) >= MAX_IWANT_IDS:
                break
            msg_id = safe_bytes_from_hex(wire)  # one message may be named two ways
            if msg_id is None or msg_id in asked:
                continue
            asked.add(msg_id)
            cached = self.mcache.get(msg_id)
            key = (sender_peer_id, msg_id)
            if cached is None or counts.get(key, 0) >= IWANT_RETRANSMISSIONS:
                continue
            size += cached.ByteSize()
            if size > MAX_IWANT_BYTES:
                break
            counts[key] = counts.get(key, 0) + 1
            wanted.messageIDs.append(wire)
        if wanted.messageIDs:
            # the original checks the limit again: this request is counted once
            self.iwant_request_limits[sender_peer_id]["requests"].pop()
            await handle_iwant(self, wanted, sender_peer_id)

    GossipSub.handle_iwant = bounded_handle_iwant  # type: ignore[method-assign]


#: Protocols kept of one peer (ours mount about twenty), and the longest protocol id kept.
MAX_PEER_PROTOCOLS = 128
MAX_PROTOCOL_ID = 128


def _bound_protocol_books() -> None:
    """py-libp2p keeps a peer's protocol list as its identify or identify-push sent it,
    duplicates included, up to the 1 MiB message: three 1 MB pushes of two-byte names
    grew a coordinator 32 MB, still held after the peer left (round 34, I1). A peer's
    protocols are deduplicated, ids over :data:`MAX_PROTOCOL_ID` characters dropped, and
    the first :data:`MAX_PEER_PROTOCOLS` kept."""
    from libp2p.peer.peerdata import PeerData

    def bounded(protocols: Any) -> list[Any]:
        kept = [p for p in dict.fromkeys(protocols) if len(p) <= MAX_PROTOCOL_ID]
        return kept[:MAX_PEER_PROTOCOLS]

    def add_protocols(self: Any, protocols: Any) -> None:
        self.protocols = bounded([*self.protocols, *protocols])

    def set_protocols(self: Any, protocols: Any) -> None:
        self.protocols = bounded(protocols)

    PeerData.add_protocols = add_protocols  # type: ignore[method-assign]
    PeerData.set_protocols = set_protocols  # type: ignore[method-assign]
