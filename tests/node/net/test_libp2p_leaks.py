"""Streams over libp2p leave nothing behind once closed (py-libp2p's yamux kept an event for
every stream fully closed while a read waited on it: :mod:`node.net._libp2p_leaks`)."""

from __future__ import annotations

from typing import Any

import trio
from libp2p.custom_types import TProtocol

from node.net.libp2p_host import Libp2pConfig, Libp2pNetwork, open_libp2p_network

from ...keys import key
from .helpers import CHAIN

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
RAW = TProtocol("/aimx/test/raw/1")
STREAMS = 60


def muxers(net: Libp2pNetwork) -> list[Any]:
    swarm = net._host.get_network()
    return [c.muxed_conn for conns in swarm.get_connections_map().values() for c in conns]


def stale_events(net: Libp2pNetwork) -> int:
    """Events a connection keeps for streams it no longer has."""
    return sum(len(set(m.stream_events) - set(m.streams)) for m in muxers(net))


async def read_to_end(stream: Any) -> bytes:
    out = b""
    while True:
        try:
            chunk = await stream.read(65536)
        except Exception:  # EOF or reset: py-libp2p raises for both
            return out
        if not chunk:
            return out
        out += chunk


async def answer_late(stream: Any) -> None:
    # Reads the request, answers, and closes a little later: the asker has closed its
    # side and waits on its read (an empty buffer) when the close arrives.
    request = await stream.read(65536)
    await stream.write(request)
    await trio.sleep(0.01)
    await stream.close()


async def test_streams_closed_while_a_read_waits_leave_no_event_behind() -> None:
    config = Libp2pConfig(chain_id=CHAIN, listen=LOOPBACK)
    with trio.fail_after(60):
        async with open_libp2p_network(key(1), config) as a:
            boot = Libp2pConfig(chain_id=CHAIN, listen=LOOPBACK, bootstrap=a.addresses()[:1])
            async with open_libp2p_network(key(2), boot) as b:
                a._host.set_stream_handler(RAW, answer_late)
                await b.connect(a.addresses()[0])
                for i in range(STREAMS):
                    stream = await b._host.new_stream(a._host.get_id(), [RAW])
                    await stream.write(b"%d" % i)
                    await stream.close()
                    assert await read_to_end(stream) == b"%d" % i
                await trio.sleep(0.2)  # the last closes reach both sides
                assert muxers(a) and muxers(b)
                stale = (stale_events(a), stale_events(b))
                assert stale == (0, 0), stale
