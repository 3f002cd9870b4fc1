"""The Kademlia DHT of a node (specs/network.md, "Capability records and provider
records"), as py-libp2p's ``KadDHT`` with its defects worked around.

- Keys: :func:`record_key` (``/aimx/<peer id>``, a node's capability record) and
  :func:`provider_key` (a capability class's provider records).
- Values: :class:`AimxRecords` stores only valid, unexpired capability records under
  ``/aimx/``, each under its signer's key (:class:`AdvertValidator`), and reports the
  records peers sent that it refused.
- Peers: the routing table (:class:`ServerRoutingTable`) holds the connected peers that
  serve the DHT, and lookups start from those only (:class:`_ServersOnly`).

:func:`open_dht` puts them together; what a node stores and looks up on it is
:mod:`._libp2p_records`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any, cast

import libp2p.kad_dht.common as _kad_common
import libp2p.kad_dht.kad_dht as _kad
import libp2p.kad_dht.peer_routing as _peer_routing
import libp2p.kad_dht.provider_store as _provider_store
import libp2p.kad_dht.value_store as _value_store
import trio
from libp2p.kad_dht.common import PROTOCOL_ID as _KAD_PROTOCOL_ID
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.pb.kademlia_pb2 import Message as _KadMessage
from libp2p.kad_dht.routing_table import RoutingTable
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.records.utils import InvalidRecordType
from libp2p.records.validator import NamespacedValidator, Validator
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

import protocol
from protocol import Advert, Signed

from .._token_bucket import TokenBucket
from ._fair_slots import FairSlots
from ._interface import PeerKey, Reachability
from ._libp2p_config import Libp2pConfig
from ._libp2p_inbound import host_of
from ._libp2p_logging import serving_peer
from ._libp2p_outbound import ResettingStreams
from ._libp2p_transport import is_address_of, key_of
from ._records import verify_record

#: DHT namespace of capability records: ``/aimx/<peer id>``.
DHT_NAMESPACE = "aimx"
#: The DHT's protocol: a peer that does not serve it (a client) stays out of the
#: routing table.
KAD_PROTOCOL = str(_KAD_PROTOCOL_ID)
#: Concurrent inbound DHT streams served (py-libp2p's default is 12), shared fairly
#: (:func:`dht_slots`), and one peer's share of them.
DHT_INBOUND_STREAMS = 64
DHT_STREAMS_PER_PEER = 16
#: A DHT stream's slot is not taken before it is this old (seconds): an honest stream
#: serves one query, in milliseconds.
DHT_SLOT_MIN_AGE_S = 2.0
#: Largest DHT message a peer may send us (py-libp2p reads 4 MiB): our largest is a
#: PUT_VALUE with a capability record (under 16 KiB). A 4 MiB ADD_PROVIDER held 419,410
#: addresses, each parsed (review round 16, A2b).
DHT_MAX_INBOUND_MESSAGE = 64 << 10
#: Largest answer to our DHT queries we read (py-libp2p reads 4 MiB): 20 providers or
#: peers with 16 addresses each, or a capability record, are far below it.
DHT_MAX_RESPONSE = 256 << 10
#: A provider entry keeps this many addresses (an Advert lists at most 16).
MAX_PROVIDER_ADDRS = 16
#: Provider keys kept, and the keys one peer may provide under (an Advert names at most
#: 32 capability classes); past the first, a new key is not kept until one expires.
MAX_PROVIDER_KEYS = 1024
MAX_KEYS_PER_PROVIDER = 32
#: Peers one answer to our DHT query may name, closer peers and providers each (k, what an
#: honest server sends), with at most ``MAX_PROVIDER_ADDRS`` addresses each.
DHT_ANSWER_PEERS = 20
#: DHT messages a peer's streams have handled: up to the burst at once, then at the rate
#: (per key, and per host: :func:`~._libp2p_inbound.host_of`); past it a peer's next
#: message waits. One key's stream got 400-600 answers a second, each 145-291 times the
#: bytes it sent (review rounds 44 and 46, D1): the node's uplink and a core were its to
#: spend. An honest node sends a few dozen at once (its announcements, a lookup) and its
#: lookups are kept 30 s. Buckets are kept for the latest ``2 * DHT_PACED_PEERS`` keys and
#: hosts together.
DHT_MESSAGES_PER_PEER_PER_S = 20
DHT_MESSAGES_PER_PEER_BURST = 64
DHT_MESSAGES_PER_HOST_PER_S = 100
DHT_MESSAGES_PER_HOST_BURST = 400
DHT_PACED_PEERS = 4096


def trim_answer(data: bytes) -> bytes:
    """A DHT answer as py-libp2p will read it: at most ``DHT_ANSWER_PEERS`` closer peers
    and providers, each with at most ``MAX_PROVIDER_ADDRS`` addresses (bytes that do not
    parse are left to py-libp2p, which refuses them). py-libp2p stores every peer and
    address an answer names, and its peer store sorts itself on every peer added past its
    1,000: one stranger answering our queries with 4,800 fake peers (under the size
    limit) froze a contributor's loop for 80 of 90 s, and one provider with 25,000
    addresses froze a lookup for 24 s (py-libp2p dedupes addresses in a list) (round 29,
    F2)."""
    message = _KadMessage()
    try:
        message.ParseFromString(data)
    except Exception:
        return data
    peers = (*message.closerPeers, *message.providerPeers)
    if (
        len(message.closerPeers) <= DHT_ANSWER_PEERS
        and len(message.providerPeers) <= DHT_ANSWER_PEERS
        and all(len(p.addrs) <= MAX_PROVIDER_ADDRS for p in peers)
    ):
        return data
    del message.closerPeers[DHT_ANSWER_PEERS:]
    del message.providerPeers[DHT_ANSWER_PEERS:]
    for peer in (*message.closerPeers, *message.providerPeers):
        del peer.addrs[MAX_PROVIDER_ADDRS:]
    return bytes(message.SerializeToString())


async def read_trimmed_answer(stream: Any, max_size: int) -> bytes:
    """py-libp2p's read of an answer to our DHT query, trimmed (:func:`trim_answer`)."""
    return trim_answer(await read_varint_prefixed_bytes_limited(stream, max_size))


