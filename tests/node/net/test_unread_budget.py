"""Rounds 47, 48 and 50 (Y3, L1, O1): what a node's streams hold unread was bounded per
stream (its window) and per connection, not across the node, so strangers' connections,
each filling streams whose handler had not read yet, could make a node hold a few GiB. A
node now keeps all its connections' unread bytes within ``MAX_UNREAD_BYTES``, resetting
the streams holding the most."""

from __future__ import annotations

import struct

import pytest
import trio
from libp2p.custom_types import TProtocol

from node.net import _libp2p_unread
from node.net._libp2p_transport import peer_id_of
from node.net.libp2p_host import Libp2pNetwork

from .test_libp2p_guards import ECHO, echo, node

HEADER = ">BBHII"  # version, type, flags, stream id, length
DATA, SYN = 0, 1
HOLD = "/aimx/test/hold/1"
CHUNK = 200_000  # within a stream's 256 KiB window
STREAMS = 12  # a stranger's streams: 2.4 MB each stranger
BUDGET = 3 << 20


def _frame(flags: int, stream_id: int, body: bytes) -> bytes:
    return struct.pack(HEADER, 0, DATA, flags, stream_id, len(body)) + body


def _multistream(protocol: str) -> bytes:
    line = protocol.encode() + b"\n"
    return bytes([len(line)]) + line


async def _hold(stream: object) -> None:
    """A handler that has not read yet (pubsub or kad behind on a slow node, a request
    stream idling)."""
    await trio.sleep(30)


def _held(victim: Libp2pNetwork) -> int:
    return sum(
        len(buffer)
        for conns in victim._host.get_network().connections.values()
        for conn in conns
        for buffer in conn.muxed_conn.stream_buffers.values()
    )


async def _fill(strangers: list[Libp2pNetwork], victim: Libp2pNetwork) -> None:
    """Each stranger opens ``STREAMS`` streams on the holding protocol and fills each within
    its window."""
    hello = _multistream("/multistream/1.0.0") + _multistream(HOLD)
    for stranger in strangers:
        key = await stranger.connect(victim.addresses()[0])
        await trio.sleep(0.3)
        muxer = stranger._host.get_network().connections[peer_id_of(key)][0].muxed_conn
        for i in range(STREAMS):
            stream_id = 700_001 + 2 * i
            await muxer._write_frame(_frame(SYN, stream_id, hello))
            await trio.sleep(0.02)  # negotiated, then held by its handler
            await muxer._write_frame(_frame(0, stream_id, b"\0" * CHUNK))
    await trio.sleep(0.5)


@pytest.fixture
def small_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_libp2p_unread, "MAX_UNREAD_BYTES", BUDGET)
    monkeypatch.setattr(_libp2p_unread, "UNREAD_TARGET_BYTES", BUDGET * 3 // 4)
    monkeypatch.setattr(_libp2p_unread, "UNREAD_CHECK_BYTES", 256 << 10)


async def test_strangers_filling_streams_hold_no_more_than_the_budget(small_budget: None) -> None:
    with trio.fail_after(60):
        async with (
            node(151) as victim,
            node(152) as a,
            node(153) as b,
            node(154) as c,
            node(155) as honest,
        ):
            victim._host.set_stream_handler(TProtocol(HOLD), _hold)
            victim.set_handler(ECHO, echo)
            await _fill([a, b, c], victim)
            # the tree before: 7.2 MB held until the handlers read or the connections close
            assert _held(victim) <= BUDGET + (256 << 10) + CHUNK
            budget = _libp2p_unread.budget_of(victim._host.get_network())
            assert budget is not None and budget.streams_shed >= STREAMS
            # the node serves on, the strangers' connections included
            key = await honest.connect(victim.addresses()[0])
            assert await honest.request(key, ECHO, b"hi", timeout=5) == b"hi"
            victim_key = await a.connect(victim.addresses()[0])
            assert await a.request(victim_key, ECHO, b"still", timeout=5) == b"still"


async def test_unread_bytes_under_the_budget_are_kept(small_budget: None) -> None:
    with trio.fail_after(60):
        async with node(156) as victim, node(157) as a:
            victim._host.set_stream_handler(TProtocol(HOLD), _hold)
            await _fill([a], victim)  # 2.4 MB, under the 3 MiB budget
            assert _held(victim) >= STREAMS * CHUNK
            budget = _libp2p_unread.budget_of(victim._host.get_network())
            assert budget is not None and budget.streams_shed == 0
