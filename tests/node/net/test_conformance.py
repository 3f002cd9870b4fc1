"""One suite, every implementation of :class:`node.net.Network` (see conftest.networks)."""

from __future__ import annotations

import pytest
import trio

import protocol
from node.net import (
    MAX_FRAME_BYTES,
    MessageTooLarge,
    Network,
    NetworkClosed,
    NetworkError,
    NetworkTimeout,
    PeerEvent,
    ProtocolNotSupported,
    PubsubMessage,
    RecordError,
    RemoteError,
    RequestRejected,
)

from ...keys import key
from .conftest import OpenNetworks, wall_ms
from .helpers import advert

LIMIT = 10  # seconds: every test is bounded


async def echo(peer: bytes, data: bytes) -> bytes:
    return peer + data


async def test_request_reaches_handler_with_sender_identity(networks: OpenNetworks) -> None:
    with trio.fail_after(LIMIT):
        async with networks(2) as (a, b):
            a.set_handler("/aimx/test/echo/1", echo)
            for i in range(3):
                reply = await b.request(a.local_peer, "/aimx/test/echo/1", b"hi %d" % i)
                assert reply == b.local_peer + b"hi %d" % i
            assert a.counters.requests_served == 3


async def test_handler_errors_reach_requester_and_host_survives(networks: OpenNetworks) -> None:
    async def reject(peer: bytes, data: bytes) -> bytes:
        raise RequestRejected("price below floor")

    async def crash(peer: bytes, data: bytes) -> bytes:
        raise ZeroDivisionError

    with trio.fail_after(LIMIT):
        async with networks(2) as (a, b):
            a.set_handler("/aimx/test/reject/1", reject)
            a.set_handler("/aimx/test/crash/1", crash)
            a.set_handler("/aimx/test/echo/1", echo)
            with pytest.raises(RemoteError, match="price below floor"):
                await b.request(a.local_peer, "/aimx/test/reject/1", b"x")
            with pytest.raises(RemoteError) as info:
                await b.request(a.local_peer, "/aimx/test/crash/1", b"x")
            assert not isinstance(info.value, ProtocolNotSupported)
            assert a.counters.handler_errors == 1
            assert await b.request(a.local_peer, "/aimx/test/echo/1", b"ok") == b.local_peer + b"ok"


async def test_unknown_and_removed_protocols(networks: OpenNetworks) -> None:
    with trio.fail_after(LIMIT):
        async with networks(2) as (a, b):
            with pytest.raises(ProtocolNotSupported):
                await b.request(a.local_peer, "/aimx/test/none/1", b"x")
            a.set_handler("/aimx/test/echo/1", echo)
            await b.request(a.local_peer, "/aimx/test/echo/1", b"x")
            a.remove_handler("/aimx/test/echo/1")
            with pytest.raises(ProtocolNotSupported):
                await b.request(a.local_peer, "/aimx/test/echo/1", b"x")


async def test_size_limits(networks: OpenNetworks) -> None:
    async def big(peer: bytes, data: bytes) -> bytes:
        return b"y" * 5000

    with trio.fail_after(LIMIT):
        async with networks(2) as (a, b):
            a.set_handler("/aimx/test/small/1", echo, max_request_bytes=1000)
            a.set_handler("/aimx/test/big/1", big)
            with pytest.raises(MessageTooLarge):
                await b.request(a.local_peer, "/aimx/test/small/1", b"x" * 1001)
            assert a.counters.requests_rejected == 1
            with pytest.raises(MessageTooLarge):
                await b.request(a.local_peer, "/aimx/test/big/1", b"", max_response_bytes=4999)
            assert len(await b.request(a.local_peer, "/aimx/test/big/1", b"")) == 5000
            with pytest.raises(MessageTooLarge):
                await b.request(a.local_peer, "/aimx/test/small/1", b"x" * (MAX_FRAME_BYTES + 1))
            reply = await b.request(a.local_peer, "/aimx/test/small/1", b"x" * 900)
            assert len(reply) == 932


async def test_slow_handler_times_out(networks: OpenNetworks) -> None:
    release = trio.Event()

    async def stall(peer: bytes, data: bytes) -> bytes:
        await release.wait()
        return b"late"

    with trio.fail_after(LIMIT):
        async with networks(2) as (a, b):
            a.set_handler("/aimx/test/stall/1", stall)
            a.set_handler("/aimx/test/echo/1", echo)
            with pytest.raises(NetworkTimeout):
                await b.request(a.local_peer, "/aimx/test/stall/1", b"x", timeout=0.3)
            release.set()
            assert await b.request(a.local_peer, "/aimx/test/echo/1", b"") == b.local_peer


