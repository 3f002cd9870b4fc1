"""Finding providers and being found: a requester's lookups of a capability class on the
DHT (cached, refreshed in the background), a contributor's signed capability record."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

import protocol
from protocol import Advert, Signed

from ..net import NetworkError, PeerKey

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger(__name__)

ADVERT_LIFETIME_MS = 3_600_000
PROVIDERS_REFRESH_MS = 30_000
#: How long a provider lookup may take.
LOOKUP_TIMEOUT_S = 3.0
READVERTISE_FIRST_S = 3.0
READVERTISE_EVERY_S = 20.0
#: Re-advertising backs off (doubling) from READVERTISE_EVERY_S to this.
READVERTISE_MAX_S = 300.0
#: Addresses of one provider's record dialled, at most (its own, by its peer id).
MAX_DIALS_PER_RECORD = 4


class Discovery:
    """Provider lookups (a requester) and advertising (a contributor)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._providers_cache: dict[str, tuple[int, list[PeerKey]]] = {}
        self._looking_up: set[str] = set()
        #: Providers being dialled (one dial at a time each).
        self._dialing: set[PeerKey] = set()
        self._advert_seq = 0

    # --- a requester's lookups -----------------------------------------------------------

    async def providers_for(self, capability_class: str, *, fresh: bool = False) -> list[PeerKey]:
        """Providers of ``capability_class`` found on the DHT. The last non-empty answer
        is kept and used while a new lookup runs in the background (every 30 s): a lookup
        can come back empty on a busy network, and a submit should not wait for one."""
        now = self._node.now_ms()
        cached = self._providers_cache.get(capability_class)
        if not fresh and cached is not None and cached[1]:
            stale = now - cached[0] >= PROVIDERS_REFRESH_MS
            if stale and capability_class not in self._looking_up:
                self._looking_up.add(capability_class)
                self._node.spawn(self._lookup, capability_class)
            return cached[1]
        return await self._lookup(capability_class)

    async def _lookup(self, capability_class: str) -> list[PeerKey]:
        node = self._node
        try:
            records = await node.net.find_providers(capability_class, timeout=LOOKUP_TIMEOUT_S)
        except NetworkError as exc:
            log.info("finding providers of %s failed: %s", capability_class, exc)
            records = []
        finally:
            self._looking_up.discard(capability_class)
        found = [r.signer for r in records if r.signer != node.me]
        old = self._providers_cache.get(capability_class)
        if found or old is None:
            self._providers_cache[capability_class] = (node.now_ms(), found)
        else:
            found = old[1]
        connected = node.net.connected_peers()
        for record in records:  # a first dial is slow: not inside a bid window
            signer = record.signer
            if signer in connected or signer == node.me or signer in self._dialing:
                continue
            # only the signer's own addresses, a few: a record's text named any peer's,
            # 16 of them, dialled anew at each lookup (review round 78, R78-2)
            suffix = f"/p2p/{protocol.peer_id(signer)}"
            mine = [a for a in record.message.addresses if a.endswith(suffix)]
            # half of them direct, half through relays (a provider behind a NAT lists its
            # relayed addresses last: with 4 direct ones first it was never reached, round
            # 79, F4)
            half = MAX_DIALS_PER_RECORD // 2
            relayed = [a for a in mine if "/p2p-circuit/" in a]
            direct = [a for a in mine if "/p2p-circuit/" not in a]
            picked = direct[: MAX_DIALS_PER_RECORD - min(half, len(relayed))]
            picked += relayed[: MAX_DIALS_PER_RECORD - len(picked)]
            if picked:
                self._dialing.add(signer)
                node.spawn(self._connect, signer, tuple(picked))
        return found

    async def _connect(self, signer: PeerKey, addresses: tuple[str, ...]) -> None:
        """Dial a provider at the addresses its record gives. They are a peer's text: a
        task of the node's nursery, this must end in nothing worse than a log line."""
        try:
            await self._dial(addresses)
        finally:
            self._dialing.discard(signer)

    async def _dial(self, addresses: tuple[str, ...]) -> None:
        for address in addresses:
            try:
                await self._node.net.connect(address)
                return
            except NetworkError as exc:
                log.debug("connecting to %s failed: %s", address, exc)
            except Exception:  # the trust boundary: a record's address must not end the node
                log.warning("connecting to the address %r failed", address, exc_info=True)

    # --- a contributor's capability record -----------------------------------------------

    async def advertise(self) -> None:
        await self._node.net.advertise(self._advert(), renew=self._advert)

    async def keep_advertising(self) -> None:
        """Advertise again now and then: a first announcement can be lost while the DHT
        has only just met its peers, and the network itself repeats it only every few
        minutes. After 3 s, then 20 s, doubling up to 5 minutes (each round is DHT
        traffic for every peer)."""
        delay = READVERTISE_FIRST_S
        while True:
            await trio.sleep(delay)
            delay = max(READVERTISE_EVERY_S, min(READVERTISE_MAX_S, delay * 2))
            try:
                await self.advertise()
            except NetworkError as exc:
                log.info("advertising failed (will retry): %s", exc)

    def _advert(self) -> Signed[Advert]:
        node = self._node
        assert node.profile is not None and node.provider is not None
        profile = node.profile
        contributor = node.config.contributor
        self._advert_seq += 1
        now = node.now_ms()
        advert = Advert(
            node_id=node.me,
            seq=now * 16 + self._advert_seq % 16,
            addresses=node.net.addresses()[:16],
            capability_classes=node.provider.config.capability_classes[:32],
            runtimes=profile.runtimes,
            determinism_classes=profile.advertised_classes(),
            cpu_cores=min(profile.cpu_cores, 65535),
            memory_mb=profile.memory_mb,
            gpus=profile.gpus,
            sandbox_layers=profile.sandbox_layers[:16],
            bench_score=profile.bench_score,
            price_floor=contributor.price_floor,
            max_concurrency=contributor.max_concurrency,
            issued_ms=now,
            expires_ms=now + ADVERT_LIFETIME_MS,
        )
        return protocol.sign(advert, node.key, node.chain_id)
