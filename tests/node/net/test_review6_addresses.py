"""A peer's address that reads in binary but not as text (review round 6, R6-1).

The attack: ``/dns4/p2p-circuit/tcp/4001`` (a DNS name that happens to be
``p2p-circuit``), sent in binary in identify or in a DHT answer, is stored by py-libp2p in
the peerstore. Its text holds ``/p2p-circuit``, so the dialler took it for a relayed
address and parsed that text again, outside any handler. multiaddr's ``StringParseError``
(no :class:`NetworkError`) then left ``net.request``, and ended the node from the market
task that sent a Bid or an Award to that peer. Now addresses are told apart by their
protocols, a relayed one is parsed inside its attempt, a connection's failure of any kind
is a :class:`PeerUnreachable`, and a task of the node logs what it raises.
"""

from __future__ import annotations

import types
from typing import Any

import pytest
import trio
from multiaddr import Multiaddr
from multiaddr import protocols as maddr_protocols

from node.daemon._metrics import NodeMetrics
from node.daemon._node import Node
from node.net import NetworkError, PeerUnreachable
from node.net._interface import NetworkCounters
from node.net._libp2p_config import Libp2pConfig
from node.net._libp2p_dialer import Dialer
from node.net._libp2p_streams import RequestStreams

from ...keys import key, pub

CHAIN = "aimx-test-review6"
TARGET = pub(key("target"))


def _varint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([low])
        out += bytes([low | 0x80])


def _code(name: str) -> int:
    return int(maddr_protocols.protocol_with_name(name).code)


def circuit_named_dns() -> Multiaddr:
    """``/dns4/p2p-circuit/tcp/4001``, built from its binary form as a peer sends it."""
    name = b"p2p-circuit"
    raw = _varint(_code("dns4")) + _varint(len(name)) + name + _varint(_code("tcp"))
    return Multiaddr(raw + (4001).to_bytes(2, "big"))


class _Peerstore:
    def __init__(self, addrs: list[Multiaddr]) -> None:
        self._addrs = addrs

    def addrs(self, pid: object) -> list[Multiaddr]:
        return self._addrs


class _OfflineHost:
    """A host whose peerstore holds ``addrs`` and whose every dial fails."""

    def __init__(self, addrs: list[Multiaddr]) -> None:
        self._peerstore = _Peerstore(addrs)

    def get_peerstore(self) -> _Peerstore:
        return self._peerstore

    async def connect(self, info: object) -> None:
        raise OSError("connection refused")


async def _no_relay(address: object) -> None:
    raise OSError("no relay answers")


def dialer(addrs: list[Multiaddr]) -> Dialer:
    return Dialer(
        _OfflineHost(addrs),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]  # the peerstore knows addresses: no DHT lookup
        _no_relay,
        Libp2pConfig(chain_id=CHAIN, relays=()),
        local_peer=pub(key("victim")),
        connected=set(),
        is_banned=lambda p: False,
        check_open=lambda: None,
        peers_changed=trio.Event,
    )


def test_the_address_reads_in_binary_and_not_as_text() -> None:
    address = circuit_named_dns()
    assert str(address) == "/dns4/p2p-circuit/tcp/4001"
    with pytest.raises(Exception) as caught:
        Multiaddr(str(address))
    assert not isinstance(caught.value, NetworkError)


@pytest.mark.parametrize(
    "addrs",
    [
        [circuit_named_dns()],
        [Multiaddr("/ip4/127.0.0.1/tcp/1"), circuit_named_dns()],
    ],
    ids=["alone", "beside an offline address"],
)
async def test_dialling_a_peer_known_by_such_an_address_fails_as_a_network_error(
    addrs: list[Multiaddr],
) -> None:
    with pytest.raises(PeerUnreachable):
        await dialer(addrs).ensure_connected(TARGET)


async def test_a_request_whose_connection_fails_with_a_foreign_error_is_peer_unreachable() -> None:
    async def connect(peer: bytes) -> None:
        raise ValueError("a library's own error")

    streams = RequestStreams(
        _OfflineHost([]),  # type: ignore[arg-type]
        Libp2pConfig(chain_id=CHAIN),
        NetworkCounters(),
        {},
        connect,
    )
    with pytest.raises(PeerUnreachable, match="a library's own error"):
        await streams.request(TARGET, "/aimx/test/1", b"x", 1.0, 1 << 10)


async def test_a_task_of_the_node_that_raises_is_logged_and_the_node_goes_on() -> None:
    metrics = NodeMetrics()
    node: Any = types.SimpleNamespace(metrics=metrics)
    finished = trio.Event()

    async def fails() -> None:
        raise ValueError("StringParseError-like: not a NetworkError")

    async def goes_on() -> None:
        await trio.sleep(0.01)
        finished.set()

    async with trio.open_nursery() as nursery:  # stands for the node's
        nursery.start_soon(Node._guarded, node, fails)
        nursery.start_soon(Node._guarded, node, goes_on)
    assert finished.is_set()
    assert metrics.task_errors._value.get() == 1
