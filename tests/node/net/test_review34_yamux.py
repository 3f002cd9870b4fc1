"""Round 34, Y1: py-libp2p's yamux logged data a peer sent past the receive window it was
given, and kept it: on a stream nobody reads (an identify stream we answered and
half-closed) a stranger's 300 MiB in 2 s stayed in our memory while it was connected. A
stream's buffer now takes no more than its window; data past it is dropped. I1: a peer's
protocol list was kept as its identify-push sent it, up to 1 MiB of names."""

from __future__ import annotations

import struct

import trio
from libp2p.peer.peerdata import PeerData

from node.net import _libp2p_tuning
from node.net._libp2p_transport import peer_id_of
from node.net._limits import (
    INBOUND_NEGOTIATION_TIMEOUT_S,
    MAX_INBOUND_STREAMS,
    MAX_NEGOTIATING_PER_HOST,
)

from .test_libp2p_guards import ECHO, echo, node

HEADER = ">BBHII"  # version, type, flags, stream id, length
DATA, SYN = 0, 1


def _frame(flags: int, stream_id: int, body: bytes) -> bytes:
    return struct.pack(HEADER, 0, DATA, flags, stream_id, len(body)) + body


def _multistream(protocol: str) -> bytes:
    line = protocol.encode() + b"\n"
    return bytes([len(line)]) + line


async def test_data_past_a_streams_window_is_not_kept() -> None:
    with trio.fail_after(60):
        async with node(91) as victim, node(92) as stranger:
            key = await stranger.connect(victim.addresses()[0])
            await trio.sleep(0.5)
            muxer = stranger._host.get_network().connections[peer_id_of(key)][0].muxed_conn
            stream_id = 100_001
            hello = _multistream("/multistream/1.0.0") + _multistream("/ipfs/id/1.0.0")
            await muxer._write_frame(_frame(SYN, stream_id, hello))
            await trio.sleep(0.5)  # identify answers and half-closes; nobody reads on
            chunk = b"\0" * (1 << 20)
            for _ in range(8):
                await muxer._write_frame(_frame(0, stream_id, chunk))
            await trio.sleep(1)
            (conn,) = victim._host.get_network().connections[stranger._host.get_id()]
            held = sum(len(b) for b in conn.muxed_conn.stream_buffers.values())
            assert held <= 1 << 20  # the tree before held all 8 MiB


def test_a_peers_protocol_list_is_deduplicated_and_bounded() -> None:
    _libp2p_tuning.install()
    data = PeerData()
    names = [chr(0x61 + i % 26) + chr(0x61 + i // 26 % 26) for i in range(250_000)]
    data.add_protocols(["/ipfs/id/1.0.0", "x" * 200, *names])
    data.add_protocols(["/ipfs/id/1.0.0"])
    kept = data.get_protocols()
    assert kept[0] == "/ipfs/id/1.0.0" and "x" * 200 not in kept
    assert len(kept) == len(set(kept)) == _libp2p_tuning.MAX_PEER_PROTOCOLS
    data.set_protocols(names)
    assert len(data.get_protocols()) == _libp2p_tuning.MAX_PEER_PROTOCOLS


async def test_streams_a_peer_opens_and_never_uses_are_capped_and_timed_out() -> None:
    """Y2: every SYN got a stream and a task that waited 10 s for a protocol; 50,000 SYNs
    (600 KB) took a node from 121 to 315 MB. Past 256 open at once a SYN is reset, and a
    stream naming no protocol is reset after 5 s."""
    with trio.fail_after(60):
        async with node(93) as victim, node(94) as stranger:
            victim.set_handler(ECHO, echo)
            key = await stranger.connect(victim.addresses()[0])
            await trio.sleep(0.5)
            muxer = stranger._host.get_network().connections[peer_id_of(key)][0].muxed_conn
            for i in range(1_000):
                await muxer._write_frame(_frame(SYN, 200_001 + 2 * i, b""))
            await trio.sleep(1.5)
            (conn,) = victim._host.get_network().connections[stranger._host.get_id()]
            assert len(conn.muxed_conn.streams) <= MAX_INBOUND_STREAMS + 16  # before: 1,000
            await trio.sleep(INBOUND_NEGOTIATION_TIMEOUT_S + 1)
            assert len(conn.muxed_conn.streams) <= 16  # before: held 10 s
            # the connection still serves its peer
            assert await stranger.request(key, ECHO, b"hi", timeout=5) == b"hi"


async def test_streams_naming_their_protocol_are_bounded_per_host() -> None:
    """Round 37, N3: with py-libp2p's resource manager off, nothing bounded streams naming
    their protocol across connections: forty keys' 10,200 held 81 MB. Now 256 a host."""
    with trio.fail_after(60):
        async with node(101) as victim, node(102) as one, node(103) as two:
            for stranger in (one, two):
                key = await stranger.connect(victim.addresses()[0])
                await trio.sleep(0.3)
                conns = stranger._host.get_network().connections[peer_id_of(key)]
                for i in range(200):
                    await conns[0].muxed_conn._write_frame(_frame(SYN, 300_001 + 2 * i, b""))
                await trio.sleep(1)
            held = sum(
                len(conn.muxed_conn.streams)
                for peer in (one, two)
                for conn in victim._host.get_network().connections[peer._host.get_id()]
            )
            assert held <= MAX_NEGOTIATING_PER_HOST + 16  # the tree before: 400