async def test_invalid_names_are_refused(networks: OpenNetworks) -> None:
    with trio.fail_after(LIMIT):
        async with networks(1) as (a,):
            for bad in ("no-slash", "/", "/with space", "/" + "x" * 200):
                with pytest.raises(NetworkError, match="invalid protocol id"):
                    a.set_handler(bad, echo)
            with pytest.raises(NetworkError, match="invalid topic"):
                a.subscribe("bad topic")


async def _collect(inbox: object, count: int, into: list[PubsubMessage], done: trio.Event) -> None:
    async for message in inbox:  # type: ignore[attr-defined]
        into.append(message)
        if len(into) >= count:
            done.set()
            return


async def test_pubsub_reaches_other_subscribers_not_publisher(networks: OpenNetworks) -> None:
    topic = "aimx/aimx-test/jobs/onnx.cpu.m1"
    with trio.fail_after(LIMIT):
        async with networks(3) as nets:
            inboxes = [net.subscribe(topic) for net in nets]
            got: list[list[PubsubMessage]] = [[], [], []]
            # GossipSub may drop what is published before its mesh forms (pubsub is best
            # effort), so the publisher repeats a numbered message until both others have
            # one; bounded.
            async with trio.open_nursery() as nursery:
                dones = [trio.Event(), trio.Event()]
                nursery.start_soon(_collect, inboxes[1], 1, got[1], dones[0])
                nursery.start_soon(_collect, inboxes[2], 1, got[2], dones[1])
                for i in range(100):
                    await nets[0].publish(topic, b"job %d" % i)
                    with trio.move_on_after(0.1):
                        await dones[0].wait()
                        await dones[1].wait()
                    if all(d.is_set() for d in dones):
                        break
            for received in got[1:]:
                assert received[0].sender == nets[0].local_peer
                assert received[0].topic == topic
                assert received[0].data.startswith(b"job ")
            # a message sent by another node reaches the first one; its own never does
            await nets[1].publish(topic, b"from one")
            with trio.fail_after(5):
                async for message in inboxes[0]:
                    assert message.sender == nets[1].local_peer
                    assert message.data == b"from one"
                    break
            for inbox in inboxes:
                inbox.close()


async def test_advertise_and_find_providers(networks: OpenNetworks) -> None:
    with trio.fail_after(LIMIT):
        async with networks(3) as (a, b, c):
            now = wall_ms()
            await a.advertise(advert(key(1), ("onnx.cpu.m1", "onnx.cpu.m2"), now_ms=now))
            await b.advertise(advert(key(2), ("onnx.cpu.m1",), now_ms=now))
            found = await c.find_providers("onnx.cpu.m1")
            assert {r.signer for r in found} == {a.local_peer, b.local_peer}
            found = await c.find_providers("onnx.cpu.m2")
            assert [r.signer for r in found] == [a.local_peer]
            assert await c.find_providers("onnx.cuda.m8") == []
            # a newer record replaces the older one
            await b.advertise(advert(key(2), ("onnx.cpu.m1",), now_ms=now, seq=2))
            found = await c.find_providers("onnx.cpu.m1")
            assert {r.message.seq for r in found if r.signer == b.local_peer} == {2}
            assert len(found) == 2


async def test_advertise_refuses_records_not_ours(networks: OpenNetworks) -> None:
    with trio.fail_after(LIMIT):
        async with networks(1) as (a,):
            now = wall_ms()
            with pytest.raises(RecordError):
                await a.advertise(advert(key(9), ("onnx.cpu.m1",), now_ms=now))
            with pytest.raises(RecordError):
                await a.advertise(advert(key(1), ("onnx.cpu.m1",), now_ms=now, chain_id="other"))
            with pytest.raises(RecordError):
                await a.advertise(advert(key(1), ("onnx.cpu.m1",), now_ms=now - 10, ttl_ms=5))
            with pytest.raises(RecordError):
                await a.advertise(advert(key(1), (), now_ms=now))


async def test_connect_events_and_addresses(networks: OpenNetworks) -> None:
    with trio.fail_after(LIMIT):
        async with networks(1) as (a,):
            addr = a.addresses()[0]
            assert addr.endswith("/p2p/" + protocol.peer_id(a.local_peer))
            events = a.peer_events()
            async with networks(1) as (b,):
                assert await b.connect(addr) == a.local_peer
                assert a.local_peer in b.connected_peers()
                async for event in events:
                    assert event == PeerEvent(b.local_peer, True)
                    break
                peer_b = b.local_peer
            async for event in events:
                if event == PeerEvent(peer_b, False):
                    break
            assert peer_b not in a.connected_peers()
            events.close()


async def test_closed_network_refuses_use(networks: OpenNetworks) -> None:
    with trio.fail_after(LIMIT):
        async with networks(1) as (a,):
            net: Network = a
        with pytest.raises(NetworkClosed):
            await net.publish("aimx/t", b"x")
        with pytest.raises(NetworkClosed):
            net.subscribe("aimx/t")