def provider_key(chain_id: str, capability_class: str) -> str:
    """The DHT provider key of a class: the hex sha2-256 multihash of
    ``aimx/<chain>/class/<class>``."""
    digest = hashlib.sha256(f"aimx/{chain_id}/class/{capability_class}".encode()).digest()
    return (bytes([0x12, 0x20]) + digest).hex()


def record_key(peer: PeerKey) -> str:
    """The DHT key of a node's capability record: ``/aimx/<peer id>``."""
    return f"/{DHT_NAMESPACE}/{protocol.peer_id(peer)}"


class AdvertValidator(Validator):
    """DHT validator for ``/aimx/<peer id>``: a valid Advert signed by that peer; the
    higher ``seq`` wins."""

    def __init__(self, chain_id: str, now_ms: Callable[[], int]) -> None:
        self.chain_id = chain_id
        self.now_ms = now_ms

    def _decode(self, key: str, value: bytes) -> Signed[Advert]:
        record = verify_record(value, self.chain_id, None, self.now_ms())
        if record is None:
            raise ValueError("not a valid, unexpired capability record")
        if key != record_key(record.signer):
            raise ValueError("capability record stored under another peer's key")
        if not all(is_address_of(a, record.signer) for a in record.message.addresses):
            raise ValueError("a capability record's addresses must be its signer's, dialable")
        return record

    def validate(self, key: str, value: bytes) -> None:
        self._decode(key, value)

    def select(self, key: str, values: list[bytes]) -> int:
        best, best_seq = 0, -1
        for i, value in enumerate(values):
            try:
                seq = self._decode(key, value).message.seq
            except ValueError:
                continue
            if seq > best_seq:
                best, best_seq = i, seq
        return best


#: Called with ``(peer, reason)`` when a peer sent our DHT a record it does not store.
RecordRefused = Callable[[PeerKey, str], None]


class AimxRecords(NamespacedValidator):
    """The DHT's validator: keys under ``/aimx/`` only (strict: no ``/pk/``, ``/ipns/`` or
    plain keys, which py-libp2p would otherwise store unchecked), each value checked by
    :class:`AdvertValidator`.

    The Kademlia wire protocol has no error reply to ``PUT_VALUE``: a record the receiver
    refuses ends the stream with a reset, and py-libp2p's line about it names no peer. So
    a refusal while serving a peer's DHT stream is reported to ``refused(peer, reason)``
    (logged with the peer id, counted, and counted against the peer); our own puts are
    checked by the same rules before anything is sent
    (:meth:`._libp2p_records.CapabilityRecords.put_value`)."""

    def __init__(self, adverts: AdvertValidator, refused: RecordRefused | None = None) -> None:
        super().__init__({DHT_NAMESPACE: adverts}, strict_validation=True)
        self._refused = refused

    def validate(self, key: str, value: bytes) -> None:
        try:
            if not key.startswith(f"/{DHT_NAMESPACE}/"):
                raise InvalidRecordType(
                    f"key {key[:80]!r} is outside this network's /{DHT_NAMESPACE}/ namespace"
                )
            super().validate(key, value)
        except Exception as exc:
            serving = serving_peer.get()
            if (
                self._refused is not None
                and serving is not None
                and serving.protocol_id == KAD_PROTOCOL
            ):
                self._refused(serving.peer, f"its DHT record under {key[:80]!r}: {exc}")
            raise


