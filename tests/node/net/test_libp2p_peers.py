"""Issue 18, the network items, over real py-libp2p on loopback: a peer's bad messages are
logged with its peer id; a DHT record the receiver refuses is refused before sending by
the putter and reported (logged, counted, counted against the peer) by the receiver; the
routing table holds only connected peers that serve the DHT."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
from libp2p.kad_dht.kad_dht import DHTMode

import protocol
from node.net import RecordError
from node.net._framing import request_frame
from node.net._libp2p_dht import KAD_PROTOCOL, record_key
from node.net.libp2p_host import Libp2pConfig, Libp2pNetwork, open_libp2p_network, wall_ms

from ...keys import key
from .helpers import CHAIN, advert

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
ECHO = "/aimx/test/echo/1"


async def echo(peer: bytes, data: bytes) -> bytes:
    return data


@asynccontextmanager
async def node(n: int) -> AsyncIterator[Libp2pNetwork]:
    config = Libp2pConfig(chain_id=CHAIN, listen=LOOPBACK)
    async with open_libp2p_network(key(n), config) as net:
        yield net


async def _send(src: Libp2pNetwork, dst: Libp2pNetwork, protocol_id: str, data: bytes) -> None:
    """Open a stream, write ``data``, close our side, read until the stream ends."""
    try:
        stream = await src._host.new_stream(dst._host.get_id(), [protocol_id])
        await stream.write(data)
        await stream.close_write()
    except Exception:  # reset at once: what a guard may do
        return
    with trio.move_on_after(3):
        while True:
            try:
                if not await stream.read(65536):
                    break
            except Exception:
                break


async def _until(done: Callable[[], bool], seconds: float = 10.0) -> None:
    with trio.fail_after(seconds):
        while not done():
            await trio.sleep(0.05)


def _lines(caplog: pytest.LogCaptureFixture, *words: str) -> list[str]:
    """What was logged (ours, and py-libp2p's through ours) with all of ``words``."""
    return [r.getMessage() for r in caplog.records if all(w in r.getMessage() for w in words)]


async def test_bad_messages_are_logged_with_the_peers_id(caplog: pytest.LogCaptureFixture) -> None:
    """A malformed and an oversized request frame, garbage on the DHT and a DHT record
    under another peer's key: each log line about them names the sender."""
    caplog.set_level(logging.DEBUG, logger="node.net")
    with trio.fail_after(60):
        async with node(81) as a, node(82) as b:
            a.set_handler(ECHO, echo, max_request_bytes=100)
            await b.connect(a.addresses()[0])
            sender = protocol.peer_id(b.local_peer)

            await _send(b, a, ECHO, b"\xff" * 8)  # a frame cut short
            assert _lines(caplog, "bad request frame", sender), caplog.text

            await _send(b, a, ECHO, request_frame(b"x" * 500))
            assert _lines(caplog, "oversized request", sender), caplog.text

            await _send(b, a, KAD_PROTOCOL, b"\x05\x01\x02\x03\x04\x05")
            assert _lines(caplog, "Failed to parse protobuf message", sender), caplog.text

            foreign = advert(key(83), ("c1",), now_ms=wall_ms())
            await b.dht.value_store._store_at_peer(
                a._host.get_id(), record_key(b.local_peer).encode(), foreign.raw
            )
            assert _lines(caplog, "refused a DHT record", sender), caplog.text
            # py-libp2p's own line about it names the peer too
            assert _lines(caplog, "Failed to store value", sender), caplog.text
            assert not _lines(caplog, "peer unknown")


@pytest.mark.parametrize("foreign_key", ["another peer's record key", "/pk/outside", "plain"])
async def test_a_refused_dht_record_is_reported_by_both_ends(foreign_key: str) -> None:
    """The putter refuses before sending (RecordError); a peer that sends one anyway gets
    the reset Kademlia prescribes, and the receiver counts it against that peer."""
    with trio.fail_after(60):
        async with node(84) as a, node(85) as b:
            blamed: list[tuple[bytes, str]] = []
            a.on_misbehaved.append(lambda peer, why: blamed.append((peer, why)))
            await b.connect(a.addresses()[0])
            await _until(lambda: b._host.get_id() in a.dht.routing_table.get_peer_ids())
            if foreign_key == "another peer's record key":
                foreign_key = record_key(a.local_peer)
            value = advert(key(85), ("c1",), now_ms=wall_ms()).raw  # b's own record

            with pytest.raises(RecordError, match="not storing a record"):
                await b._records.put_value(foreign_key, value)
            assert a.counters.records_rejected == 0

            # a peer without our check (an older node, another implementation)
            stored = await b.dht.value_store._store_at_peer(
                a._host.get_id(), foreign_key.encode(), value
            )
            assert stored is False
            assert a.dht.value_store.get(foreign_key.encode()) is None
            assert a.counters.records_rejected == 1
            assert [peer for peer, _ in blamed] == [b.local_peer]
            assert "DHT record" in blamed[0][1]

            # its own record under its own key is stored, and nobody is blamed for it
            await b._records.put_value(record_key(b.local_peer), value)
            assert a.dht.value_store.get(record_key(b.local_peer).encode()) is not None
            assert len(blamed) == 1


async def test_the_routing_table_holds_connected_dht_servers_only() -> None:
    """A client-mode peer (no /ipfs/kad/1.0.0) that connects and even queries the DHT is
    not in the routing table nor handed out by lookups; a server that leaves is dropped."""
    with trio.fail_after(90):
        async with node(86) as a:
            table = a.dht.routing_table
            async with node(87) as server, node(88) as client:
                await client.dht.switch_mode(DHTMode.CLIENT)
                await client.connect(a.addresses()[0])
                await server.connect(a.addresses()[0])
                await _until(lambda: server._host.get_id() in table.get_peer_ids())
                # the client asks a for peers: py-libp2p adds whoever opens a DHT stream
                target = hashlib.sha256(b"some key").digest()
                await client.dht.peer_routing.find_closest_peers_network(target)
                await trio.sleep(1.5)  # past identify and the first routing-table retries
                assert client._host.get_id() not in table.get_peer_ids()
                assert client._host.get_id() not in table.find_local_closest_peers(target)
                found = await server.dht.peer_routing.find_closest_peers_network(target)
                assert a._host.get_id() in found
                assert client._host.get_id() not in found
            # both left: a hands neither out
            await _until(lambda: table.size() == 0, 5)
