"""Capability records over Kademlia (specs/network.md, "Capability records and provider
records").

A node stores its signed record under ``/aimx/<peer id>`` and a provider record under the
key of each capability class it serves, re-announces them periodically and renews the
record before it expires. :meth:`CapabilityRecords.find_providers` looks the providers of a
class up (py-libp2p's own lookup stops at the local store when it has any: ours always asks
the network too), deduplicated by peer, and fetches each provider's record from the peer
itself or the DHT; every record is verified before it is kept or returned.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Set
from typing import Any

import trio
from libp2p.kad_dht.common import ALPHA
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.kad_dht.utils import sort_peer_ids_by_distance
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from protocol import Advert, Signed

from ._errors import NetworkError, RecordError
from ._interface import NetworkCounters, PeerKey, RenewRecord
from ._libp2p_config import Libp2pConfig
from ._libp2p_dht import DHT_NAMESPACE, provider_key, record_key
from ._libp2p_transport import is_address_of, key_of, parse_multiaddr
from ._limits import LOOKUP_SHARE, REFRESH_MARGIN_MS
from ._records import best_per_peer, renewed_record, verify_record

log = logging.getLogger(__name__)

#: Our own record, served to peers that ask for it directly (specs/network.md).
RECORD_PROTOCOL = "/aimx/record/1"
_MAX_CACHED_RECORDS = 4096
#: py-libp2p accepts 10 ADD_PROVIDER messages from one peer per 10 s and drops the rest
#: without a word; a node announces at most this many classes per window of this length.
PROVIDES_PER_WINDOW = 8
PROVIDE_WINDOW_S = 10.5

FetchRecord = Callable[[PeerKey, float], Awaitable[bytes]]
"""Ask a peer for its own record directly, within a timeout (seconds)."""


class ProvidePacer:
    """At most :data:`PROVIDES_PER_WINDOW` provider announcements per
    :data:`PROVIDE_WINDOW_S`: py-libp2p drops the rest from the same peer without a word."""

    def __init__(self) -> None:
        self._start = float("-inf")
        self._sent = 0

    def _roll(self) -> None:
        now = trio.current_time()
        if now >= self._start + PROVIDE_WINDOW_S:
            self._start, self._sent = now, 0

    def full(self) -> bool:
        self._roll()
        return self._sent >= PROVIDES_PER_WINDOW

    def take(self) -> None:
        self._roll()
        self._sent += 1

    async def wait(self) -> None:
        """Until a slot is free."""
        while self.full():
            await trio.sleep_until(self._start + PROVIDE_WINDOW_S)


class CapabilityRecords:
    """Our record and provider records on ``dht``, and the records of others.

    ``connected`` is the network's live set of connected peers; ``fetch`` asks a peer for
    its record directly. Records fetched are cached (verified, highest ``seq``, until they
    expire; bounded) for when their peer cannot be reached.
    """

    def __init__(
        self,
        host: Any,
        dht: KadDHT,
        local_peer: PeerKey,
        config: Libp2pConfig,
        counters: NetworkCounters,
        connected: Set[PeerKey],
        fetch: FetchRecord,
    ) -> None:
        self._host = host
        self.dht = dht
        self._peer = local_peer
        self._config = config
        self._chain_id = config.chain_id
        self._counters = counters
        self._connected = connected
        self._fetch = fetch
        self._record: Signed[Advert] | None = None
        self._records: dict[PeerKey, Signed[Advert]] = {}
        self._renew: RenewRecord | None = None
        self._refresh_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._pacer = ProvidePacer()
        self._pending: set[str] = set()
        self._draining = False

    def start(self, nursery: trio.Nursery) -> None:
        """Records are kept announced by tasks in ``nursery``."""
        self._nursery = nursery

    async def serve_record(self, peer: PeerKey, data: bytes) -> bytes:
        """The request handler of the record protocol: our record, or nothing yet."""
        return self._record.raw if self._record is not None else b""

    # --- our record ----------------------------------------------------------------------

    async def advertise(self, record: Signed[Advert], renew: RenewRecord | None) -> None:
        """Announce ``record`` (already checked as ours) and keep it announced."""
        self._record = record
        self._renew = renew
        await self._announce(record)
        if self._refresh_scope is not None:
            self._refresh_scope.cancel()
        self._refresh_scope = trio.CancelScope()
        assert self._nursery is not None
        self._nursery.start_soon(self._refresh, self._refresh_scope)

    async def _announce(self, record: Signed[Advert]) -> None:
        """Store the record under our key and provider records under each class."""

        async def put() -> None:
            try:
                await self.put_value(record_key(self._peer), record.raw)
            except Exception as exc:
                log.warning("could not store the capability record: %s", exc)

        async def provide_now() -> None:
            # one class at a time, as many as py-libp2p accepts from one peer in its rate
            # window; the rest wait for the next window in the background
            for cls in record.message.capability_classes:
                if self._pacer.full():
                    self._pending.add(cls)
                else:
                    self._pacer.take()
                    await self._provide(cls)
            if self._pending and not self._draining:
                assert self._nursery is not None
                self._draining = True
                self._nursery.start_soon(self._provide_pending)

        with trio.move_on_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(put)
                nursery.start_soon(provide_now)

    async def put_value(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key`` on the DHT. Checked first by the rules every node
        applies (:class:`AimxRecords`): a record another node would refuse, such as one
        under another peer's key or a key outside ``/aimx/``, raises :class:`RecordError`
        and is never sent (the receiver could only reset the stream)."""
        validator = self.dht.validator
        assert validator is not None
        try:
            validator.validate(key, value)
        except Exception as exc:
            raise RecordError(
                f"not storing a record under {key[:80]!r}: {exc}; the DHT holds only "
                f"capability records, each under /{DHT_NAMESPACE}/<its signer's peer id>"
            ) from None
        await self.dht.put_value(key, value)

    async def _provide(self, cls: str) -> None:
        try:
            if not await self.dht.provide(provider_key(self._chain_id, cls)):
                log.info("provider record for %s reached no peer yet", cls)
        except Exception as exc:
            log.warning("could not announce provider record for %s: %s", cls, exc)

    async def _provide_pending(self) -> None:
        try:
            while self._pending:
                await self._pacer.wait()
                self._pacer.take()
                await self._provide(self._pending.pop())
        finally:
            self._draining = False

    async def _refresh(self, scope: trio.CancelScope) -> None:
        """Re-announce periodically; renew the record before it expires."""
        first = True
        with scope:
            while self._record is not None:
                record = self._record
                now = self._config.now_ms()
                renew_in = (record.message.expires_ms - REFRESH_MARGIN_MS - now) / 1000
                if self._renew is None and record.message.expires_ms <= now:
                    return
                wait = self._config.republish_interval
                if first:
                    wait, first = min(wait, self._config.reannounce_after), False
                if self._renew is not None:
                    wait = min(wait, max(0.0, renew_in))
                await trio.sleep(wait)
                if self._renew is not None and self._config.now_ms() >= (
                    record.message.expires_ms - REFRESH_MARGIN_MS
                ):
                    new = renewed_record(
                        self._renew, self._peer, self._chain_id, self._config.now_ms, log
                    )
                    if new is None:
                        self._renew = None
                        continue
                    self._record = new
                self._counters.records_refreshed += 1
                await self._announce(self._record)

    # --- records of others ---------------------------------------------------------------

    async def _record_of(self, peer: ID, capability_class: str) -> Signed[Advert] | None:
        key = key_of(peer)
        if key is None:
            return None
        now = self._config.now_ms()
        if key == self._peer:
            own = self._record
            return verify_record(own.raw, self._chain_id, capability_class, now) if own else None
        record: Signed[Advert] | None = None
        if key in self._connected:
            with contextlib.suppress(NetworkError):
                raw = await self._fetch(key, 2.0)
                record = self._check_fetched(raw, key, now)
        cached = self._records.get(key)
        if record is None and cached is not None and cached.message.expires_ms > now:
            return verify_record(cached.raw, self._chain_id, capability_class, now)
        if record is None:
            # not connected, nothing cached: ask the DHT and the peer itself at once,
            # the first valid record wins (a DHT lookup takes 0.3-0.8 s, a dial 0.25 s)
            winner: list[Signed[Advert]] = []

            async def from_dht(scope: trio.CancelScope) -> None:
                with contextlib.suppress(Exception), trio.move_on_after(3):
                    found = self._check_fetched(await self.dht.get_value(record_key(key)), key, now)
                    if found is not None:
                        winner.append(found)
                        scope.cancel()

            async def from_peer(scope: trio.CancelScope) -> None:
                with contextlib.suppress(NetworkError):
                    raw = await self._fetch(key, 3.0)
                    found = self._check_fetched(raw, key, now)
                    if found is not None:
                        winner.append(found)
                        scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(from_dht, nursery.cancel_scope)
                nursery.start_soon(from_peer, nursery.cancel_scope)
            record = winner[0] if winner else None
        if record is not None:
            self._remember(record)
            with contextlib.suppress(Exception):
                addrs = [parse_multiaddr(a) for a in record.message.addresses]
                self._host.get_peerstore().add_addrs(peer, addrs, 600)
        else:
            record = self._records.get(key)  # unreachable now: the last record seen
        if record is None:
            return None
        return verify_record(record.raw, self._chain_id, capability_class, now)

    def _check_fetched(self, raw: bytes | None, key: PeerKey, now: int) -> Signed[Advert] | None:
        if not raw:
            return None
        record = verify_record(raw, self._chain_id, None, now)
        if (
            record is None
            or record.signer != key
            or not all(is_address_of(a, key) for a in record.message.addresses)
        ):
            self._counters.records_rejected += 1
            return None
        return record

    def _remember(self, record: Signed[Advert]) -> None:
        """Cache a verified record (highest seq wins) until it expires; bounded."""
        old = self._records.get(record.signer)
        if old is not None and old.message.seq > record.message.seq:
            return
        if len(self._records) >= _MAX_CACHED_RECORDS and record.signer not in self._records:
            now = self._config.now_ms()
            for peer in [p for p, r in self._records.items() if r.message.expires_ms <= now]:
                del self._records[peer]
            if len(self._records) >= _MAX_CACHED_RECORDS:
                oldest = min(self._records, key=lambda p: self._records[p].message.expires_ms)
                del self._records[oldest]
        self._records[record.signer] = record

    # --- provider lookup -----------------------------------------------------------------

    async def _lookup_providers(self, key: bytes, count: int, within: float) -> list[PeerInfo]:
        """Provider records for ``key``: the local store and an iterative lookup, always
        both (py-libp2p's ``find_providers`` stops at the local store when it has any).
        The lookup gets ``within`` seconds; what it found by then is kept."""
        store = self.dht.provider_store
        found: dict[ID, PeerInfo] = {p.peer_id: p for p in store.get_providers(key)}
        me = self._host.get_id()
        with trio.move_on_after(within):
            try:
                closest = list(await self.dht.peer_routing.find_closest_peers_network(key))
            except trio.Cancelled:
                raise
            except Exception as exc:
                log.debug("closest-peer lookup failed: %r", exc)
                closest = []
            candidates = [p for p in dict.fromkeys(closest) if p != me]
            queried: set[ID] = set()
            for _ in range(8):  # lookup rounds, bounded
                batch = [p for p in candidates if p not in queried][:ALPHA]
                if not batch or len(found) >= count:
                    break
                closer: list[ID] = []

                async def ask(peer: ID, closer: list[ID] = closer) -> None:
                    queried.add(peer)
                    with contextlib.suppress(Exception), trio.move_on_after(3):
                        providers, nearer = await store._get_providers_from_peer_with_closers(
                            peer, key
                        )
                        for info in providers or ():
                            found.setdefault(info.peer_id, info)
                        closer.extend(nearer or ())

                async with trio.open_nursery() as nursery:
                    for peer in batch:
                        nursery.start_soon(ask, peer)
                candidates.extend(p for p in closer if p != me and p not in queried)
                candidates = sort_peer_ids_by_distance(key, list(dict.fromkeys(candidates)))
        return list(found.values())

    async def find_providers(
        self, capability_class: str, limit: int, timeout: float
    ) -> list[Signed[Advert]]:
        """Verified records of the providers of a class, at most ``limit``, found within
        ``timeout`` (see :meth:`node.net.Network.find_providers`)."""
        found: list[Signed[Advert]] = []
        # Peers whose fetch is under way, with their cached record: a fetch the timeout
        # cuts off (a request to a peer that has just left can wait seconds) returns that.
        pending: dict[ID, Signed[Advert]] = {}
        with trio.move_on_after(timeout):
            peers: dict[ID, None] = {}
            if self._record is not None and capability_class in (
                self._record.message.capability_classes
            ):
                peers[self._host.get_id()] = None
            # A lookup that hangs (a peer that has just left) must not use up the time
            # the providers already found need for their records.
            infos = await self._lookup_providers(
                bytes.fromhex(provider_key(self._chain_id, capability_class)),
                max(limit, 1) * 2,
                within=timeout * LOOKUP_SHARE,
            )
            for info in infos:
                peers.setdefault(info.peer_id, None)
                with contextlib.suppress(Exception):
                    if info.addrs:
                        self._host.get_peerstore().add_addrs(info.peer_id, info.addrs, 600)

            async def fetch(peer: ID) -> None:
                key = key_of(peer)
                cached = self._records.get(key) if key is not None else None
                now = self._config.now_ms()
                if cached is not None and (
                    fallback := verify_record(cached.raw, self._chain_id, capability_class, now)
                ):
                    pending[peer] = fallback
                record = await self._record_of(peer, capability_class)
                pending.pop(peer, None)
                if record is not None:
                    found.append(record)

            async with trio.open_nursery() as nursery:
                for peer in peers:
                    nursery.start_soon(fetch, peer)
        found.extend(pending.values())
        return best_per_peer(found, limit)