def serves_dht(host: Any, peer: ID) -> bool | None:
    """Whether identify says ``peer`` serves the DHT; ``None`` before identify has run."""
    try:
        protocols = host.get_peerstore().get_protocols(peer)
    except Exception:
        return None
    if not protocols:
        return None
    return KAD_PROTOCOL in protocols


class ServerRoutingTable(RoutingTable):
    """py-libp2p's routing table, holding only connected peers that serve the DHT.

    py-libp2p adds every peer that opens a DHT stream (a client in client mode too), every
    peer it is about to query (before it knows whether the peer answers), and the peers
    others name in their answers; a peer that left stayed and was handed out to lookups,
    which then dialled it. Here a peer enters once it is connected and identify says it
    serves ``/ipfs/kad/1.0.0`` (the network adds it then), and the network removes it when
    its last connection closes. A lookup still queries the peers others name: they enter
    once connected."""

    async def add_peer(
        self, peer_obj: PeerInfo | ID, *, skip_server_mode_check: bool = False
    ) -> bool:
        peer = peer_obj.peer_id if isinstance(peer_obj, PeerInfo) else peer_obj
        if not self.host.get_network().get_connections(peer):
            return False
        if serves_dht(self.host, peer) is not True:
            return False
        return await super().add_peer(peer_obj, skip_server_mode_check=True)


class _PeerstoreOfServers:
    """The peerstore, whose ``peer_ids()`` are the connected peers that serve the DHT."""

    def __init__(self, host: _ServersOnly) -> None:
        self._host = host

    def __getattr__(self, name: str) -> Any:
        return getattr(self._host.host.get_peerstore(), name)

    def peer_ids(self) -> list[ID]:
        return self._host.get_connected_peers()


class _ServersOnly:
    """The host as py-libp2p's lookups see it. A lookup that finds fewer than 5 peers in
    the routing table starts from every connected peer and every peer in the peerstore:
    clients, and peers long gone, which it then dials and hands out. Here both are the
    connected peers that serve the DHT (or have not told yet); the rest is the host's."""

    def __init__(self, host: Any) -> None:
        self.host = host

    def __getattr__(self, name: str) -> Any:
        return getattr(self.host, name)

    def get_connected_peers(self) -> list[ID]:
        # a peer identify has not answered for yet is tried (it is at least connected)
        return [p for p in self.host.get_connected_peers() if serves_dht(self.host, p) is not False]

    def get_peerstore(self) -> _PeerstoreOfServers:
        return _PeerstoreOfServers(self)


class DhtPacing:
    """The pace of one node's inbound DHT messages, per key and per host (see
    :data:`DHT_MESSAGES_PER_PEER_PER_S`)."""

    def __init__(self) -> None:
        self._buckets: dict[Any, TokenBucket] = {}
        #: Messages that waited for their peer's pace.
        self.paced = 0

    def _bucket(self, who: Any, per_s: int, burst: int, now_ms: int) -> TokenBucket:
        bucket = self._buckets.pop(who, None)
        if bucket is None:
            while len(self._buckets) >= 2 * DHT_PACED_PEERS:
                del self._buckets[next(iter(self._buckets))]  # the least recently seen
            bucket = TokenBucket(per_s * 60, now_ms, burst=burst)
        self._buckets[who] = bucket  # the most recently seen last
        return bucket

    async def pace(self, stream: Any) -> None:
        """Wait until ``stream``'s peer and host may have another message handled."""
        peer = stream.muxed_conn.peer_id
        key = key_of(peer)
        buckets = [
            ("key", peer, DHT_MESSAGES_PER_PEER_PER_S, DHT_MESSAGES_PER_PEER_BURST),
            (
                "host",
                host_of(stream, key) if key is not None else peer,
                DHT_MESSAGES_PER_HOST_PER_S,
                DHT_MESSAGES_PER_HOST_BURST,
            ),
        ]
        waited = False
        while True:
            now_ms = int(trio.current_time() * 1000)
            found = [self._bucket((kind, who), r, b, now_ms) for kind, who, r, b in buckets]
            wait_ms = max(bucket.wait_ms(now_ms) for bucket in found)
            if wait_ms == 0:
                for bucket in found:
                    bucket.take(now_ms)
                return
            if not waited:
                waited = True
                self.paced += 1
            await trio.sleep(wait_ms / 1000)


