"""Round 46, Y1: py-libp2p's yamux kept a closed stream's unread data for 60-90 s, a reset
one's included, whoever would read it: one stranger filling streams within their windows
and resetting them made a node hold 476 MiB in 21 s. A reset stream now keeps nothing, and
a connection's fully closed streams keep at most ``MAX_CLOSED_UNREAD_BYTES`` unread (and
the newest stream's). Round 47, Y2: a stream our handler was done with but its peer never
closed kept its unread data until the connection closed (4,000 identify-push streams held
953 MiB); it is now ended as its handler returns."""

from __future__ import annotations

import contextlib
import struct

import trio
from libp2p.custom_types import TProtocol

from node.net._libp2p_inbound import FINISH_GRACE_S
from node.net._libp2p_transport import peer_id_of
from node.net._limits import MAX_CLOSED_UNREAD_BYTES

from .test_libp2p_guards import ECHO, echo, node

HEADER = ">BBHII"  # version, type, flags, stream id, length
DATA, SYN, FIN, RST = 0, 1, 4, 8
CHUNK = 200_000  # within a stream's 256 KiB window
STREAMS = 40  # 8 MB in all


def _frame(flags: int, stream_id: int, body: bytes) -> bytes:
    return struct.pack(HEADER, 0, DATA, flags, stream_id, len(body)) + body


def _multistream(protocol: str) -> bytes:
    line = protocol.encode() + b"\n"
    return bytes([len(line)]) + line


async def _fill_and_end(flag: int | None) -> tuple[int, int]:
    """A stranger opens identify streams, fills each within its window and ends it with
    ``flag`` (``None``: leaves it open); returns the bytes the victim's connection then
    holds unread, and the streams it keeps."""
    async with node(141) as victim, node(142) as stranger:
        victim.set_handler(ECHO, echo)
        key = await stranger.connect(victim.addresses()[0])
        await trio.sleep(0.5)
        muxer = stranger._host.get_network().connections[peer_id_of(key)][0].muxed_conn
        hello = _multistream("/multistream/1.0.0") + _multistream("/ipfs/id/1.0.0")
        for i in range(STREAMS):
            stream_id = 500_001 + 2 * i
            await muxer._write_frame(_frame(SYN, stream_id, hello))
            await trio.sleep(0.05)  # identify answers and half-closes; nobody reads on
            await muxer._write_frame(_frame(0, stream_id, b"\0" * CHUNK))
            if flag is not None:
                await muxer._write_frame(_frame(flag, stream_id, b""))
        await trio.sleep(1 + FINISH_GRACE_S)
        (conn,) = victim._host.get_network().connections[stranger._host.get_id()]
        held = sum(len(b) for b in conn.muxed_conn.stream_buffers.values())
        streams = len(conn.muxed_conn.streams)
        # the connection still serves its peer
        assert await stranger.request(key, ECHO, b"hi", timeout=5) == b"hi"
        return held, streams


async def test_a_reset_stream_keeps_none_of_its_unread_data() -> None:
    with trio.fail_after(60):
        assert (await _fill_and_end(RST))[0] == 0  # the tree before held 8 MB for 60-90 s


async def test_closed_streams_keep_a_bounded_amount_unread() -> None:
    with trio.fail_after(60):
        held, _ = await _fill_and_end(FIN)
        assert held <= MAX_CLOSED_UNREAD_BYTES + CHUNK  # the tree before: 8 MB


async def test_a_stream_its_handler_is_done_with_is_ended_when_its_peer_leaves_it_open() -> None:
    with trio.fail_after(60):
        held, streams = await _fill_and_end(None)
        # the tree before (round 46's mend): 8 MB in 40 streams kept until the connection
        # closed
        assert held == 0 and streams <= 4


async def test_an_honest_peer_reading_its_answers_late_loses_none() -> None:
    """Round 48, I1: with our reset right after our close, each answer was a fully closed
    stream at the peer, and a peer reading 40 of them late lost the oldest 8 to its own
    bound of 32. The reset now waits for the peer's close, a second at most."""
    with trio.fail_after(60):
        async with node(143) as victim, node(144) as client:
            await client.connect(victim.addresses()[0])
            await trio.sleep(0.5)
            answered: list[bool] = []

            async def ask() -> None:
                stream = await client._host.new_stream(
                    peer_id_of(victim.local_peer), [TProtocol("/ipfs/id/1.0.0")]
                )
                await trio.sleep(0.5)  # read late
                data = b""
                with contextlib.suppress(Exception):  # the answer's end, or the reset after it
                    while chunk := await stream.read():
                        data += chunk
                answered.append(len(data) > 0)

            async with trio.open_nursery() as nursery:
                for _ in range(40):
                    nursery.start_soon(ask)
            assert answered == [True] * 40  # with the reset at once: 8 of 40 lost
