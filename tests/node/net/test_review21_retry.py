"""Review round 21, of round 20's retry answer: a grace for answers being written let one
key hold its slots for 65 bytes a second by reading its answers slowly (R21-1); the idle
timeout cut a handler short and the requester, seeing no answer byte, ran the request
again (R21-2); two pooled streams the server had ended used up the requester's one fresh
try (R21-3)."""

from __future__ import annotations

import collections

import trio

from node.net import PeerBusy
from node.net._fair_slots import MAX_RUNNING_PER_PEER
from node.net._framing import FrameReader, request_frame
from node.net._libp2p_transport import peer_id_of
from node.net.libp2p_host import Libp2pNetwork

from .helpers import honest_load, node

ECHO = "/aimx/test/echo/1"


async def echo(peer: bytes, data: bytes) -> bytes:
    return data


async def _slow_reader(attacker: Libp2pNetwork, victim: Libp2pNetwork) -> None:
    """One stream of pipelined tiny requests whose answers are let through one at a time
    (10 bytes of window every 0.15 s) once 66 large answers spent the stream's window: the
    server is always in a handler or writing an answer, never between requests."""
    fill, tiny = request_frame(b"f" * 4000) * 66, request_frame(b"x" * 8) * 3000
    while True:
        try:
            s = await attacker._host.new_stream(peer_id_of(victim.local_peer), [ECHO])
            await s.write(fill + tiny)
            await trio.sleep(1.0)
            await s.muxed_stream.send_window_update(66 * 4002 - 256 * 1024)
            while not (s.muxed_stream.closed or s.muxed_stream.reset_received):
                await trio.sleep(0.15)
                await s.muxed_stream.send_window_update(10)
        except Exception:
            await trio.sleep(0.05)


async def test_a_key_reading_its_answers_slowly_does_not_hold_its_slots() -> None:
    with trio.fail_after(90):
        async with (
            node(401, max_inbound_streams=8) as victim,
            node(402) as attacker,
            node(403) as honest,
        ):
            victim.set_handler(ECHO, echo, max_request_bytes=4096)
            await attacker.connect(victim.addresses()[0])
            await honest.connect(victim.addresses()[0])
            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(_slow_reader, attacker, victim)
                await trio.sleep(4)
                answers = [
                    await honest.request(victim.local_peer, ECHO, bytes([i]) * 1024, timeout=10)
                    for i in range(4)
                ]
                nursery.cancel_scope.cancel()
            assert answers == [bytes([i]) * 1024 for i in range(4)]


async def test_a_request_arriving_as_the_stream_idles_out_runs_once() -> None:
    runs: collections.Counter[bytes] = collections.Counter()

    async def work(peer: bytes, data: bytes) -> bytes:
        runs[data] += 1
        await trio.sleep(0.4)
        return data

    with trio.fail_after(60):
        async with node(411, stream_idle_timeout=1.0) as server, node(412) as client:
            server.set_handler(ECHO, work)
            await client.connect(server.addresses()[0])
            for i in range(4):
                assert await client.request(server.local_peer, ECHO, b"first-%d" % i) == (
                    b"first-%d" % i
                )
                await trio.sleep(0.75)  # the next comes just before the idle timeout
                second = b"second-%d" % i
                assert await client.request(server.local_peer, ECHO, second) == second
                await trio.sleep(1.5)  # the stream idles out
            assert set(runs.values()) == {1}


async def test_pooled_streams_the_server_ended_are_not_what_a_request_fails_on() -> None:
    with trio.fail_after(60):
        async with node(421, stream_idle_timeout=1.0) as server, node(422) as client:
            server.set_handler(ECHO, echo)
            await client.connect(server.addresses()[0])
            for _ in range(3):
                async with trio.open_nursery() as nursery:  # four pooled streams
                    for i in range(4):
                        nursery.start_soon(client.request, server.local_peer, ECHO, b"%d" % i)
                await trio.sleep(1.5)  # the server ends them all, idle
                assert await client.request(server.local_peer, ECHO, b"after") == b"after"


async def test_answers_of_slow_handlers_reach_honest_peers_over_a_full_table() -> None:
    """Round 22, R22-2: with no grace for an answer being written, a handler taking longer
    than the stall time left its slot takeable as it answered: 22 of 89 slots taken from
    24 honest peers on 16 were answers to requests that had run (`AnswerLost`). Answers to
    requests that were not pipelined are kept for a short grace while written."""
    with trio.fail_after(90):
        load = await honest_load(6, peers=12, slots=8, handler_s=0.4, first_key=441)
    assert load.evicted > 0
    assert load.ok > 50
    assert [type(e).__name__ for e in load.failures if not isinstance(e, PeerBusy)] == []
    assert [r for r, n in load.runs.items() if n > 1] == []


async def _slow_requests(attacker: Libp2pNetwork, victim: Libp2pNetwork) -> None:
    """One stream keeping 4 slow requests queued (pipelined), reading each answer."""
    while True:
        try:
            s = await attacker._host.new_stream(peer_id_of(victim.local_peer), [ECHO])
            reader = FrameReader(s.read)
            await s.write(request_frame(b"slow") * 4)
            while True:
                await reader.read_response(64)
                await s.write(request_frame(b"slow"))
        except Exception:
            await trio.sleep(0.05)


async def test_slow_handlers_of_one_key_do_not_hold_every_slot() -> None:
    """Round 23, R23-1: a slot whose handler runs is never taken, so one key whose requests
    took 5 s held a whole table (honest: 2 of 18 in). A key runs at most
    MAX_RUNNING_PER_PEER handlers at once; its other streams wait, takeable."""

    async def work(peer: bytes, data: bytes) -> bytes:
        if data == b"slow":
            await trio.sleep(5)
        return data

    with trio.fail_after(90):
        async with (
            node(461, max_inbound_streams=MAX_RUNNING_PER_PEER * 2) as victim,
            node(462) as attacker,
            node(463) as honest,
        ):
            victim.set_handler(ECHO, work)
            await attacker.connect(victim.addresses()[0])
            await honest.connect(victim.addresses()[0])
            async with trio.open_nursery() as nursery:
                for _ in range(MAX_RUNNING_PER_PEER * 2):
                    nursery.start_soon(_slow_requests, attacker, victim)
                await trio.sleep(2)
                slots = victim._streams._slots
                assert slots.held_by(attacker.local_peer) == MAX_RUNNING_PER_PEER * 2
                t0 = trio.current_time()
                for i in range(4):
                    data = b"honest-%d" % i
                    assert await honest.request(victim.local_peer, ECHO, data) == data
                assert trio.current_time() - t0 < 4  # none waited for a slow handler
                nursery.cancel_scope.cancel()