async def _read_paced_message(stream: Any, max_size: int) -> bytes:
    """py-libp2p's read of a peer's next DHT message on a stream we serve, paced by the
    node's :class:`DhtPacing` (set on the stream by :func:`open_dht`'s handler)."""
    message = await read_varint_prefixed_bytes_limited(stream, max_size)
    pacing = getattr(stream, "_aimx_dht_pacing", None)
    if isinstance(pacing, DhtPacing):
        await pacing.pace(stream)
    return message


def dht_slots() -> FairSlots:
    """The slots inbound DHT streams share: taken from the peer holding the most when
    full, its oldest stream if at least ``DHT_SLOT_MIN_AGE_S`` old (an honest stream
    lives for one query). py-libp2p's handler
    waits for a peer's next message with no timeout: two keys that opened 64 streams and
    sent nothing refused every other peer's DHT queries for good (review round 16, A2a)."""
    return FairSlots(
        DHT_INBOUND_STREAMS,
        DHT_STREAMS_PER_PEER,
        stall_s=DHT_SLOT_MIN_AGE_S,
        wait_s=DHT_SLOT_MIN_AGE_S + 0.5,
    )


def guard_provider_store(store: Any) -> None:
    """Bound what peers' ADD_PROVIDER messages leave in ``store`` (py-libp2p keeps any key,
    every address, for 48 hours): only keys shaped as :func:`provider_key` (a sha2-256
    multihash), at most ``MAX_PROVIDER_ADDRS`` addresses an entry, ``MAX_KEYS_PER_PROVIDER``
    keys a provider and ``MAX_PROVIDER_KEYS`` keys in all. One key sending 4 MiB messages of
    one address repeated grew a node by 47 MiB a second, kept after it left (review round
    16, A2b)."""
    add = store.add_provider

    def add_provider(key: bytes, provider: PeerInfo) -> None:
        if len(key) != 34 or key[:2] != b"\x12\x20" or provider is None:
            return
        providers: dict[Any, Any] = store.providers
        who = str(provider.peer_id)
        if key not in providers or who not in providers[key]:
            held = sum(1 for entries in providers.values() if who in entries)
            if held >= MAX_KEYS_PER_PROVIDER:
                return
        if key not in providers and len(providers) >= MAX_PROVIDER_KEYS:
            # Full: a new key waits for one to expire. Evicting the key with the fewest
            # providers let junk keys with two push out an honest class key with one, again
            # after every re-announcement (review round 17, R17-A2).
            return
        add(key, PeerInfo(provider.peer_id, list(provider.addrs)[:MAX_PROVIDER_ADDRS]))

    store.add_provider = add_provider


#: Records the DHT's value store holds, and the largest value it keeps (a capability record
#: is under 16 KiB): py-libp2p held 50,000 of any size, with whatever else a PUT_VALUE's
#: record carried, for 24 h, and found the oldest by parsing every one (round 45, H2, H3).
MAX_VALUE_RECORDS = 2048
MAX_VALUE_BYTES = 16 << 10


def guard_value_store(store: Any) -> None:
    """Bound what peers' PUT_VALUE messages leave in ``store``: a record is kept as its
    key, value, author and signature only (one key stored 3,000 padded records of 62 KB,
    178 MiB, kept after it left), a value over ``MAX_VALUE_BYTES`` is not kept, and past
    ``MAX_VALUE_RECORDS`` the record stored first goes, at once (a full store of 50,000
    stalled the loop 0.5-1 s a PUT, each parsing every record's time)."""
    from libp2p.kad_dht.pb.kademlia_pb2 import Record

    records: dict[bytes, tuple[Any, float]] = store.store

    def make_room() -> None:
        while len(records) >= MAX_VALUE_RECORDS:
            del records[next(iter(records))]

    def put_record(key: bytes, record: Any) -> None:
        if len(record.value) > MAX_VALUE_BYTES:
            return
        kept = Record(
            key=record.key,
            value=record.value,
            timeReceived=record.timeReceived,
            author=record.author,
            signature=record.signature,
        )
        records.pop(key, None)
        make_room()
        records[key] = (kept, time.time() + _kad_common.DEFAULT_TTL)

    store.put_record = put_record
    store._evict_if_full = make_room


