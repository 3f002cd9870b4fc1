"""The libp2p host and how peers are named on it.

The host speaks TCP, with Noise as its only security transport (py-libp2p's default also
accepts plaintext, which lets a peer claim any peer id) and Yamux as its only muxer, and
keeps at most one connection per peer (which also ends the swarm's 250 ms happy-eyeballs
wait as soon as the first dial succeeds). Its identity is the node's ledger key.

A peer is our :data:`PeerKey` (its Ed25519 public key) outside and a libp2p ``ID`` inside;
addresses are multiaddresses ending in ``/p2p/<peer id>``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, cast

import multiaddr
import nacl.signing
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

import protocol

from ._errors import NetworkError
from ._interface import PeerKey
from ._libp2p_config import Libp2pConfig
from ._limits import (
    INBOUND_NEGOTIATION_TIMEOUT_S,
    INBOUND_UPGRADE_TIMEOUT_S,
    MAX_CONNECTIONS,
    MAX_INBOUND_CONNECTIONS,
)

MAX_CONNECTIONS_PER_PEER = 1


@functools.lru_cache(maxsize=4096)
def peer_id_of(key: PeerKey) -> ID:
    """The libp2p ID of a key (20 us to build: every request asks; remembered)."""
    return ID.from_base58(protocol.peer_id(key))


def key_of(peer: ID) -> PeerKey | None:
    """Our key for a libp2p peer id; None for peers whose key is not Ed25519."""
    try:
        return protocol.public_key_of(peer.to_base58())
    except (protocol.ProtocolError, ValueError):
        return None


def parse_multiaddr(text: str) -> multiaddr.Multiaddr:
    try:
        return multiaddr.Multiaddr(text)
    except Exception as exc:
        raise NetworkError(f"cannot parse multiaddress {text!r}: {exc}") from None


def info_of(address: str) -> tuple[PeerInfo, bool]:
    """PeerInfo of ``.../p2p/<id>`` and whether it is a relay (p2p-circuit) address."""
    maddr = parse_multiaddr(address)
    text = str(maddr)
    if "/p2p/" not in text:
        raise NetworkError(f"address {address!r} must end in /p2p/<peer id>")
    head, _, peer_text = text.rpartition("/p2p/")
    try:
        peer = ID.from_base58(peer_text)
    except Exception:
        raise NetworkError(f"bad peer id in {address!r}") from None
    if key_of(peer) is None:
        raise NetworkError(f"{address!r} is not an Ed25519 peer id")
    circuit = "/p2p-circuit" in text
    # (the head may not parse alone: "/unix/p2p/<id>" is a unix path, "/unix" is nothing)
    addr = maddr if circuit else parse_multiaddr(head) if head else None
    return PeerInfo(peer, [addr] if addr is not None else []), circuit


def is_address_of(address: str, peer: PeerKey) -> bool:
    """Whether ``address`` is one we can dial (``info_of`` takes it) and names ``peer``:
    a capability record's addresses must all be its signer's own."""
    try:
        info, _ = info_of(address)
    except NetworkError:
        return False
    return key_of(info.peer_id) == peer


def listen_addrs(config: Libp2pConfig) -> list[multiaddr.Multiaddr]:
    addrs = [parse_multiaddr(a) for a in config.listen]
    for addr in addrs:
        if "tcp" not in [p.name for p in addr.protocols()]:
            raise NetworkError(f"only TCP listen addresses are supported, not {addr}")
    return addrs


def build_host(key: nacl.signing.SigningKey, config: Libp2pConfig, listen: Sequence[Any]) -> Any:
    key_pair = create_new_key_pair(bytes(key))  # the ledger key's seed: same identity
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): cast(Any, Yamux)},
        listen_addrs=list(listen),
        enable_mDNS=config.enable_mdns,
        # one connection per peer (ends the 250 ms dial wait early); no auto-dialing of
        # every known peer to keep 50 connections: bootstrap and lookups connect as needed
        connection_config=ConnectionConfig(
            max_connections=MAX_CONNECTIONS,
            high_watermark=MAX_CONNECTIONS,  # py-libp2p prunes connections above it
            max_connections_per_peer=MAX_CONNECTIONS_PER_PEER,
            dial_timeout=config.dial_timeout,
            min_connections=0,
            low_watermark=0,
            # a stream the peer opened names its protocol within this, or is reset
            inbound_stream_protocol_negotiation_timeout=INBOUND_NEGOTIATION_TIMEOUT_S,
            inbound_upgrade_timeout=INBOUND_UPGRADE_TIMEOUT_S,
        ),
    )
    # py-libp2p's resource manager is off: a handshake or stream cancelled mid-way kept
    # its count for good (five hosts' idle sockets cut a node off in and out: round 36,
    # F1), and its 10,000 streams in all were one more total for strangers to take. The
    # node's own bounds are the limits (specs/network.md, "Limits").
    swarm = cast(Any, host.get_network())
    swarm.set_resource_manager(None)
    # inbound connections are a share of all: the rest are the node's own dials
    swarm._inbound_limiter.total_tokens = MAX_INBOUND_CONNECTIONS
    # py-libp2p's auto-connector dials peers of the peer store until the midpoint of the
    # watermarks (150 of them with the defaults): bootstrap and lookups connect as needed
    swarm.auto_connector.maybe_connect = _no_auto_dials
    return host


async def _no_auto_dials() -> None:
    return None
