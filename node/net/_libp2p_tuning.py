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
from collections.abc import Callable
from typing import Any

import trio

#: How long a host's own signed peer record envelope is reused.
ENVELOPE_TTL_S = 5.0
#: How long a verified peer record (by its bytes) is accepted again without a signature check.
RECORD_TTL_S = 60.0
#: Verified records remembered per host (peers), before expired ones are dropped.
MAX_RECORDS = 4096

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
        if not msg.HasField("senderRecord"):
            return True
        record: bytes = msg.senderRecord
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
        known = set(self.addrs)
        for addr in addrs:
            if addr not in known:
                known.add(addr)
                self.addrs.append(addr)

    PeerStore.consume_peer_record = consume_peer_record  # type: ignore[method-assign]
    PeerData.add_addrs = add_addrs  # type: ignore[method-assign]


def protect_connected(host: Any) -> None:
    """``host``'s peer store never evicts a peer ``host`` is connected to (round 30, N2)."""
    network = host.get_network()
    host.get_peerstore()._aimx_connected = lambda: frozenset(network.connections)