def open_dht(host: Any, config: Libp2pConfig, refused: RecordRefused | None = None) -> KadDHT:
    """A Kademlia DHT in server mode (client mode on a private node) that stores only valid
    capability records under its namespace (:class:`AimxRecords`; ``refused`` hears of the
    records peers sent that it refused). Its routing table (:class:`ServerRoutingTable`) is
    filled from connections (``add_peer``), not by a random walk, and its lookups start
    from connected DHT servers only (:class:`_ServersOnly`)."""
    validator = AimxRecords(AdvertValidator(config.chain_id, config.now_ms), refused)
    # A private node (behind a NAT) is a DHT client: a server that nobody can dial would be
    # named to others' lookups, whose dials to it hang (specs/nat.md).
    private = config.reachability is Reachability.PRIVATE
    dht = KadDHT(
        host,
        DHTMode.CLIENT if private else DHTMode.SERVER,
        enable_random_walk=False,
        validator=validator,
        validator_changed=True,
        strict_validation=True,
    )
    table = ServerRoutingTable(dht.local_peer_id, host)
    dht.routing_table = table
    dht.peer_routing.routing_table = table
    # A query's stream is reset once closed (round 49, K1: _libp2p_outbound.py).
    queries = ResettingStreams(host)
    dht.peer_routing.host = cast(Any, _ServersOnly(queries))  # views of the host
    dht.provider_store.host = cast(Any, queries)
    dht.value_store.host = cast(Any, queries)
    # py-libp2p resets every inbound DHT stream past 12 at once, silently for
    # ADD_PROVIDER (its sender does not wait for an answer): nodes announcing together
    # lost provider records that way. The network's guard shares DHT_INBOUND_STREAMS
    # fairly (dht_slots) and takes a held slot for a newcomer, whose stream then waits
    # here for the taken one to unwind: py-libp2p's own limit is kept out of the way.
    limiter = getattr(dht, "_inbound_limiter", None)
    if isinstance(limiter, trio.CapacityLimiter):
        limiter.total_tokens = 4 * DHT_INBOUND_STREAMS
    _kad.MAX_DHT_MESSAGE_SIZE = DHT_MAX_INBOUND_MESSAGE  # type: ignore[attr-defined]  # read per message
    # Answers to our own queries are read in these modules, each with its own binding of
    # the 4 MiB constant: a DHT server answering GET_PROVIDERS with 400,000 addresses
    # froze the node 0.5-0.7 s per lookup while py-libp2p parsed them (round 17, R17-A3)
    for module in (_provider_store, _value_store, _peer_routing):
        module.MAX_DHT_MESSAGE_SIZE = DHT_MAX_RESPONSE  # type: ignore[attr-defined]
        module.read_varint_prefixed_bytes_limited = read_trimmed_answer  # type: ignore[attr-defined]
    guard_provider_store(dht.provider_store)
    guard_value_store(dht.value_store)
    _pace_inbound(dht)
    return dht


def _pace_inbound(dht: KadDHT) -> None:
    """Pace the messages peers send on the DHT streams this node serves (:class:`DhtPacing`):
    the handler marks each stream with the node's pacing, and py-libp2p's read of the next
    message (a module global, read at each message) waits on it."""
    pacing = DhtPacing()
    dht._aimx_pacing = pacing  # type: ignore[attr-defined]
    handle = dht.handle_stream

    async def handle_stream(stream: Any) -> None:
        stream._aimx_dht_pacing = pacing
        await handle(stream)

    dht.handle_stream = handle_stream  # type: ignore[method-assign]
    if dht.mode == DHTMode.SERVER:  # registered with py-libp2p's own handler: again
        dht.host.set_stream_handler(_KAD_PROTOCOL_ID, handle_stream)
    _kad.read_varint_prefixed_bytes_limited = _read_paced_message  # type: ignore[attr-defined,assignment]


def pacing_of(dht: KadDHT) -> DhtPacing | None:
    """A DHT's pacing of its peers' messages (``None`` if not opened by :func:`open_dht`)."""
    pacing = getattr(dht, "_aimx_pacing", None)
    return pacing if isinstance(pacing, DhtPacing) else None
