"""Circuit relay v2 (specs/network.md, "Relay and reachability").

Every node can accept relayed connections (the stop protocol) and dial through a relay; a
coordinator also relays for others (the hop protocol). A node told it is ``PRIVATE``
takes a reservation at each of its relays, keeps it refreshed, and advertises the relayed
address ``<relay>/p2p-circuit/p2p/<us>``. A relay's reservations last while their peers
stay connected and are shared by host (:mod:`._relay_reservations`, round 29, F4).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Set
from typing import Any, cast

import trio
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as CircuitPeer
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.protocol import STOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg
from libp2p.tools.anyio_service import background_trio_service

import protocol

from ._errors import NetworkError, NetworkTimeout, PeerUnreachable, RemoteError
from ._interface import PeerKey, Reachability
from ._libp2p_config import Libp2pConfig
from ._libp2p_inbound import layers
from ._libp2p_logging import Tally
from ._libp2p_outbound import ResettingStreams, reset_when_cancelled
from ._libp2p_transport import info_of, key_of
from ._relay_reservations import HopProtocol

log = logging.getLogger(__name__)
_TALLY = Tally(log)


class RelayRefused(NetworkError):
    """A peer asked for what only a relay of ours may ask."""


#: A failed reservation is tried again after this long (seconds), or when the relay
#: reconnects.
RETRY_S = 10.0
#: A relay's reservation is taken to last at most this long (seconds), whatever it says:
#: it is renewed at 3/4 of that. A relay saying 2**64 - 1 ended the node, its expiry
#: out of ``time.ctime``'s range (round 49, R1).
MAX_RESERVATION_S = 2 * 3600
#: Relayed connections we take through one relay at once (its own cap per reservation
#: is 64 too).
MAX_RELAYED_PER_RELAY = 64

StreamHandler = Callable[[Any], Awaitable[None]]
Dial = Callable[[PeerInfo, bool], Awaitable[None]]
"""Connect to a peer: its info, and whether the address is a relay (p2p-circuit) one."""


class Relay:
    """The relay protocol on ``host`` of the node ``local_peer``, its stream handlers
    wrapped by ``guard``. Relays are reached with ``dial`` unless in ``connected``;
    ``changed()`` is an event set when a peer connects or disconnects."""

    def __init__(
        self,
        host: Any,
        config: Libp2pConfig,
        local_peer: PeerKey,
        connected: Set[PeerKey],
        dial: Dial,
        guard: Callable[[StreamHandler], StreamHandler],
        changed: Callable[[], trio.Event],
    ) -> None:
        self._host = host
        self._changed = changed
        self._config = config
        self._peer = local_peer
        self._connected = connected
        self._dial = dial
        limits = RelayLimits(
            duration=3600,
            data=1 << 30,
            max_circuit_conns=64,
            max_reservations=128,
        )
        self.protocol = HopProtocol(host, limits, config.relay_service)
        roles = RelayRole.STOP | RelayRole.CLIENT
        if config.relay_service:
            roles |= RelayRole.HOP
        self.transport = CircuitV2Transport(host, self.protocol, RelayConfig(roles=roles))
        # Its RESERVE and CONNECT streams are reset once closed, and when a dial fails or is
        # cut, in the upgrade too (rounds 50 and 51, O2 and N1: _libp2p_outbound.py).
        self.transport.host = cast(Any, ResettingStreams(host))
        for name in ("dial", "dial_peer_info", "_dial_via_circuit_addr"):
            setattr(self.transport, name, reset_when_cancelled(getattr(self.transport, name)))
        # the protocol's service sets its own STOP handler as it starts: this one it sets
        self.protocol._handle_stop_stream = self._serve_stop  # type: ignore[method-assign]
        host.set_stream_handler(STOP_PROTOCOL_ID, guard(self._serve_stop))
        if config.relay_service:
            host.set_stream_handler(HOP_PROTOCOL_ID, guard(self.protocol._handle_hop_stream))
        #: Hole punching (DCUtR) on a private node: a peer reached through a relay is
        #: offered a direct connection (specs/nat.md).
        self.dcutr: DCUtRProtocol | None = None
        if config.reachability is Reachability.PRIVATE:
            self.dcutr = DCUtRProtocol(host)
        #: Our relayed addresses, one per reservation taken.
        self.addresses: list[str] = []
        #: The relays holding a reservation of ours now, by relay address: its expiry.
        self.reserved: dict[str, float] = {}
        #: Reservations taken and renewed so far.
        self.taken = 0

    async def _serve_stop(self, stream: Any) -> None:
        """A relayed connection (``STOP``) is taken only from a relay holding a reservation
        of ours, :data:`MAX_RELAYED_PER_RELAY` at most through each: py-libp2p took one from
        any peer, for any key, and one TCP connection brought 255 connections of fresh keys
        that no inbound bound counted (round 36, F2)."""
        relay = stream.muxed_conn.peer_id
        if key_of(relay) not in self.relays():
            # raised: the guard resets the stream and counts it against the peer (one
            # connection sent 3,344 in 10 s: round 37, N2)
            raise RelayRefused("a relayed connection (STOP) from a peer that is no relay of ours")
        if self.relayed_through(relay) >= MAX_RELAYED_PER_RELAY:
            _TALLY.note(f"STOPs refused ({MAX_RELAYED_PER_RELAY} relayed through one relay)", relay)
            await stream.reset()
            return
        await type(self.protocol)._handle_stop_stream(self.protocol, stream)

    def relayed_through(self, relay: Any) -> int:
        """Our open connections relayed through ``relay`` (a py-libp2p ID). (Their
        addresses name us, not the relay: the relay is the peer of the stream each runs
        on; counted by address, the bound never held: round 38, M2.)"""
        try:
            conns = [c for cs in self._host.get_network().connections.values() for c in cs]
        except Exception:
            return 0
        return sum(_relay_of(c) == relay for c in conns)

    def peer_left(self, peer: Any) -> None:
        """``peer`` (a py-libp2p ID) has no connection to us left: a reservation of its at
        us ends (it could no longer be told of a circuit: round 29, F4)."""
        self.protocol.reservations.forget(peer)

    def relays(self) -> tuple[PeerKey, ...]:
        """The relays at which a reservation is held now (not expired)."""
        now = time.time()
        out: list[PeerKey] = []
        for address, expire in self.reserved.items():
            key = key_of(info_of(address)[0].peer_id)
            if expire > now and key is not None:
                out.append(key)
        return tuple(out)

    async def run_dcutr(self) -> None:
        """Serve and drive hole punching (if on) until cancelled."""
        if self.dcutr is None:
            return
        async with background_trio_service(self.dcutr):
            await trio.sleep_forever()

    def relayed_only(self, peer: Any) -> bool:
        """Whether every open connection to ``peer`` (a py-libp2p ID) is relayed."""
        try:
            conns = self._host.get_network().get_connections(peer)
            addrs = [str(a) for c in conns for a in c.get_transport_addresses()]
        except Exception:
            return False
        return bool(addrs) and all("/p2p-circuit" in a for a in addrs)

    async def reserve_all(self, nursery: trio.Nursery) -> None:
        """Reserve at each relay (the bootstrap peers unless ``relays`` is set) and keep
        each reservation refreshed in ``nursery``. A relay that refuses is logged."""
        relays = self._config.relays
        if relays is None:
            relays = self._config.bootstrap
        for address in relays:
            try:
                expire = await self._reserve(address)
            except NetworkError as exc:
                log.warning("relay reservation at %s failed: %s", address, exc)
                expire = 0.0  # tried again on reconnection, or in RETRY_S
            else:
                self._reserved(address, expire)
            nursery.start_soon(self._keep_reservation, address, expire)

    def _reserved(self, address: str, expire: float) -> None:
        own = protocol.peer_id(self._peer)
        relayed = f"{address}/p2p-circuit/p2p/{own}"
        if relayed not in self.addresses:
            self.addresses.append(relayed)
        self.reserved[address] = expire
        self.taken += 1
        log.info("relay reservation at %s for %.0f s", address, expire - time.time())

    async def _reserve(self, address: str) -> float:
        """Take a reservation at the relay; returns its expiry (Unix seconds)."""
        info, _ = info_of(address)
        with trio.move_on_after(self._config.dial_timeout * 2):
            if key_of(info.peer_id) not in self._connected:
                await self._dial(info, False)
            try:
                # through the transport's view: closing the stream also resets it, dropping
                # what the relay writes past its answer
                stream = await self.transport.host.new_stream(info.peer_id, [HOP_PROTOCOL_ID])
            except Exception as exc:
                raise PeerUnreachable(f"relay {address} does not relay: {exc}") from None
            try:
                request = HopMessage(
                    type=HopMessage.RESERVE,
                    peer=CircuitPeer(id=self._host.get_id().to_bytes()),
                )
                await write_delimited_msg(stream, request)
                response = await read_delimited_msg(stream, HopMessage)
            except Exception as exc:
                raise PeerUnreachable(f"relay {address} reservation failed: {exc}") from None
            finally:
                with contextlib.suppress(Exception):
                    await stream.close()
            if response.type != HopMessage.STATUS or (
                response.HasField("status") and response.status != 100  # OK
            ):
                raise RemoteError(f"relay {address} refused the reservation")
            now = time.time()
            said = float(response.reservation.expire) if response.HasField("reservation") else 0
            return min(said, now + MAX_RESERVATION_S) if said else now + 3600
        raise NetworkTimeout(f"relay {address} did not answer the reservation")

    async def _keep_reservation(self, address: str, expire: float) -> None:
        """Renew the reservation at 3/4 of its lifetime, and at once whenever the relay
        comes back after a disconnection (a restarted relay has forgotten it); a failed
        try is repeated after ``RETRY_S`` or at the next reconnection."""
        key = key_of(info_of(address)[0].peer_id)
        while True:
            wait = max(RETRY_S, (expire - time.time()) * 0.75) if expire else RETRY_S
            with trio.move_on_after(wait):
                await self._reconnected(key)
            try:
                expire = await self._reserve(address)
            except NetworkError as exc:
                log.warning("relay reservation at %s failed: %s", address, exc)
                expire = 0.0
                continue
            self._reserved(address, expire)

    async def _reconnected(self, key: PeerKey | None) -> None:
        """Until the peer ``key`` disconnects and connects again."""
        while key in self._connected:
            await self._changed().wait()
        while key not in self._connected:
            await self._changed().wait()


def _relay_of(conn: Any) -> Any:
    """The peer (a py-libp2p ID) whose stream a relayed connection runs on, else None."""
    for obj in layers(getattr(conn, "muxed_conn", None)):
        if hasattr(obj, "muxed_stream"):  # a stream of another connection: the relay's
            return getattr(getattr(obj, "muxed_conn", None), "peer_id", None)
    return None
